"""A small async Kubernetes API client (httpx): kubeconfig or in-cluster credentials.

Only what the project needs (custom resources and events), so that neither the API nor the
operator carries the official client's generated models in memory. Errors become:
ApiUnavailable (unreachable, 429 throttled, 5xx: retry later) or ApiError (any other
status, with the server's reason and message).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json as jsonlib
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from sessions.domain.model import StoreUnavailable

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ApiUnavailable(StoreUnavailable):
    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__("kubernetes", detail, retry_after)


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}")


@dataclass(frozen=True)
class KubeConfig:
    server: str
    namespace: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    token_file: Path | None = None

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file is not None:  # bound service-account tokens rotate: re-read
            token = self.token_file.read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}


def _materialize(data: str | None, path: str | None, suffix: str) -> str | None:
    """A file path for certificate data given inline (base64) or as a file."""
    if path:
        return path
    if not data:
        return None
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - must outlive this function
        prefix="botsession-", suffix=suffix, delete=False
    )
    with handle:
        handle.write(base64.b64decode(data))
    os.chmod(handle.name, 0o600)
    return handle.name


def load_kubeconfig(path: Path, context_name: str | None = None) -> KubeConfig:
    config = yaml.safe_load(path.read_text())
    context_name = context_name or config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user: dict[str, Any] = next(
        (u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {}
    )
    if "exec" in user or "auth-provider" in user:
        raise ValueError(
            "kubeconfig exec/auth-provider plugins are not supported; use a token "
            "or client certificate (or run in-cluster)"
        )
    ssl_context: ssl.SSLContext | bool
    if cluster.get("insecure-skip-tls-verify"):
        ssl_context = False
    else:
        ca_data = cluster.get("certificate-authority-data")
        ca_file = cluster.get("certificate-authority")
        if ca_data:
            ssl_context = ssl.create_default_context(cadata=base64.b64decode(ca_data).decode())
        else:
            ssl_context = ssl.create_default_context(cafile=ca_file)
        cert = _materialize(
            user.get("client-certificate-data"), user.get("client-certificate"), ".crt"
        )
        key = _materialize(user.get("client-key-data"), user.get("client-key"), ".key")
        if cert and key:
            ssl_context.load_cert_chain(cert, key)
    token_file = user.get("tokenFile")
    return KubeConfig(
        server=cluster["server"].rstrip("/"),
        namespace=context.get("namespace", "default"),
        ssl_context=ssl_context,
        token=user.get("token"),
        token_file=Path(token_file) if token_file else None,
    )


def load_in_cluster() -> KubeConfig:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:
        host = f"[{host}]"
    return KubeConfig(
        server=f"https://{host}:{port}",
        namespace=(SERVICE_ACCOUNT / "namespace").read_text().strip(),
        ssl_context=ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt")),
        token_file=SERVICE_ACCOUNT / "token",
    )


def load_config(kubeconfig: str | None = None) -> KubeConfig:
    """$KUBECONFIG (or the given path, or ~/.kube/config), else in-cluster credentials."""
    candidate = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = Path(candidate).expanduser() if candidate else Path("~/.kube/config").expanduser()
    if path.exists():
        return load_kubeconfig(path)
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        return load_in_cluster()
    raise ValueError("no kubeconfig found (set KUBECONFIG) and not running in a cluster")


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """A Retry-After header (RFC 9110): delay-seconds or an HTTP date; `default` when it is
    missing or unreadable."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class KubeClient:
    def __init__(
        self, config: KubeConfig, timeout: float = 10.0, max_connections: int = 50
    ) -> None:
        self.config = config
        self.http = httpx.AsyncClient(
            base_url=config.server,
            verify=config.ssl_context,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
        )
        # Callers queue here, not in httpcore's pool: its bookkeeping is linear in the number
        # of waiting requests, so 1,000 concurrent callers (the operator during a burst of
        # creations) cost 5-10x the CPU per request (docs/benchmarks.md, "Operator at scale").
        # No deadline for the wait: every request in flight has the timeout, so the queue
        # moves; a deadline would fail a burst's handlers only for being many.
        self._slots = asyncio.Semaphore(max_connections)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {**self.config.headers(), "Accept": "application/json"}
        if json is not None:
            headers["Content-Type"] = content_type
        await self._slots.acquire()
        try:
            response = await self.http.request(
                method, path, json=json, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"{method} {path}: {exc.__class__.__name__}") from exc
        finally:
            self._slots.release()
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise ApiUnavailable(f"{method} {path}: HTTP {response.status_code}", retry_after)
        if response.status_code >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {}
            raise ApiError(
                response.status_code,
                status.get("reason", ""),
                status.get("message", response.text[:500]),
            )
        body: dict[str, Any] = response.json()
        return body

    async def watch(
        self, path: str, params: dict[str, str], timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request ({"type", "object"}), until the server ends it.
        It holds one connection for up to `timeout` seconds, outside the request slots."""
        headers = {**self.config.headers(), "Accept": "application/json"}
        limits = httpx.Timeout(10.0, read=timeout + 30.0)
        try:
            async with self.http.stream(
                "GET",
                path,
                params={**params, "watch": "true", "timeoutSeconds": str(int(timeout))},
                headers=headers,
                timeout=limits,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ApiError(response.status_code, "", response.text[:500])
                async for line in response.aiter_lines():
                    if line:
                        yield jsonlib.loads(line)
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"watch {path}: {exc.__class__.__name__}") from exc

    async def close(self) -> None:
        await self.http.aclose()
