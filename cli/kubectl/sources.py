"""Where the plugin reads from: the BotSession objects (through the project's own client,
sessions.adapters.kubernetes.client), kopf's peering object and Events, the REST API
(urllib) and Redis (the project's RedisKeys)."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sessions.adapters.kubernetes.botsessions import BOT_LABEL, bot_label, resource_name
from sessions.adapters.kubernetes.client import (
    ApiError,
    ApiUnavailable,
    Connection,
    CustomObjects,
    KubeClient,
    load_config,
    load_kubeconfig,
)
from sessions.adapters.kubernetes.crd import FINALIZER, GROUP, PLURAL, VERSION
from sessions.adapters.redis.store import RedisKeys, connect
from sessions.domain.model import SessionKey, parse_time

CHUNK = 500  # objects per LIST page, as kubectl's --chunk-size
RETRIES = 10  # 429 and 5xx answers retried, after their Retry-After (as kubectl does)
T = TypeVar("T")


class PluginError(Exception):
    """A failure to report on stderr (exit code 1): no traceback."""


# --- the cluster ---------------------------------------------------------------------------


def connection(kubeconfig: str | None, context: str | None) -> Connection:
    """As kubectl: --kubeconfig, else $KUBECONFIG or ~/.kube/config (in a pod: its service
    account); --context picks a context of it."""
    try:
        if context or kubeconfig:
            path = Path(kubeconfig).expanduser() if kubeconfig else None
            return load_kubeconfig(path, context)
        return load_config(None)
    except (ValueError, OSError) as exc:  # the client names what is wrong
        raise PluginError(str(exc)) from exc


def namespace_of(flag: str | None, connection: Connection) -> str:
    """-n, else $BOTSESSION_NAMESPACE (the operator's), else the context's (or "default")."""
    return flag or os.environ.get("BOTSESSION_NAMESPACE") or connection.namespace


@dataclass(frozen=True)
class Session:
    """What the plugin shows of one BotSession. Never its phone number or display name."""

    name: str
    bot_id: str
    user_id: str
    phase: str | None
    reason: str | None
    revision: int
    synced_revision: int
    generation: int
    observed_generation: int
    created: datetime
    last_seen: datetime | None
    expires_at: datetime | None
    deleted_at: datetime | None
    finalizers: tuple[str, ...]
    transitions: tuple[dict[str, Any], ...]
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, body: dict[str, Any]) -> Session:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}

        def when(value: Any) -> datetime | None:
            return parse_time(value) if isinstance(value, str) and value else None

        return cls(
            name=meta.get("name", ""),
            bot_id=str(spec.get("botId", "")),
            user_id=str(spec.get("userId", "")),
            phase=status.get("phase") or None,
            reason=status.get("reason") or None,
            revision=int(status.get("revision") or 0),
            synced_revision=int(status.get("syncedRevision") or 0),
            generation=int(meta.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            created=parse_time(meta["creationTimestamp"]),
            last_seen=when(status.get("lastSeen")),
            expires_at=when(status.get("expiresAt")),
            deleted_at=when(meta.get("deletionTimestamp")),
            finalizers=tuple(meta.get("finalizers") or ()),
            transitions=tuple(status.get("recentTransitions") or ()),
            conditions={
                c["type"]: c for c in status.get("conditions") or [] if isinstance(c, dict)
            },
        )

    @property
    def in_step(self) -> bool:
        """The operator has copied this revision and generation to Redis and the database
        (the test the operator itself makes: controller.handlers.in_step)."""
        return bool(
            self.phase
            and self.synced_revision == self.revision
            and self.observed_generation == self.generation
        )

    @property
    def changed_at(self) -> datetime:
        """When its status last moved: its newest transition, else its creation."""
        times = [parse_time(t["at"]) for t in self.transitions if t.get("at")]
        return max([self.created, *times])

    @property
    def connecting_since(self) -> datetime | None:
        if self.phase != "connecting":
            return None
        for item in reversed(self.transitions):
            if item.get("to") == "connecting" and item.get("at"):
                return parse_time(item["at"])
        return self.created

    @property
    def finalizer_held(self) -> bool:
        return FINALIZER in self.finalizers


class Cluster:
    """The BotSessions of one namespace, read with the project's client."""

    def __init__(self, client: KubeClient, namespace: str, chunk: int = CHUNK) -> None:
        self.client = client
        self.namespace = namespace
        self.chunk = chunk
        self.objects = CustomObjects(client, GROUP, VERSION, namespace, PLURAL)

    async def close(self) -> None:
        await self.client.close()

    async def retried(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call`, again after a 429 or 5xx (a fresh CRD's cache answers 429 for a moment)
        as kubectl does: up to RETRIES times, after Retry-After (at most 2 s)."""
        for attempt in range(RETRIES + 1):
            try:
                return await call()
            except ApiUnavailable as exc:
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(min(max(exc.retry_after or 1.0, 0.1), 2.0))
        raise AssertionError("unreachable")

    async def bodies(self, label_selector: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every BotSession, one LIST page (limit/continue) at a time."""
        query: dict[str, Any] = {"limit": self.chunk}
        if label_selector:
            query["label_selector"] = label_selector
        while True:
            page = await self.retried(lambda: self.objects.list(**query))
            for item in page.get("items") or []:
                yield item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query["_continue"] = token

    async def sessions(self, label_selector: str | None = None) -> list[Session]:
        return [Session.of(body) async for body in self.bodies(label_selector)]

    async def of_bot(self, bot_id: str) -> list[Session]:
        """A bot's BotSessions: by their bot label; those made by hand and not labelled yet
        (no operator running) by a LIST of them all."""
        found = [
            s for s in await self.sessions(f"{BOT_LABEL}={bot_label(bot_id)}") if s.bot_id == bot_id
        ]
        if not found:
            found = [s for s in await self.sessions() if s.bot_id == bot_id]
        return sorted(found, key=lambda s: s.user_id)

    async def one(self, bot_id: str, user_id: str) -> Session | None:
        """By its derived name (one GET), else among the bot's."""
        try:
            name = resource_name(SessionKey(bot_id, user_id))
            found = Session.of(await self.retried(lambda: self.objects.get(name)))
            if found.bot_id == bot_id and found.user_id == user_id:
                return found
        except ApiError as exc:
            if exc.status != 404:
                raise
        return next((s for s in await self.of_bot(bot_id) if s.user_id == user_id), None)

    async def delete(self, name: str) -> bool:
        """False when it was already gone."""
        try:
            await self.retried(
                lambda: self.objects.delete(name, {"propagationPolicy": "Background"})
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get(self, name: str) -> Session | None:
        try:
            return Session.of(await self.retried(lambda: self.objects.get(name)))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def peerings(self) -> list[dict[str, Any]] | None:
        """kopf's KopfPeering objects of the namespace; None when their CRD is not
        installed (an operator without --peering)."""
        objects = CustomObjects(self.client, "kopf.dev", "v1", self.namespace, "kopfpeerings")
        try:
            page = await self.retried(objects.list)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return list(page.get("items") or [])

    async def events(self, reason: str) -> list[dict[str, Any]]:
        """The namespace's core/v1 Events of one reason (through the generic client, as
        KubeClient.create_event posts them)."""
        return await self.retried(lambda: self.client.call(self._list_events, reason))

    def _list_events(
        self, reason: str, _request_timeout: float | None = None
    ) -> list[dict[str, Any]]:
        api = self.client.api
        request = api.param_serialize(
            method="GET",
            resource_path="/api/v1/namespaces/{namespace}/events",
            path_params={"namespace": self.namespace},
            query_params=[("fieldSelector", f"reason={reason}")],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = api.call_api(*request, _request_timeout=_request_timeout)
        response.read()  # type: ignore[no-untyped-call]
        body: Any = api.response_deserialize(response, {"200": "object"}).data
        return list(body.get("items") or []) if isinstance(body, dict) else []


# --- the REST API --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: dict[str, Any]


class RestApi:
    """The botsession API (docs/api.md) with a bearer token. The token goes into the
    Authorization header only: never printed, never in an error message."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise PluginError("--api must be an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> ApiAnswer:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return ApiAnswer(response.status, _json(response.read()))
        except urllib.error.HTTPError as exc:
            return ApiAnswer(exc.code, _json(exc.read()))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PluginError(f"the API at {self.url} cannot be reached: {reason}") from exc

    @staticmethod
    def quoted(value: str) -> str:
        return urllib.parse.quote(value, safe="")


def _json(raw: bytes) -> dict[str, Any]:
    try:
        found = json.loads(raw or b"{}")
    except ValueError:
        return {
            "success": False,
            "error": {"code": "not_json", "message": raw[:200].decode(errors="replace")},
        }
    return found if isinstance(found, dict) else {"value": found}


def api_error(answer: ApiAnswer) -> str:
    error = answer.body.get("error") or {}
    code = error.get("code", "error") if isinstance(error, dict) else "error"
    message = error.get("message", "") if isinstance(error, dict) else str(error)
    return f"the API answered {answer.status} {code}: {message}".rstrip(": ")


# --- Redis ---------------------------------------------------------------------------------

HOUSEKEEPING = "housekeeping"  # the operator's lease (controller.housekeeping_loop)


@dataclass(frozen=True)
class RedisView:
    lease_holder: str | None
    lease_ttl_ms: int | None
    last_sweep_ms: int | None
    sync_wanted: int
    unsynced: int


async def read_redis(url: str, prefix: str, timeout: float = 5.0) -> RedisView:
    """The operator's marks in Redis, read with its own key table (RedisKeys)."""
    try:
        keys = RedisKeys(prefix)
    except ValueError as exc:
        raise PluginError(f"--redis-key-prefix: {exc}") from exc
    client = connect(url, retries=0, timeout=timedelta(seconds=timeout))
    try:
        lease = keys.lease(HOUSEKEEPING)
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(lease)
            pipe.pttl(lease)
            pipe.get(keys.sweep_mark)
            pipe.hlen(keys.sync_wanted)
            pipe.zcard(keys.unsynced)
            token, ttl, sweep, wanted, unsynced = await pipe.execute()
    except Exception as exc:
        # the URL may hold a password: name the error's class only
        raise PluginError(f"Redis cannot be read: {exc.__class__.__name__}") from exc
    finally:
        await client.aclose()
    holder = str(token).rsplit(":", 1)[0] if token else None  # RedisLease: "<holder>:<random>"
    return RedisView(
        lease_holder=holder,
        lease_ttl_ms=int(ttl) if token and int(ttl) >= 0 else None,
        last_sweep_ms=int(sweep) if sweep else None,
        sync_wanted=int(wanted),
        unsynced=int(unsynced),
    )
