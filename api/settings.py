"""Settings of the REST API process only (env prefix BOTSESSION_API_).

Everything the API shares with the operator (Redis, the database, the namespace, the TTLs)
stays in sessions.domain.settings (prefix BOTSESSION_).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.limits import Rate
from sessions.domain.settings import SettingsError

PREFIX = "BOTSESSION_API_"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    tokens_file: Path | None = Field(
        default=None,
        description="YAML or JSON file of API tokens (docs/api.md); re-read when it changes",
    )
    tokens: SecretStr | None = Field(
        default=None, description="API tokens as JSON, same format as the file (e.g. from a Secret)"
    )
    tokens_reload_interval: float = Field(
        default=5.0, ge=0, description="seconds between checks of the token file for changes"
    )
    # in a pod the API must listen on every interface; every route but health needs a token
    host: str = Field(default="0.0.0.0", description="address to listen on")  # noqa: S104
    port: int = Field(default=8000, ge=1, le=65535)
    kubeconfig: str | None = Field(
        default=None,
        description="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
    )
    migrate: bool = Field(
        default=False,
        description="migrate the database at start-up (local use; in a cluster the operator "
        "or a Helm hook migrates, and the API is not ready until the schema is current)",
    )
    ready_timeout: float = Field(
        default=3.0, gt=0, le=60, description="seconds per readiness check"
    )
    history_limit: int = Field(
        default=20, ge=0, le=100, description="history rows of a session read"
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="larger request bodies are refused with 413 before they are read",
    )
    rate_limit: float = Field(
        default=500,
        ge=0,
        description="requests per second per token, for tokens without their own `rateLimit` "
        "(admin tokens: none); 0 turns the default off",
    )
    rate_burst: int | None = Field(
        default=None, ge=1, description="the default limit's burst (default: 2 x rate_limit)"
    )
    write_concurrency: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="reports and clears worked on at once; the others wait their turn "
        "(api.admission)",
    )
    write_queue_limit: int = Field(
        default=2000, ge=0, description="past this many waiting, a write is answered 503 at once"
    )
    write_max_wait: float = Field(
        default=30.0, gt=0, le=300, description="seconds a write may wait for its turn (then 503)"
    )
    log_polls: bool = Field(
        default=False,
        description="log every answered session-status read and heartbeat too (by default "
        "they are counted in the metrics, and logged only when they fail or take a second)",
    )
    log_level: str = Field(default="INFO")

    def default_rate(self) -> Rate | None:
        if self.rate_limit <= 0:
            return None
        return Rate(self.rate_limit, self.rate_burst or max(1, math.ceil(2 * self.rate_limit)))


def load_api_settings(**overrides: Any) -> ApiSettings:
    """Read the environment (plus overrides); raise SettingsError naming every bad variable
    (never echoing the tokens)."""
    try:
        return ApiSettings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            shown = "" if name.endswith("TOKENS") else f" (got {error.get('input')!r})"
            problems.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None
