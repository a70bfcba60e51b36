"""The expiry sweep on a real redis-server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from sessions.adapters.redis.store import EXPIRY_INDEX, RedisStore
from sessions.domain.model import Phase, SessionKey, utcnow
from sessions.usecases.sweep import DROPPED, sweep
from tests.conftest import make_state

pytestmark = pytest.mark.integration

NOW = datetime(2031, 5, 17, 12, 0, 0, tzinfo=UTC)
TTL = timedelta(hours=24)


async def populate(store: RedisStore) -> dict[str, set[str]]:
    """live, expired, inactive and 'gone' (data lost, index entry left) sessions."""
    groups: dict[str, set[str]] = {
        "live": set(),
        "expired": set(),
        "inactive": set(),
        "gone": set(),
    }
    for i in range(40):
        user = f"live-{i}"
        await store.write(make_state(user=user, last_seen=NOW - timedelta(hours=23)), TTL)
        groups["live"].add(user)
    for i in range(30):
        user = f"expired-{i}"
        # written while still valid (Redis would drop past-due keys itself at once)
        await store.write(
            make_state(user=user, last_seen=NOW - timedelta(hours=25)), TTL + timedelta(days=3650)
        )
        await store.client.zadd(EXPIRY_INDEX, {f"bot-1:{user}": 1})  # due long ago
        groups["expired"].add(user)
    for i in range(20):
        user = f"inactive-{i}"
        await store.write(make_state(user=user, phase=Phase.INACTIVE, last_seen=NOW), TTL)
        groups["inactive"].add(user)
    for i in range(10):
        user = f"gone-{i}"
        await store.write(
            make_state(user=user, last_seen=NOW - timedelta(hours=25)), TTL + timedelta(days=3650)
        )
        await store.client.delete(f"session:bot-1:{user}")  # as if Redis evicted it
        await store.client.zadd(EXPIRY_INDEX, {f"bot-1:{user}": 2})
        groups["gone"].add(user)
    return groups


async def test_sweep_removes_expired_inactive_and_lost_sessions_only(
    redis_store: RedisStore,
) -> None:
    groups = await populate(redis_store)
    result = await sweep(redis_store, batch_size=7, now=NOW)
    removed = {(s.key.user_id, s.why) for s in result.removed}
    assert removed == (
        {(u, "expired") for u in groups["expired"]}
        | {(u, "inactive") for u in groups["inactive"]}
        | {(u, "gone") for u in groups["gone"]}
    )
    assert result.batches >= 60 // 7
    for user in groups["live"]:
        assert await redis_store.get(SessionKey("bot-1", user)) is not None
    remaining = await redis_store.client.keys("session:*")
    assert len(remaining) == 3 * len(groups["live"])
    assert await redis_store.live_count() == len(groups["live"])
    assert set(await redis_store.client.zrange("botsession:bot:bot-1", 0, -1)) == groups["live"]


async def test_sweep_reports_what_it_removed(redis_store: RedisStore) -> None:
    await redis_store.write(
        make_state(user="a", revision=7, phase=Phase.INACTIVE, last_seen=NOW), TTL
    )
    (swept,) = (await sweep(redis_store, now=NOW)).removed
    assert (swept.key, swept.why, swept.phase, swept.last_seen, swept.revision) == (
        SessionKey("bot-1", "a"),
        "inactive",
        Phase.INACTIVE,
        NOW,
        7,
    )


async def test_a_second_sweep_finds_nothing(redis_store: RedisStore) -> None:
    await populate(redis_store)
    assert (await sweep(redis_store, now=NOW)).removed
    again = await sweep(redis_store, now=NOW)
    assert again.removed == [] and again.batches == 0


async def test_two_sweepers_at_once_remove_each_session_exactly_once(
    redis_store: RedisStore,
) -> None:
    groups = await populate(redis_store)
    results = await asyncio.gather(*(sweep(redis_store, batch_size=5, now=NOW) for _ in range(2)))
    first = [s.key.user_id for s in results[0].removed]
    second = [s.key.user_id for s in results[1].removed]
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == sorted(groups["expired"] | groups["inactive"] | groups["gone"])


async def test_heartbeats_racing_sweeps_never_lose_a_live_session(redis_store: RedisStore) -> None:
    """Live sessions heartbeat every 50 ms with a 2 s TTL while two sweepers run back to
    back for 5 s; abandoned sessions must go, live ones must all stay. (The TTL leaves room
    for a loaded CI machine: a heartbeat round of 100 calls shares the loop with the
    sweepers, and a round slower than the TTL would lose a session to Redis itself.)"""
    ttl = timedelta(seconds=2)
    live = [SessionKey("bot-1", f"live-{i}") for i in range(100)]
    dead = [SessionKey("bot-2", f"dead-{i}") for i in range(100)]
    for key in live + dead:
        await redis_store.write(make_state(key.bot_id, key.user_id, last_seen=utcnow()), ttl)
    stop = time.monotonic() + 5.0
    lost: list[SessionKey] = []
    swept_live: list[SessionKey] = []

    async def heartbeats() -> None:
        while time.monotonic() < stop:
            for key in live:
                if await redis_store.heartbeat(key, utcnow()) is None:
                    lost.append(key)
            await asyncio.sleep(0.05)

    async def sweeper() -> int:
        runs = 0
        while time.monotonic() < stop:
            result = await sweep(redis_store, batch_size=20)
            swept_live.extend(s.key for s in result.removed if s.key.bot_id == "bot-1")
            runs += 1
            await asyncio.sleep(0)
        return runs

    _, runs_a, runs_b = await asyncio.gather(heartbeats(), sweeper(), sweeper())
    assert runs_a > 10 and runs_b > 10
    assert swept_live == [] and lost == []
    for key in live:
        assert await redis_store.get(key) is not None
    # the abandoned ones are gone from the index and the contract keys
    assert await redis_store.client.keys("session:bot-2:*") == []
    assert sorted(await redis_store.client.zrange(EXPIRY_INDEX, 0, -1)) == sorted(
        f"bot-1:live-{i}" for i in range(100)
    )


@pytest.mark.parametrize("level", ["INFO", "WARNING"])  # with and without per-removal lines
async def test_a_malformed_index_entry_is_dropped_and_does_not_stop_the_sweep(
    redis_store: RedisStore, caplog: pytest.LogCaptureFixture, level: str
) -> None:
    """Something else wrote a member that is not <botId>:<userId> into the expiry index
    (ranked first, so it comes before the real sessions): the sweep drops the entry, warns,
    touches no other key, and removes the real due sessions as usual."""
    await redis_store.client.zadd(EXPIRY_INDEX, {"stray-4915112345678": 0})
    await redis_store.client.set("session:stray-4915112345678", "not ours")
    await redis_store.write(make_state(user="a", phase=Phase.INACTIVE, last_seen=NOW), TTL)
    with caplog.at_level(level, logger="sessions.usecases.sweep"):
        result = await sweep(redis_store, now=NOW)
    assert [(s.member, s.why) for s in result.removed] == [
        ("stray-4915112345678", "malformed"),
        ("bot-1:a", "inactive"),
    ]
    assert await redis_store.client.zscore(EXPIRY_INDEX, "stray-4915112345678") is None
    assert await redis_store.client.get("session:stray-4915112345678") == "not ours"
    dropped = [r for r in caplog.records if r.getMessage() == DROPPED]
    assert [r.fields for r in dropped] == [{"member": "stray-4915112345678"}]  # type: ignore[attr-defined]
    assert (await sweep(redis_store, now=NOW)).removed == []
    assert await redis_store.client.zcard(EXPIRY_INDEX) == 0
