"""Webhook deliveries: each configured endpoint gets the session events it wants, as JSON,
signed (sessions.adapters.webhooks), at least once and in order per session.

One loop per endpoint runs on the operator's housekeeping leader only. It reads a page of
the session events after the endpoint's cursor (sessions.adapters.redis.webhooks), delivers
the wanted ones, each session's in order and different sessions side by side, and then
moves the cursor past the page. The cursor moves only while the lease is held and only from
where it was read (a compare-and-swap in Redis), so exactly one replica delivers; a leader
that dies in the middle of a page leaves it to the next, which delivers the page again: at
least once, and `webhook-id` (the event's id) lets the receiver drop what it has seen.

A failed attempt is retried with exponential backoff and full jitter (tenacity) for
`window` after the event happened, or, when the endpoint's deliveries were behind (this
replica took over late, the endpoint was slow), for `window` after the endpoint last took
an event, as of the event's first attempt: an operator that was away drops nothing, and
an endpoint that stays down costs each waiting event about one attempt once the window
after its last success has passed. Then the event is given up, counted, and its session's
later events go on. Each failure is recorded as the endpoint's last error, which
GET /v1/whatsapp/webhooks shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from sessions.adapters.redis.lease import RedisLease
from sessions.adapters.redis.store import RedisStore, SessionEvent, member_of
from sessions.adapters.redis.webhooks import WebhookError, WebhookLedger
from sessions.adapters.webhooks import DeliveryFailed
from sessions.domain.model import StoreUnavailable
from sessions.domain.webhooks import WebhookEndpoint

PAGE = 100  # events read per step
PARALLEL = 16  # sessions delivered to at once


class Sender(Protocol):
    async def send(self, endpoint: WebhookEndpoint, message_id: str, body: str) -> int: ...


class NotLeading(Exception):
    """The lease went elsewhere: this replica stops delivering."""


@dataclass(frozen=True)
class RetryPolicy:
    window: timedelta = timedelta(hours=1)  # an event is retried until it is this old
    first: timedelta = timedelta(seconds=1)  # the first wait's bound; each doubles it
    most: timedelta = timedelta(minutes=5)  # the longest wait between two attempts


@dataclass
class PageOutcome:
    read: int = 0  # events read, wanted or not
    delivered: int = 0
    given_up: int = 0
    failed_attempts: int = 0
    moved: bool = False  # the cursor moved past the page


def event_moment(item: SessionEvent) -> datetime:
    """When the event was written (its stream id's milliseconds)."""
    return datetime.fromtimestamp(int(item.id.partition("-")[0]) / 1000, UTC)


def body_of(item: SessionEvent) -> str:
    return json.dumps(item.payload(), separators=(",", ":"))


class EndpointDeliveries:
    def __init__(
        self,
        endpoint: WebhookEndpoint,
        redis: RedisStore,
        ledger: WebhookLedger,
        sender: Sender,
        lease: RedisLease,
        leading: Callable[[], bool],
        policy: RetryPolicy = RetryPolicy(),
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_failure: Callable[[WebhookError], None] = lambda _: None,
    ) -> None:
        self.endpoint = endpoint
        self.redis = redis
        self.ledger = ledger
        self.sender = sender
        self.lease = lease
        self.leading = leading
        self.policy = policy
        self.clock = clock
        self.sleep = sleep
        self.on_failure = on_failure
        self.waiting_since: datetime | None = None  # the oldest event not taken, once failed
        self.progress_at = clock()  # the endpoint last took an event, or this replica began
        self.led = False
        self.cursor: str | None = None  # where this replica last moved it (None: read it)

    async def step(self, block: timedelta) -> PageOutcome:
        """Deliver one page (waiting up to `block` for events); NotLeading when the lease
        is not held."""
        self.check_leading()
        name = self.endpoint.name
        cursor = self.cursor or await self.ledger.cursor(name)
        if cursor is None:  # a new endpoint: it gets the events from now on
            _, last = await self.redis.events_span()
            await self.ledger.advance(name, self.lease, None, last or "0-0")
            return PageOutcome()
        items = await self.redis.wait_for_events(cursor, block, PAGE)
        if not items:
            return PageOutcome()
        outcome = PageOutcome(read=len(items))
        wanted = [i for i in items if self.endpoint.wants(i.type, i.key.bot_id, i.to_phase)]
        await self.deliver(wanted, outcome)
        outcome.moved = await self.ledger.advance(
            name,
            self.lease,
            cursor,
            items[-1].id,
            delivered=outcome.delivered,
            given_up=outcome.given_up,
            now=self.clock(),
        )
        # the move is a compare-and-swap: after one that failed, read where it stands
        self.cursor = items[-1].id if outcome.moved else None
        if self.waiting_since is not None:
            self.waiting_since = None
            await self.ledger.note_waiting(name, None)
        return outcome

    def waiting_seconds(self) -> float:
        if self.waiting_since is None:
            return 0.0
        return max(0.0, (self.clock() - self.waiting_since).total_seconds())

    def check_leading(self) -> None:
        if not self.leading():
            self.led = False
            self.cursor = None  # another replica may move it meanwhile
            raise NotLeading(self.endpoint.name)
        if not self.led:  # (again) the leader: what waits is not held against the endpoint
            self.led = True
            self.progress_at = self.clock()

    async def deliver(self, wanted: list[SessionEvent], outcome: PageOutcome) -> None:
        by_session: dict[str, list[SessionEvent]] = {}
        for item in wanted:
            by_session.setdefault(member_of(item.key), []).append(item)
        turns = asyncio.Semaphore(PARALLEL)

        async def one_session(items: list[SessionEvent]) -> None:
            async with turns:
                for item in items:
                    if await self.deliver_one(item, outcome):
                        outcome.delivered += 1
                    else:
                        outcome.given_up += 1

        async with asyncio.TaskGroup() as group:
            for items in by_session.values():
                group.create_task(one_session(items))

    async def deliver_one(self, item: SessionEvent, outcome: PageOutcome) -> bool:
        """True once the endpoint took it; False when it was given up."""
        body = body_of(item)
        deadline = max(event_moment(item), self.progress_at) + self.policy.window

        async def failed(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, DeliveryFailed):
                await self.note_failure(item, error, outcome)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(DeliveryFailed),
            wait=wait_random_exponential(
                multiplier=self.policy.first.total_seconds(),
                max=self.policy.most.total_seconds(),
            ),
            # no attempt starts past the window
            stop=lambda state: self.clock() + timedelta(seconds=state.upcoming_sleep) >= deadline,
            after=failed,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    self.check_leading()
                    await self.sender.send(self.endpoint, item.id, body)
        except DeliveryFailed:
            return False
        self.progress_at = self.clock()
        return True

    async def note_failure(
        self, item: SessionEvent, error: DeliveryFailed, outcome: PageOutcome
    ) -> None:
        noted = WebhookError(str(error), error.status, self.clock(), item.id)
        outcome.failed_attempts += 1
        self.on_failure(noted)
        first = self.waiting_since is None
        if first:
            self.waiting_since = event_moment(item)
        with contextlib.suppress(StoreUnavailable):  # the store's guard logs and counts it
            await self.ledger.note_failure(self.endpoint.name, noted)
            if first:
                await self.ledger.note_waiting(self.endpoint.name, self.waiting_since)
