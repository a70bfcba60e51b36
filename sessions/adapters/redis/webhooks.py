"""Where each webhook endpoint's deliveries stand, in Redis: its cursor in the session events
(the last event it is done with), counts, its last error and since when an event waits. The
operator's leader writes it (sessions.usecases.webhooks); every API replica reads it
(GET /v1/whatsapp/webhooks), and a new leader goes on from the cursor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sessions.adapters.redis.lease import RedisLease
from sessions.adapters.redis.store import RedisStore
from sessions.domain.model import to_millis
from sessions.domain.webhooks import WebhookEndpoint


@dataclass(frozen=True)
class WebhookError:
    message: str
    status: int | None
    at: datetime
    event_id: str


@dataclass(frozen=True)
class WebhookStatus:
    name: str
    url: str  # shown: without credentials or query
    bots: list[str]
    events: list[str]
    cursor: str | None
    delivered: int
    failed_attempts: int
    given_up: int
    last_delivered_at: datetime | None
    last_error: WebhookError | None
    waiting_since: datetime | None  # the oldest event not delivered yet; None: caught up


class WebhookLedger:
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.keys = store.keys
        self._advance = store.script("webhook_advance")

    async def publish(self, endpoints: list[WebhookEndpoint]) -> None:
        """Name the configured endpoints (replacing what an older configuration named)."""
        shown = {
            e.name: json.dumps(
                {"url": e.shown_url, "bots": sorted(e.bots), "events": sorted(e.events)}
            )
            for e in endpoints
        }

        async def op() -> Any:
            async with self.store.client.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.webhooks)
                if shown:
                    pipe.hset(self.keys.webhooks, mapping=shown)  # type: ignore[arg-type]
                return await pipe.execute()

        await self.store.guarded("webhooks_publish", op)

    async def cursor(self, name: str) -> str | None:
        key = self.keys.webhook(name)
        cursor: str | None = await self.store.guarded(
            "webhook_cursor", lambda: self.store.client.hget(key, "cursor")
        )
        return cursor

    async def advance(
        self,
        name: str,
        lease: RedisLease,
        expected: str | None,
        cursor: str,
        *,
        delivered: int = 0,
        given_up: int = 0,
        now: datetime | None = None,
    ) -> bool:
        """Move the cursor from `expected` to `cursor` (lua/webhook_advance.lua); False when
        the lease is not held by `lease` or another holder moved the cursor."""
        moment = to_millis(now or datetime.now(UTC))
        args: list[str | int] = [lease.token, expected or "", cursor, delivered, given_up, moment]
        keys = [self.keys.webhook(name), lease.key]
        moved = await self.store.guarded(
            "webhook_advance", lambda: self._advance(keys=keys, args=args)
        )
        return bool(moved)

    async def note_failure(self, name: str, error: WebhookError) -> None:
        key = self.keys.webhook(name)
        fields = {
            "lastError": error.message,
            "lastErrorStatus": "" if error.status is None else str(error.status),
            "lastErrorAt": str(to_millis(error.at)),
            "lastErrorEvent": error.event_id,
        }

        async def op() -> Any:
            async with self.store.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.hincrby(key, "failedAttempts", 1)
                return await pipe.execute()

        await self.store.guarded("webhook_failure", op)

    async def note_waiting(self, name: str, since: datetime | None) -> None:
        key = self.keys.webhook(name)
        client = self.store.client
        if since is None:
            await self.store.guarded("webhook_waiting", lambda: client.hdel(key, "waitingSince"))
        else:
            value = str(to_millis(since))
            await self.store.guarded(
                "webhook_waiting", lambda: client.hset(key, "waitingSince", value)
            )

    async def statuses(self) -> list[WebhookStatus]:
        """Every endpoint the leader last published, with where its deliveries stand."""
        client = self.store.client

        async def op() -> Any:
            named: dict[str, str] = await client.hgetall(self.keys.webhooks)  # type: ignore[assignment]
            names = sorted(named)
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(self.keys.webhook(name))
                states = await pipe.execute()
            return [
                (name, json.loads(named[name]), state)
                for name, state in zip(names, states, strict=True)
            ]

        rows = await self.store.guarded("webhook_statuses", op)
        return [_status(name, shown, state) for name, shown, state in rows]


def _status(name: str, shown: dict[str, Any], state: dict[str, str]) -> WebhookStatus:
    error = None
    if state.get("lastError"):
        status = state.get("lastErrorStatus")
        error = WebhookError(
            state["lastError"],
            int(status) if status else None,
            _moment(state["lastErrorAt"]) or datetime.fromtimestamp(0, UTC),
            state.get("lastErrorEvent", ""),
        )
    return WebhookStatus(
        name=name,
        url=shown["url"],
        bots=shown["bots"],
        events=shown["events"],
        cursor=state.get("cursor"),
        delivered=int(state.get("delivered", 0)),
        failed_attempts=int(state.get("failedAttempts", 0)),
        given_up=int(state.get("givenUp", 0)),
        last_delivered_at=_moment(state.get("lastDeliveredAt")),
        last_error=error,
        waiting_since=_moment(state.get("waitingSince")),
    )


def _moment(millis: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(millis) / 1000, UTC) if millis else None
