"""GET /v1/whatsapp/session-events: the session events (sessions.adapters.redis.store,
docs/architecture.md "Session events") as Server-Sent Events.

One reader per API process follows the Redis stream (`EventFanout`, a blocking XREAD)
while some client listens, and hands each event to the streams whose filter it matches,
each through a bounded queue: a client too slow to keep up is cut off (its queue full)
instead of growing the API's memory, and its EventSource comes back with Last-Event-ID and
catches up from Redis. A client resuming from an id replays what it missed from the stream
first; every replica reads the same stream, so a resume works across API restarts and
replicas.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import timedelta

from sessions.adapters.redis.store import RedisStore, SessionEvent
from sessions.domain.logs import event
from sessions.domain.model import StoreUnavailable

log = logging.getLogger(__name__)

QUEUE = 1_000  # events one stream may have waiting before it is cut off
PAGE = 500  # events per read from Redis
BLOCK = timedelta(seconds=1)  # the reader's XREAD BLOCK
KEEP_ALIVE = 15.0  # seconds between comments on a quiet stream
RETRY_MS = 1_000  # what an EventSource waits before it reconnects
REDIS_RETRY = 1.0  # seconds between the reader's tries while Redis does not answer


def newer(a: str, b: str) -> bool:
    """Whether stream id `a` comes after `b` ("<ms>-<seq>")."""
    a_ms, _, a_seq = a.partition("-")
    b_ms, _, b_seq = b.partition("-")
    return (int(a_ms), int(a_seq or 0)) > (int(b_ms), int(b_seq or 0))


@dataclass(frozen=True)
class EventFilter:
    bot_id: str | None = None
    user_id: str | None = None

    def __call__(self, item: SessionEvent) -> bool:
        if self.bot_id is not None and item.key.bot_id != self.bot_id:
            return False
        return self.user_id is None or item.key.user_id == self.user_id


@dataclass(eq=False)
class Subscriber:
    wants: EventFilter
    queue: asyncio.Queue[SessionEvent] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, item: SessionEvent) -> None:
        if not self.wants(item) or self.overflowed.is_set():
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed.set()


class EventFanout:
    """Follows the stream and offers every event to each subscriber; reads nothing while
    nobody listens (following every event cost each report about 0.5 ms of the API's CPU:
    docs/benchmarks.md, "What the session events cost a report")."""

    def __init__(self, redis: RedisStore) -> None:
        self.redis = redis
        self.subscribers: set[Subscriber] = set()
        self.cursor: str | None = None  # the last id read; None: the stream's end, when read
        self.following = False  # reading the stream (it has had subscribers since)
        self.wanted = asyncio.Event()
        self.lock = asyncio.Lock()

    async def subscribe(self, wants: EventFilter) -> Subscriber:
        subscriber = Subscriber(wants)
        async with self.lock:
            if not self.following:
                # the reader was idle: it goes on from the stream's end as of now, before
                # this client replays what it missed, so that nothing falls between the two
                try:
                    _, last = await self.redis.events_span()
                    self.cursor = last or "0-0"
                except StoreUnavailable:
                    self.cursor = None  # the reader finds the end once Redis answers
                self.following = True
            self.subscribers.add(subscriber)
            self.wanted.set()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def run(self) -> None:
        waiting = False  # logged once when Redis stops answering, once when it is back
        while True:
            if not self.subscribers:
                self.following = False
                self.wanted.clear()
                await self.wanted.wait()
                continue
            try:
                if self.cursor is None:
                    _, last = await self.redis.events_span()
                    self.cursor = last or "0-0"
                items = await self.redis.wait_for_events(self.cursor, BLOCK, PAGE)
            except StoreUnavailable as exc:
                if not waiting:
                    event(log, "session events: waiting for redis", logging.WARNING, error=str(exc))
                waiting = True
                await asyncio.sleep(REDIS_RETRY)
                continue
            if waiting:
                event(log, "session events: redis is back")
                waiting = False
            for item in items:
                self.cursor = item.id
                for subscriber in list(self.subscribers):
                    subscriber.offer(item)


class EventsExpired(Exception):
    """The client's Last-Event-ID is older than the oldest event kept."""


def frame(item: SessionEvent) -> str:
    return f"id: {item.id}\nevent: {item.type}\ndata: {json.dumps(item.payload())}\n\n"


async def check_resumable(redis: RedisStore, last_id: str, now_ms: int) -> None:
    """Raises EventsExpired when events after `last_id` may have been trimmed. Trimming only
    takes the oldest, so they are all there when `last_id` itself still is, or comes after
    the oldest kept; with none kept, when it is younger than the retention. "0" asks for
    everything kept."""
    if last_id in ("0", "0-0"):
        return
    oldest, _ = await redis.events_span()
    if oldest is None:
        if int(last_id.partition("-")[0]) < now_ms - redis.events_ms:
            raise EventsExpired(last_id)
        return
    if newer(oldest, last_id) and not await redis.event_kept(last_id):
        raise EventsExpired(last_id)


async def stream(
    fanout: EventFanout, wants: EventFilter, last_id: str | None
) -> AsyncGenerator[str, None]:
    """The frames of one client: what it missed after `last_id` (from Redis), then live
    events, keep-alive comments when quiet; ends when the client is too slow."""
    subscriber = await fanout.subscribe(wants)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        cursor = last_id
        if cursor is not None:
            while page := await fanout.redis.events(cursor, PAGE):
                for item in page:
                    if wants(item):
                        yield frame(item)
                cursor = page[-1].id
        while not subscriber.overflowed.is_set():
            try:
                async with asyncio.timeout(KEEP_ALIVE):
                    item = await subscriber.queue.get()
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if cursor is None or newer(item.id, cursor):
                yield frame(item)
        yield ": too slow; reconnect with Last-Event-ID\n\n"
    finally:
        fanout.unsubscribe(subscriber)
