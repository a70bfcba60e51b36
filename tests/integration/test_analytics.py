"""Analytics on real Redis and on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from sessions.adapters.redis.store import RedisStore
from sessions.adapters.sql import schema as sql_schema
from sessions.adapters.sql.store import SqlStore, SweepRun
from sessions.domain.model import HistoryEntry, Phase, Reason, SessionKey
from sessions.usecases.analytics import analytics, fleet, percentile, search_sessions
from tests.conftest import make_state

pytestmark = pytest.mark.integration

NOW = datetime(2031, 5, 17, 12, 30, 0, tzinfo=UTC)


def entry(
    user: str,
    revision: int,
    frm: Phase | None,
    to: Phase,
    reason: Reason,
    at: datetime,
    bot: str = "bot-1",
) -> HistoryEntry:
    return HistoryEntry(SessionKey(bot, user), revision, frm, to, reason, "test", at)


async def add_history(sql: SqlStore, entries: list[HistoryEntry]) -> None:
    """History rows alone (no session rows), straight into the table."""
    rows = [
        {
            "bot_id": e.key.bot_id,
            "user_id": e.key.user_id,
            "revision": e.revision,
            "from_phase": e.from_phase.value if e.from_phase else None,
            "to_phase": e.to_phase.value,
            "reason": e.reason.value,
            "actor": e.actor,
            "at": e.at,
        }
        for e in entries
    ]
    async with sql.engine.begin() as connection:
        await connection.execute(sa.insert(sql_schema.history), rows)


async def seed(sql: SqlStore, redis: RedisStore) -> None:
    hour = timedelta(hours=1)
    # u1: connected 10:00, disconnected 10:30 -> 30 min active
    # u2: connected 11:00, logged out 11:10 -> 10 min active; then reconnecting
    # u3: connecting since 09:00 (stuck); u4 on another bot
    await add_history(
        sql,
        [
            entry("u1", 1, None, Phase.CONNECTING, Reason.CREATED, NOW - 3 * hour),
            entry("u1", 2, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED, NOW - 2.5 * hour),
            entry("u1", 3, Phase.ACTIVE, Phase.INACTIVE, Reason.DISCONNECTED, NOW - 2 * hour),
            entry("u2", 1, None, Phase.CONNECTING, Reason.CREATED, NOW - 1.6 * hour),
            entry("u2", 2, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED, NOW - 1.5 * hour),
            entry(
                "u2",
                3,
                Phase.ACTIVE,
                Phase.INACTIVE,
                Reason.LOGGED_OUT,
                NOW - 1.5 * hour + timedelta(minutes=10),
            ),
            entry("u2", 4, Phase.INACTIVE, Phase.CONNECTING, Reason.RECONNECTING, NOW - hour),
            entry("u3", 1, None, Phase.CONNECTING, Reason.CREATED, NOW - 3.5 * hour),
            entry("u4", 1, None, Phase.CONNECTING, Reason.CREATED, NOW - hour, bot="bot-2"),
        ],
    )
    for user, phase in [("u1", Phase.INACTIVE), ("u2", Phase.CONNECTING), ("u3", Phase.CONNECTING)]:
        await sql.write(make_state(user=user, phase=phase, last_seen=NOW - timedelta(hours=3)))
    await redis.write(
        make_state(user="u2", phase=Phase.CONNECTING, last_seen=NOW), timedelta(days=3650)
    )
    await sql.record_cleanup_run(SweepRun(NOW - hour, NOW - hour, 3, 2, 1, True, None, "op"))


async def test_the_numbers_the_dashboard_shows(
    sql_store: SqlStore, redis_store: RedisStore
) -> None:
    await seed(sql_store, redis_store)
    # updated_at of the rows is "now" (the wall clock); query as of far in the future so
    # every connecting row counts as stuck
    later = datetime.now(UTC) + timedelta(hours=1)
    result = await analytics(
        sql_store,
        redis_store,
        bot_id="bot-1",
        window=timedelta(hours=24),
        stuck_after=timedelta(minutes=15),
        now=NOW,
    )
    assert result.by_phase == {"inactive": 1, "connecting": 2}
    assert result.live_in_redis == 1
    assert result.durations_count == 2
    assert result.duration_median == pytest.approx(20 * 60)
    assert result.duration_p95 == pytest.approx(10 * 60 + 0.95 * 20 * 60)
    per_hour = {(hour, reason): count for hour, reason, count in result.transitions_per_hour}
    assert per_hour[("2031-05-17T09:00:00Z", "Created")] == 2  # u3 09:00 and u1 09:30
    assert per_hour[("2031-05-17T10:00:00Z", "Disconnected")] == 1
    assert sum(per_hour.values()) == 8  # bot-2's transition is not counted
    stuck = await analytics(
        sql_store,
        redis_store,
        bot_id="bot-1",
        window=timedelta(hours=1),
        stuck_after=timedelta(minutes=15),
        now=later,
    )
    assert stuck.stuck_count == 2
    assert {s.key.user_id for s in stuck.stuck_oldest} == {"u2", "u3"}
    assert [r.removed for r in result.cleanup_runs] == [3]


async def test_the_window_bounds_what_is_counted(
    sql_store: SqlStore, redis_store: RedisStore
) -> None:
    await seed(sql_store, redis_store)
    result = await analytics(
        sql_store,
        redis_store,
        bot_id=None,
        window=timedelta(minutes=90),
        stuck_after=timedelta(minutes=15),
        now=NOW,
    )
    # from NOW-90min on: u2 connected, logged out, reconnecting; u4 created
    assert sum(c for _, _, c in result.transitions_per_hour) == 4
    assert result.durations_count == 1  # only u2's connection ended in the window


async def test_redis_down_leaves_live_unknown(sql_store: SqlStore) -> None:
    from devstack.redis_server import RedisServer
    from sessions.adapters.redis.store import connect

    with RedisServer() as server:
        store = RedisStore(connect(server.url, retries=0, timeout=timedelta(seconds=1)))
        server.stop()
        result = await analytics(
            sql_store,
            store,
            bot_id=None,
            window=timedelta(hours=1),
            stuck_after=timedelta(minutes=5),
            now=NOW,
        )
        assert result.live_in_redis is None and result.by_phase == {}
        await store.close()


def test_percentiles() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


async def test_every_bot_at_a_glance(sql_store: SqlStore, redis_store: RedisStore) -> None:
    """Issue 21, item 3: counts in all and per bot, and the bots with the most failures or
    lost heartbeats in the window (older ones do not count)."""
    await seed(sql_store, redis_store)
    for user, phase in [("a", Phase.ACTIVE), ("b", Phase.FAILED)]:
        await sql_store.write(make_state(bot="bot-2", user=user, phase=phase))
    hour = timedelta(hours=1)
    await add_history(
        sql_store,
        [
            entry(
                "b", 2, Phase.CONNECTING, Phase.FAILED, Reason.CONNECT_FAILED, NOW - hour, "bot-2"
            ),
            entry("c", 3, Phase.ACTIVE, Phase.INACTIVE, Reason.HEARTBEAT_LOST, NOW - hour, "bot-2"),
            entry("d", 3, Phase.ACTIVE, Phase.INACTIVE, Reason.HEARTBEAT_LOST, NOW - hour, "bot-3"),
            entry("u9", 3, Phase.CONNECTING, Phase.FAILED, Reason.CONNECT_TIMEOUT, NOW - 30 * hour),
        ],
    )
    result = await fleet(
        sql_store, window=timedelta(hours=24), bots_limit=10, troubled_limit=5, now=NOW
    )
    assert result.by_phase == {"inactive": 1, "connecting": 2, "active": 1, "failed": 1}
    assert result.bot_count == 2
    assert [(b.bot_id, b.by_phase, b.total) for b in result.bots] == [
        ("bot-1", {"inactive": 1, "connecting": 2}, 3),
        ("bot-2", {"active": 1, "failed": 1}, 2),
    ]
    assert [(b.bot_id, b.failures, b.heartbeat_lost) for b in result.troubled] == [
        ("bot-2", 1, 1),
        ("bot-3", 0, 1),
    ]
    fewer = await fleet(sql_store, window=timedelta(hours=48), bots_limit=1, troubled_limit=1)
    assert [b.bot_id for b in fewer.bots] == ["bot-1"] and fewer.bot_count == 2
    assert len(fewer.troubled) == 1


async def test_finding_sessions_of_any_bot(sql_store: SqlStore, redis_store: RedisStore) -> None:
    for bot, user, phase in [
        ("shop-bot", "Alice_1", Phase.ACTIVE),
        ("shop-bot", "bob", Phase.FAILED),
        ("news-bot", "alice2", Phase.INACTIVE),
        ("news-bot", "aliceX1", Phase.ACTIVE),
    ]:
        await sql_store.write(make_state(bot=bot, user=user, phase=phase))

    async def found(search: str | None, phase: Phase | None = None, limit: int = 50) -> set[str]:
        page, _ = await search_sessions(
            sql_store, redis_store, search=search, phase=phase, limit=limit
        )
        return {f"{s.key.bot_id}/{s.key.user_id}" for s in page}

    assert await found("ALICE") == {"shop-bot/Alice_1", "news-bot/alice2", "news-bot/aliceX1"}
    assert await found("e_1") == {"shop-bot/Alice_1"}  # "_" is no wildcard: not aliceX1
    assert await found("shop") == {"shop-bot/Alice_1", "shop-bot/bob"}
    assert await found("alice", Phase.ACTIVE) == {"shop-bot/Alice_1", "news-bot/aliceX1"}
    assert len(await found(None)) == 4
    page, more = await search_sessions(sql_store, redis_store, search="bot", phase=None, limit=3)
    assert len(page) == 3 and more
