"""All configuration, from environment variables prefixed BOTSESSION_ (or a .env file).

Durations accept seconds (`3600`) or a number with a unit (`90s`, `30m`, `24h`, `7d`).
A bad value stops start-up with a SettingsError naming the variable.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sessions.domain.webhooks import WebhookConfigError, WebhookEndpoint, parse_endpoints

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. 90s, 30m, 24h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PREFIX = "BOTSESSION_"


class SettingsError(Exception):
    """Configuration is invalid; the message names each bad variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    # expiry and cleanup
    session_ttl: Duration = Field(timedelta(hours=24), description="expiry after lastSeen")
    cleanup_interval: Duration = Field(timedelta(hours=1), description="time between sweeps")
    connect_timeout: Duration = Field(
        timedelta(minutes=2), description="connecting longer than this becomes failed"
    )
    heartbeat_timeout: Duration = Field(
        timedelta(minutes=3),
        description="an active session that has heartbeated and then stays silent this long "
        "becomes inactive (HeartbeatLost); sessions that never heartbeat are not subject to "
        "it; a BotSession's spec.heartbeatTimeoutSeconds overrides it; 0 turns it off",
    )
    inactive_retention: Duration = Field(
        timedelta(days=7), description="inactive BotSessions are deleted after"
    )
    sweep_batch_size: int = Field(500, ge=1, le=10_000)
    last_seen_drift: Duration = Field(
        timedelta(minutes=1),
        description="a heartbeat's lastSeen is copied to the BotSession once it is this old",
    )
    last_seen_writes_per_second: float = Field(
        20.0,
        gt=0,
        le=10_000,
        description="the most API-server writes per second the copies of lastSeen may make, "
        "whatever the number of sessions (the longest waiting first)",
    )

    events_per_second: float = Field(
        50.0,
        gt=0,
        le=10_000,
        description="the most transition Events a second the operator posts; past it they are "
        "dropped and counted (every transition stays in the history)",
    )

    events_retention: Duration = Field(
        timedelta(hours=24),
        description="how long the session events (GET /v1/whatsapp/session-events, the "
        "webhooks) are kept in Redis; a client resuming from an older event is told so",
    )

    webhooks_file: Path | None = Field(
        None,
        description="a JSON list of webhook endpoints (sessions.domain.webhooks, "
        'docs/api.md "Webhooks"); read at start',
    )
    webhooks: SecretStr | None = Field(
        None, description="webhook endpoints as JSON, same format as the file (e.g. a Secret)"
    )
    webhook_retry_window: Duration = Field(
        timedelta(hours=1),
        description="a webhook delivery is retried (backoff with jitter, up to 5 min apart) "
        "until its event is this old, then given up and counted",
    )
    webhook_timeout: Duration = Field(
        timedelta(seconds=10), description="how long one webhook attempt waits for its answer"
    )

    resync_interval: Duration = Field(
        timedelta(seconds=30),
        description="how often the operator checks that Redis has not lost its data (one GET; "
        "everything restored from the BotSessions when it has)",
    )
    audit_interval: Duration = Field(
        timedelta(minutes=10),
        description="how often the operator compares every BotSession with Redis and the "
        "database and heals what differs (what the check above cannot see: a failover to a "
        "lagging replica, a database restored from a backup, a row cleared on its own)",
    )
    orphan_scan_interval: Duration = Field(
        timedelta(minutes=10), description="how often session:* keys no BotSession owns are counted"
    )
    metrics_port: int = Field(9090, ge=0, le=65535, description="operator metrics; 0 turns off")
    worker_limit: int = Field(
        200, ge=1, le=10_000, description="BotSessions the operator handles at once"
    )
    catch_up_after: Duration = Field(
        timedelta(seconds=3),
        description="a BotSession whose last change kopf has not synced this long after it "
        "(kopf's queue is behind: a restart with many objects, a burst) is synced by the "
        "operator's catch-up instead of waiting its turn",
    )
    first_phase_grace: Duration = Field(
        timedelta(seconds=10),
        description="how long the operator leaves a BotSession the API created without a "
        "phase before it writes the first phase itself",
    )
    tombstone_ttl: Duration = Field(
        timedelta(hours=1),
        description="how long Redis remembers a removal so older writers cannot undo it",
    )

    # stores
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://, rediss:// or redis+sentinel://h1:p,h2:p/name/db",
    )
    redis_key_prefix: str = Field(
        "botsession:",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="prefix of the project's own Redis keys (not the contract's session:* "
        "keys): give each installation sharing one Redis its own",
    )
    redis_retries: int = Field(5, ge=0, le=50)
    redis_timeout: Duration = Field(timedelta(seconds=5))
    redis_budget: Duration = Field(
        timedelta(milliseconds=500),
        description="the most one Redis operation may take; past it the caller answers from "
        "elsewhere and Redis is skipped until a background probe gets an answer",
    )
    database_url: str = Field("sqlite+aiosqlite:///botsession.sqlite3")
    database_budget: Duration = Field(
        timedelta(seconds=1), description="the same for one database operation"
    )
    store_probe_interval: Duration = Field(
        timedelta(seconds=1), description="how often a store that stopped answering is probed"
    )

    fingerprint_key: SecretStr | None = Field(
        None,
        description="the installation's secret for the user fingerprints in logs and the clear "
        "audit (sessions.domain.privacy); unset: random per process",
    )

    # kubernetes
    namespace: str | None = Field(None, description="namespace of BotSessions; default: own")
    clear_wait: Duration = Field(
        timedelta(seconds=10), description="how long a clear waits for a BotSession to go"
    )

    @field_validator(
        "session_ttl",
        "cleanup_interval",
        "connect_timeout",
        "inactive_retention",
        "last_seen_drift",
        "redis_timeout",
        "clear_wait",
        "resync_interval",
        "audit_interval",
        "orphan_scan_interval",
        "first_phase_grace",
        "catch_up_after",
        "tombstone_ttl",
        "events_retention",
        "webhook_retry_window",
        "webhook_timeout",
        "redis_budget",
        "database_budget",
        "store_probe_interval",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be greater than zero")
        return value

    @field_validator("heartbeat_timeout")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative (0 turns it off)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if scheme not in {"sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg"}:
            raise ValueError(
                "must be sqlite+aiosqlite://, postgresql+asyncpg:// or postgresql+psycopg://"
            )
        return value


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (plus overrides); raise SettingsError naming every bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            secret = name.endswith(("_URL", "_KEY", "_WEBHOOKS"))
            shown = "" if secret else f" (got {error.get('input')!r})"
            problems.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def configured_webhooks(settings: Settings) -> list[WebhookEndpoint]:
    """The webhook endpoints of the file and of the variable (WebhookConfigError names the
    bad entry, never its secret)."""
    endpoints: list[WebhookEndpoint] = []
    if settings.webhooks_file is not None:
        try:
            text = settings.webhooks_file.read_text()
        except OSError as exc:
            raise WebhookConfigError(f"{PREFIX}WEBHOOKS_FILE: {exc.strerror}") from None
        endpoints += parse_endpoints(text, str(settings.webhooks_file))
    if settings.webhooks is not None:
        endpoints += parse_endpoints(settings.webhooks.get_secret_value(), f"{PREFIX}WEBHOOKS")
    names = [endpoint.name for endpoint in endpoints]
    if len(set(names)) != len(names):
        raise WebhookConfigError("two webhook endpoints have the same name")
    return endpoints
