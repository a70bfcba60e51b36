"""The session events (issue 21, item 2): every transition and removal becomes one entry of a
Redis stream, written in the same script call that makes it visible in Redis, once, in
order; on a real redis-server and database, the BotSessions in memory and on the real API
server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from sessions.adapters.redis.store import (
    RedisStore,
    SessionEvent,
    removal_event,
    transition_events,
)
from sessions.adapters.sql.store import SqlStore
from sessions.domain.model import (
    Phase,
    Reason,
    ReportedState,
    SessionKey,
    StoreUnavailable,
)
from sessions.usecases.reconcile import Reconciler, cleanup_deleted, reconcile
from sessions.usecases.service import ClearFlags, SessionService
from tests.fakes import Clock

pytestmark = pytest.mark.integration

KEY = SessionKey("bot-1", "user-1")


def steps(events: list[SessionEvent]) -> list[tuple[str, int, str, str, str]]:
    return [(e.type, e.revision, e.from_phase, e.to_phase, e.reason) for e in events]


async def test_a_report_s_transitions_are_events_in_order(service: SessionService) -> None:
    await service.report(KEY, ReportedState.CONNECTED)
    await service.report(KEY, ReportedState.CONNECTED)  # nothing new
    await service.report(KEY, ReportedState.DISCONNECTED, Reason.LOGGED_OUT)
    events = await service.redis.events("0", 100)
    assert steps(events) == [
        ("transition", 1, "", "connecting", "Created"),
        ("transition", 2, "connecting", "active", "Connected"),
        ("transition", 3, "active", "inactive", "LoggedOut"),
    ]
    assert {e.key for e in events} == {KEY}
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert events[0].actor == "api" and events[0].at.endswith("Z")
    assert await service.redis.events(events[1].id, 100) == events[2:]  # resumable by id


async def test_each_transition_goes_out_once_whoever_writes_it(
    service: SessionService,
) -> None:
    """The API, then the operator's sync, then a retry: every writer passes the recent
    transitions; the marker lets each through once."""
    result = await service.report(KEY, ReportedState.CONNECTED)
    record = await service.botsessions.get(KEY)
    assert record is not None
    for _ in range(3):
        await service.redis.write(result.state, timedelta(hours=24), record.recent)
        await service.redis.emit(KEY, transition_events(record.recent))
    assert len(await service.redis.events("0", 100)) == 2


async def test_a_transition_redis_missed_is_emitted_by_the_next_writer(
    service: SessionService, redis_store: RedisStore
) -> None:
    """A report answered redisPending: its events are not lost; the operator's sync (or the
    next report) emits them from the BotSession's recent transitions, before its own."""
    await service.report(KEY, ReportedState.CONNECTED)
    redis_store.guard.trip("test: Redis is down")
    try:
        down = await service.report(KEY, ReportedState.DISCONNECTED)
        assert down.redis_pending
    finally:
        redis_store.guard.opened_at = None
    await service.report(KEY, ReportedState.CONNECTING)
    events = await service.redis.events("0", 100)
    assert [(e.revision, e.to_phase) for e in events] == [
        (1, "connecting"),
        (2, "active"),
        (3, "inactive"),
        (4, "connecting"),
    ]


async def test_the_operator_s_sync_emits_what_the_api_could_not(
    service: SessionService, redis_store: RedisStore, sql_store: SqlStore
) -> None:
    await service.report(KEY, ReportedState.CONNECTED)
    redis_store.guard.trip("test: Redis is down")
    try:
        await service.report(KEY, ReportedState.DISCONNECTED)
    finally:
        redis_store.guard.opened_at = None
    record = await service.botsessions.get(KEY)
    assert record is not None
    using = Reconciler(
        service, service.botsessions, service.redis, service.sql, service.settings.session_ttl
    )
    outcome = await reconcile(record, using)
    assert outcome.pending == []
    assert [e.to_phase for e in await service.redis.events("0", 100)] == [
        "connecting",
        "active",
        "inactive",
    ]


async def test_a_redis_only_clear_and_a_deletion_are_events(
    service: SessionService, clock: Clock
) -> None:
    await service.report(KEY, ReportedState.CONNECTED)
    await service.clear("bot-1", "user-1", ClearFlags(False, True, False), "admin")
    record = await service.botsessions.get(KEY)
    assert record is not None and record.reason is Reason.CLEARED
    pending = await cleanup_deleted(record, service.redis, service.sql, service.now())
    assert pending == []
    events = await service.redis.events("0", 100)
    assert steps(events)[2:] == [
        ("transition", 3, "active", "inactive", "Cleared"),
        ("removed", 4, "inactive", "", ""),
    ]
    assert events[-1].actor == "operator:deleted"


async def test_a_new_incarnation_s_events_follow_the_old_ones(
    service: SessionService, redis_store: RedisStore
) -> None:
    await service.report(KEY, ReportedState.CONNECTED)
    record = await service.botsessions.get(KEY)
    assert record is not None
    later = removal_event(record.version, Phase.ACTIVE, "test", service.now())
    await redis_store.emit(KEY, later)
    newer = record.version.__class__(record.incarnation + 1, 1)
    again = removal_event(newer, Phase.CONNECTING, "test", service.now())
    assert await redis_store.emit(KEY, again) == 1
    assert await redis_store.emit(KEY, later) == 0  # older than the marker now


async def test_events_are_kept_for_the_retention_only(redis_store: RedisStore) -> None:
    """Trimmed as they are added, by id (approximately: Redis drops a whole stream node, up
    to 100 entries or 4 KB, once all of it is past the retention)."""
    short = RedisStore(redis_store.client, events_retention=timedelta(milliseconds=200))

    async def emit(revision: int) -> None:
        await short.emit(KEY, ["transition", 0, revision, "", "connecting", "Created", "t", 1])

    for revision in range(1, 151):
        await emit(revision)
    first, _ = await short.events_span()
    await asyncio.sleep(0.3)
    await emit(151)
    oldest, _ = await short.events_span()
    assert first is not None and oldest is not None and oldest > first
    kept = [e.revision for e in await short.events("0", 1000)]
    assert kept == list(range(kept[0], 152)) and kept[0] > 100


async def test_no_events_while_redis_is_down_raise_clearly(redis_store: RedisStore) -> None:
    redis_store.guard.trip("test")
    try:
        with pytest.raises(StoreUnavailable):
            await redis_store.events("0", 10)
    finally:
        redis_store.guard.opened_at = None
