"""Keeping Redis and the database in step with the BotSessions (sessions.usecases.healing)
on real Redis, a real database and the real API server (or the in-memory BotSessions where
the test is about the stores): the O(1) check that Redis kept its data, the full audit, and
the budgeted copy of lastSeen."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.redis.store import RedisStore, member_of
from sessions.adapters.sql.store import SqlStore
from sessions.domain.model import Identity, Phase, ReportedState, SessionKey
from sessions.domain.records import BotSessionRecord
from sessions.domain.settings import load_settings
from sessions.usecases.healing import (
    Copied,
    audit,
    copy_last_seen,
    restore_if_lost,
    restore_redis,
)
from sessions.usecases.service import ClearFlags, SessionService
from tests.fakes import Clock

pytestmark = pytest.mark.integration

IDENTITY = Identity("4915112345678", "Jane", "session_123")
REDIS_ONLY = ClearFlags(session=False, redis=True, database=False)
TTL = timedelta(hours=24)
DRIFT = timedelta(minutes=1)


@pytest.fixture
def kube_service(
    kube_botsessions: KubeBotSessions, redis_store: RedisStore, sql_store: SqlStore
) -> SessionService:
    return SessionService(
        kube_botsessions, redis_store, sql_store, load_settings(session_ttl="24h")
    )


async def records_of(service: SessionService, keys: Sequence[SessionKey]) -> list[BotSessionRecord]:
    found = [await service.botsessions.get(key) for key in keys]
    return [r for r in found if r is not None]


async def connected(service: SessionService, *users: str) -> list[SessionKey]:
    keys = [SessionKey("bot-1", user) for user in users]
    for key in keys:
        await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    return keys


async def test_a_lagging_index_never_brings_back_a_cleared_sessions_keys(
    kube_service: SessionService, kube_botsessions: KubeBotSessions
) -> None:
    service = kube_service
    (key,) = await connected(service, "cleared")
    stale = await records_of(service, [key])  # active: what the index still holds
    assert stale[0].phase is Phase.ACTIVE
    await service.clear(key.bot_id, key.user_id, REDIS_ONLY, actor="test")
    assert await service.redis.client.keys("session:*") == []

    assert await restore_redis(kube_botsessions, service.redis, stale, TTL) == 0
    assert await service.redis.client.keys("session:*") == []


async def test_after_a_flushall_the_sessions_come_back_as_their_botsessions_are_now(
    kube_service: SessionService, kube_botsessions: KubeBotSessions
) -> None:
    service = kube_service
    key = SessionKey("bot-1", "lost")
    await service.report(key, ReportedState.CONNECTING, identity=IDENTITY)
    stale = await records_of(service, [key])  # connecting: the index has not seen the connect
    await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    assert await restore_if_lost(kube_botsessions, service.redis, lambda: stale, TTL) == 0
    assert await service.redis.intact()
    await service.redis.client.flushall()
    assert not await service.redis.intact()

    restored = await restore_if_lost(kube_botsessions, service.redis, lambda: stale, TTL)

    held = await service.redis.get(key)
    assert restored == 1
    assert held is not None and (held.phase, held.revision) == (Phase.ACTIVE, 2)
    assert await service.redis.intact()


async def test_while_redis_is_intact_a_pass_costs_one_get(
    memory_service: SessionService,
) -> None:
    service = memory_service
    keys = await connected(service, *(f"u{i}" for i in range(50)))
    records = await records_of(service, keys)
    assert await restore_if_lost(service.botsessions, service.redis, lambda: records, TTL) == 0
    await service.redis.client.config_resetstat()

    outcome = await restore_if_lost(service.botsessions, service.redis, lambda: records, TTL)

    stats = await service.redis.client.info("commandstats")
    assert outcome is None
    calls = {name: s["calls"] for name, s in stats.items() if "resetstat" not in name}
    assert calls == {"cmdstat_get": 1}


async def test_redis_losing_its_data_again_during_a_restore_is_noticed_by_the_next_pass(
    memory_service: SessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = memory_service
    keys = await connected(service, "a", "b")
    records = await records_of(service, keys)
    await service.redis.client.flushall()
    settle = service.redis.settle_restore

    async def lose_everything_then_settle(token: str) -> bool:
        await service.redis.client.flushall()  # after the restore's writes, before its end
        return await settle(token)

    monkeypatch.setattr(service.redis, "settle_restore", lose_everything_then_settle)
    first = await restore_if_lost(service.botsessions, service.redis, lambda: records, TTL)
    monkeypatch.undo()
    assert first == 2
    assert not await service.redis.intact()  # the second loss took the restore's mark along

    assert await restore_if_lost(service.botsessions, service.redis, lambda: records, TTL) == 2
    assert await service.redis.intact()
    assert all([await service.redis.get(k) is not None for k in keys])


async def test_the_audit_heals_what_the_sentinel_cannot_see(
    memory_service: SessionService,
) -> None:
    service = memory_service
    keys = await connected(service, "a", "b", "c")
    records = await records_of(service, keys)
    await restore_if_lost(service.botsessions, service.redis, lambda: records, TTL)
    await service.redis.client.delete(f"session:{keys[0]}")  # a failover lost one write
    assert await service.sql.delete(keys[1]) == 3  # a row cleared on its own
    assert await restore_if_lost(service.botsessions, service.redis, lambda: records, TTL) is None

    healed = await audit(service.botsessions, service.redis, service.sql, records, TTL)

    assert (healed.redis, healed.database) == (1, 1)
    assert await service.redis.get(keys[0]) is not None
    row = await service.sql.get(keys[1])
    assert row is not None and row.phase is Phase.ACTIVE
    assert [e.revision for e in await service.sql.history(keys[1])] == [2, 1]
    again = await audit(service.botsessions, service.redis, service.sql, records, TTL)
    assert (again.redis, again.database) == (0, 0)


async def copy(
    service: SessionService,
    index: dict[SessionKey, BotSessionRecord],
    *,
    limit: int,
    pace: Callable[[], Awaitable[None]],
) -> Copied:
    """One copy of lastSeen as the operator makes it, `index` standing for its index."""
    return await copy_last_seen(
        service.redis,
        service.botsessions,
        service.sql,
        index.get,
        drift=DRIFT,
        now=service.now(),
        limit=limit,
        pace=pace,
    )


class Paced:
    """The write budget, counted."""

    def __init__(self) -> None:
        self.writes = 0

    async def __call__(self) -> None:
        self.writes += 1


async def unsynced(redis: RedisStore) -> dict[str, int]:
    rows = await redis.client.zrange(redis.keys.unsynced, 0, -1, withscores=True)
    return {str(row[0]): int(row[1]) for row in rows}


async def test_only_heartbeats_older_than_the_drift_are_copied_oldest_first_within_the_limit(
    memory_service: SessionService, clock: Clock
) -> None:
    service = memory_service
    keys = await connected(service, "a", "b", "c", "d")
    for key in keys:  # one a second after the reports: a first, d last
        clock.advance(seconds=1)
        await service.heartbeat(key)
    assert set(await unsynced(service.redis)) == {member_of(k) for k in keys}
    clock.advance(seconds=59)  # a, b and c: a minute old or more; d: 59 s
    index = {r.key: r for r in await records_of(service, keys)}
    pace = Paced()

    copied = await copy(service, index, limit=2, pace=pace)

    assert (copied.looked_at, copied.written, pace.writes) == (2, 2, 2)
    assert set(await unsynced(service.redis)) == {member_of(keys[2]), member_of(keys[3])}
    for key in keys[:2]:
        held, record, row = (
            await service.redis.get(key),
            await service.botsessions.get(key),
            await service.sql.get(key),
        )
        assert held is not None and record is not None and row is not None
        assert record.last_seen == held.last_seen == row.last_seen
    record = await service.botsessions.get(keys[2])
    assert record is not None and record.last_seen == index[keys[2]].last_seen  # not yet


async def test_a_heartbeat_during_the_copy_keeps_the_session_for_the_next_one(
    memory_service: SessionService, clock: Clock
) -> None:
    service = memory_service
    (key,) = await connected(service, "busy")
    clock.advance(seconds=1)
    await service.heartbeat(key)
    first = await unsynced(service.redis)
    clock.advance(seconds=61)
    index = {r.key: r for r in await records_of(service, [key])}

    async def heartbeat_meanwhile() -> None:  # between the copy's read and its end
        clock.advance(seconds=1)
        await service.heartbeat(key)

    copied = await copy(service, index, limit=10, pace=heartbeat_meanwhile)

    held = await service.redis.get(key)
    assert copied.written == 1 and held is not None
    after = await unsynced(service.redis)
    assert after == {member_of(key): int(held.last_seen.timestamp() * 1000)}
    assert after[member_of(key)] > first[member_of(key)]


async def test_sessions_that_went_or_are_already_as_recent_leave_without_a_write(
    memory_service: SessionService, clock: Clock
) -> None:
    service = memory_service
    keys = await connected(service, "cleared", "deleted", "current")
    for key in keys:
        await service.heartbeat(key)
    await service.clear("bot-1", "cleared", REDIS_ONLY, actor="test")
    assert member_of(keys[0]) not in await unsynced(service.redis)  # the removal took it out
    clock.advance(seconds=61)
    held = await service.redis.get(keys[2])
    assert held is not None
    current = (await records_of(service, keys[2:]))[0]
    index = {keys[2]: replace(current, last_seen=held.last_seen)}  # keys[1]: gone
    pace = Paced()

    copied = await copy(service, index, limit=10, pace=pace)

    assert (copied.looked_at, copied.written, pace.writes) == (2, 0, 0)
    assert await unsynced(service.redis) == {}
