"""The SSE stream's own rules (api.events): filters, a bounded queue per client that cuts a
slow one off, keep-alive comments. Redis and the live server are in
tests/integration/test_api_events.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from api import events
from api.events import EventFanout, EventFilter, newer, stream
from sessions.adapters.redis.store import SessionEvent
from sessions.adapters.tasks import stop
from sessions.domain.model import SessionKey, StoreUnavailable

pytestmark = pytest.mark.unit


def item(n: int, bot: str = "bot-1", user: str = "u1") -> SessionEvent:
    return SessionEvent(
        f"1700000000000-{n}",
        "transition",
        SessionKey(bot, user),
        1,
        n,
        "",
        "connecting",
        "Created",
        "api",
        "2031-05-17T10:00:00Z",
    )


class QuietRedis:
    """A stream that is empty and stays so; counts the reads."""

    def __init__(self) -> None:
        self.reads = 0

    async def events_span(self) -> tuple[str | None, str | None]:
        return None, None

    async def wait_for_events(self, after: str, block: object, count: int) -> list[SessionEvent]:
        self.reads += 1
        await asyncio.sleep(0.01)
        return []


def fanout() -> EventFanout:
    return EventFanout(cast(Any, QuietRedis()))  # these streams start live


def test_ids_compare_as_numbers() -> None:
    assert newer("10-0", "9-5") and newer("9-10", "9-9") and not newer("9-9", "9-9")


def test_a_filter_keeps_a_bot_or_one_session() -> None:
    assert EventFilter("bot-1")(item(1)) and not EventFilter("bot-2")(item(1))
    assert EventFilter("bot-1", "u1")(item(1)) and not EventFilter("bot-1", "u2")(item(1))
    assert EventFilter()(item(1, bot="any"))


async def test_a_client_too_slow_to_keep_up_is_cut_off_not_buffered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "QUEUE", 3)
    hub = fanout()
    frames = stream(hub, EventFilter(), None)
    assert await anext(frames) == f"retry: {events.RETRY_MS}\n\n"
    (subscriber,) = hub.subscribers
    for n in range(10):  # the client reads nothing meanwhile
        subscriber.offer(item(n))
    assert subscriber.queue.qsize() == 3 and subscriber.overflowed.is_set()
    rest = [frame async for frame in frames]
    assert rest == [": too slow; reconnect with Last-Event-ID\n\n"]
    assert hub.subscribers == set()


async def test_a_quiet_stream_gets_keep_alive_comments_then_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "KEEP_ALIVE", 0.05)
    hub = fanout()
    frames = stream(hub, EventFilter("bot-1"), None)
    await anext(frames)
    assert await anext(frames) == ": keep-alive\n\n"
    (subscriber,) = hub.subscribers
    subscriber.offer(item(1, bot="bot-2"))  # not this client's
    subscriber.offer(item(2))
    frame = await anext(frames)
    assert frame.startswith("id: 1700000000000-2\nevent: transition\ndata: {")
    await frames.aclose()
    assert hub.subscribers == set()


class FlakyRedis:
    """Down for its first three reads, then one event, then quiet."""

    def __init__(self) -> None:
        self.reads = 0

    async def events_span(self) -> tuple[str | None, str | None]:
        return None, None

    async def wait_for_events(self, after: str, block: object, count: int) -> list[SessionEvent]:
        self.reads += 1
        if self.reads <= 3:
            raise StoreUnavailable("redis", "down")
        if self.reads == 4:
            return [item(1)]
        await asyncio.sleep(0.01)
        return []


async def test_the_reader_logs_a_redis_outage_once_and_goes_on_after_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(events, "REDIS_RETRY", 0.0)
    caplog.set_level(logging.INFO, logger="api.events")
    hub = EventFanout(cast(Any, FlakyRedis()))
    subscriber = await hub.subscribe(EventFilter())
    task = asyncio.create_task(hub.run())
    got = await asyncio.wait_for(subscriber.queue.get(), 5)
    await stop(task)
    assert got.id == item(1).id
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("session events: waiting for redis") == 1
    assert messages.count("session events: redis is back") == 1


async def test_the_reader_reads_nothing_while_nobody_listens() -> None:
    redis = QuietRedis()
    hub = EventFanout(cast(Any, redis))
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.sleep(0.1)
        assert redis.reads == 0
        subscriber = await hub.subscribe(EventFilter())
        await asyncio.sleep(0.1)
        assert redis.reads > 0
        hub.unsubscribe(subscriber)
        await asyncio.sleep(0.05)  # the read under way ends
        idle_at = redis.reads
        await asyncio.sleep(0.1)
        assert redis.reads == idle_at
    finally:
        await stop(task)


class GrowingRedis(QuietRedis):
    """A stream whose end moves on while nobody listens."""

    def __init__(self) -> None:
        super().__init__()
        self.last = "5-0"

    async def events_span(self) -> tuple[str | None, str | None]:
        return "1-0", self.last


async def test_a_reader_woken_by_a_client_goes_on_from_the_end_as_of_that_client() -> None:
    """Events written while nobody listened are not read; the first client's replay (from
    Redis, after it subscribed) covers up to the end, the reader what comes after."""
    redis = GrowingRedis()
    hub = EventFanout(cast(Any, redis))
    first = await hub.subscribe(EventFilter())
    assert hub.cursor == "5-0"
    hub.unsubscribe(first)
    hub.following = False  # as the reader does once it finds nobody listening
    redis.last = "9-0"
    await hub.subscribe(EventFilter())
    assert hub.cursor == "9-0"
