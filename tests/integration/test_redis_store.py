"""The Redis store against a real redis-server: contract keys, revisions, heartbeats."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from devstack.redis_server import RedisServer
from sessions.adapters.redis.store import EXPIRY_INDEX, RedisKeys, RedisStore, connect
from sessions.adapters.tasks import stop
from sessions.domain.model import (
    Phase,
    Reason,
    SessionKey,
    SessionState,
    StoreUnavailable,
    Version,
    format_time,
    to_millis,
)
from tests.conftest import eventually, make_state

pytestmark = pytest.mark.integration

T0 = datetime(2031, 5, 17, 10, 30, 0, tzinfo=UTC)
TTL = timedelta(hours=24)


async def test_write_creates_the_contract_keys_exactly(redis_store: RedisStore) -> None:
    state = make_state(last_seen=T0)
    assert await redis_store.write(state, TTL)
    client = redis_store.client
    assert await client.hgetall("session:bot-1:user-1") == {
        "status": "active",
        "lastSeen": "2031-05-17T10:30:00Z",
        "expiresAt": "2031-05-18T10:30:00Z",
        "createdAt": "2031-05-17T10:30:00Z",
        "phoneNumber": "1234567890",
        "displayName": "User Name",
        "sessionId": "session_123",
        "revision": "1",
        "incarnation": "0",
        "reason": "",
        "ttlSeconds": "86400",
    }
    assert await client.get("session:status:bot-1:user-1") == "active"
    assert await client.get("session:expiry:bot-1:user-1") == "2031-05-18T10:30:00Z"
    expire_ms = to_millis(T0 + TTL)
    for key in (
        "session:bot-1:user-1",
        "session:status:bot-1:user-1",
        "session:expiry:bot-1:user-1",
    ):
        assert await client.pexpiretime(key) == expire_ms
    assert await client.zscore(EXPIRY_INDEX, "bot-1:user-1") == expire_ms
    assert await client.zscore("botsession:bot:bot-1", "user-1") == to_millis(T0)
    assert sorted(await client.keys("session:*")) == [
        "session:bot-1:user-1",
        "session:expiry:bot-1:user-1",
        "session:status:bot-1:user-1",
    ]


async def test_round_trip(redis_store: RedisStore) -> None:
    state = make_state(last_seen=T0, phase=Phase.INACTIVE, reason=Reason.LOGGED_OUT, revision=4)
    await redis_store.write(state, TTL)
    assert await redis_store.get(state.key) == state
    assert await redis_store.get(SessionKey("bot-1", "nobody")) is None


async def test_an_older_revision_is_ignored(redis_store: RedisStore) -> None:
    await redis_store.write(make_state(phase=Phase.ACTIVE, revision=3, last_seen=T0), TTL)
    assert not await redis_store.write(
        make_state(phase=Phase.CONNECTING, revision=2, last_seen=T0), TTL
    )
    stored = await redis_store.get(SessionKey("bot-1", "user-1"))
    assert stored is not None and (stored.phase, stored.revision) == (Phase.ACTIVE, 3)
    assert await redis_store.write(make_state(phase=Phase.INACTIVE, revision=4, last_seen=T0), TTL)


async def test_last_seen_never_moves_backwards(redis_store: RedisStore) -> None:
    await redis_store.write(make_state(revision=1, last_seen=T0), TTL)
    await redis_store.heartbeat(SessionKey("bot-1", "user-1"), T0 + timedelta(minutes=5))
    # the controller re-writes the same revision from its coarser copy
    await redis_store.write(make_state(revision=1, last_seen=T0), TTL)
    stored = await redis_store.get(SessionKey("bot-1", "user-1"))
    assert stored is not None and stored.last_seen == T0 + timedelta(minutes=5)
    assert stored.created_at == T0


async def test_heartbeat_refreshes_ttls_and_index_but_not_the_phase(
    redis_store: RedisStore,
) -> None:
    key = SessionKey("bot-1", "user-1")
    await redis_store.write(
        make_state(phase=Phase.CONNECTING, last_seen=T0, ttl=timedelta(minutes=10)),
        timedelta(minutes=10),
    )
    later = T0 + timedelta(minutes=7)
    beat = await redis_store.heartbeat(key, later)
    assert beat is not None
    assert (beat.phase, beat.last_seen, beat.expires_at) == (
        Phase.CONNECTING,
        later,
        later + timedelta(minutes=10),
    )
    new_expiry = to_millis(later + timedelta(minutes=10))
    client = redis_store.client
    assert await client.pexpiretime("session:bot-1:user-1") == new_expiry
    assert await client.pexpiretime("session:status:bot-1:user-1") == new_expiry
    assert await client.get("session:expiry:bot-1:user-1") == format_time(
        later + timedelta(minutes=10)
    )
    assert await client.zscore(EXPIRY_INDEX, "bot-1:user-1") == new_expiry
    assert await client.hget("session:bot-1:user-1", "status") == "connecting"


async def test_heartbeat_of_an_unknown_session_is_not_found(redis_store: RedisStore) -> None:
    assert await redis_store.heartbeat(SessionKey("bot-1", "ghost"), T0) is None
    assert await redis_store.client.keys("*") == []


async def test_heartbeat_does_not_revive_an_inactive_session(redis_store: RedisStore) -> None:
    await redis_store.write(make_state(phase=Phase.INACTIVE, last_seen=T0), TTL)
    beat = await redis_store.heartbeat(SessionKey("bot-1", "user-1"), T0 + timedelta(hours=1))
    assert beat is not None and beat.phase is Phase.INACTIVE and beat.last_seen == T0


@pytest.mark.parametrize(
    "moment",
    [
        "1970-01-01T00:00:00Z",
        "2000-02-29T23:59:59Z",
        "2024-12-31T12:00:01Z",
        "2025-01-01T00:00:00Z",
        "2100-03-01T00:00:00Z",
        "2038-01-19T03:14:08Z",
    ],
)
async def test_lua_time_format_matches_python(redis_store: RedisStore, moment: str) -> None:
    seen = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    expires = datetime(2200, 1, 1, tzinfo=UTC)  # in the future, or Redis drops the keys
    await redis_store.write(make_state(last_seen=seen), expires - seen)
    fields = await redis_store.client.hgetall("session:bot-1:user-1")
    assert fields["lastSeen"] == moment
    assert fields["expiresAt"] == format_time(expires) == "2200-01-01T00:00:00Z"


async def test_remove_deletes_keys_and_index_entries(redis_store: RedisStore) -> None:
    await redis_store.write(make_state(last_seen=T0), TTL)
    await redis_store.write(make_state(user="user-2", last_seen=T0), TTL)
    assert await redis_store.remove(SessionKey("bot-1", "user-1")) == 3
    assert await redis_store.remove(SessionKey("bot-1", "user-1")) == 0
    assert await redis_store.get(SessionKey("bot-1", "user-2")) is not None
    assert await redis_store.client.zrange("botsession:bot:bot-1", 0, -1) == ["user-2"]
    assert await redis_store.client.zrange(EXPIRY_INDEX, 0, -1) == ["bot-1:user-2"]


async def test_most_recent_and_get_many(redis_store: RedisStore) -> None:
    await redis_store.write(make_state(user="old", last_seen=T0), TTL)
    newer = make_state(user="new", last_seen=T0 + timedelta(seconds=5), phase=Phase.FAILED)
    await redis_store.write(newer, TTL)
    assert await redis_store.most_recent("bot-1") == newer
    assert await redis_store.most_recent("bot-2") is None
    await redis_store.client.delete("session:bot-1:new")  # expired, the index not yet swept
    assert await redis_store.most_recent("bot-1") is None
    got = await redis_store.get_many([SessionKey("bot-1", "old"), SessionKey("bot-1", "x")])
    assert got[0] is not None and got[0].key.user_id == "old" and got[1] is None


async def test_no_operation_scans_the_keyspace(redis_store: RedisStore) -> None:
    await redis_store.client.config_resetstat()
    await redis_store.write(make_state(last_seen=T0), TTL)
    await redis_store.heartbeat(SessionKey("bot-1", "user-1"), T0)
    await redis_store.get(SessionKey("bot-1", "user-1"))
    await redis_store.most_recent("bot-1")
    await redis_store.sweep_due(T0, 10)
    await redis_store.remove(SessionKey("bot-1", "user-1"))
    stats = await redis_store.client.info("commandstats")
    assert {"cmdstat_scan", "cmdstat_keys"}.isdisjoint(stats)
    assert "cmdstat_evalsha" in stats or "cmdstat_eval" in stats


async def test_a_stopped_server_raises_a_clear_error() -> None:
    with RedisServer() as server:
        store = RedisStore(connect(server.url, retries=2, timeout=timedelta(seconds=1)))
        await store.write(make_state(last_seen=T0), TTL)
        server.stop()
        with pytest.raises(StoreUnavailable, match="redis is unavailable"):
            await store.get(SessionKey("bot-1", "user-1"))
        # skipped now without waiting, until the background probe reaches it again
        with pytest.raises(StoreUnavailable, match="skipped"):
            await store.get(SessionKey("bot-1", "user-1"))
        server.start()  # same port, empty: the client reconnects by itself
        await eventually(lambda: guard_closed(store), timeout=10)
        assert await store.get(SessionKey("bot-1", "user-1")) is None
        await store.close()


async def guard_closed(store: RedisStore) -> bool:
    return not store.guard.is_open


# --- reads issued together go out as one pipeline (sessions.adapters.redis.batching) ---


async def test_reads_issued_together_share_one_pipeline(redis_store: RedisStore) -> None:
    states = [make_state(user=f"user-{i}", last_seen=T0 + timedelta(seconds=i)) for i in range(40)]
    for state in states:
        await redis_store.write(state, TTL)
    await redis_store.client.config_resetstat()
    batches, commands = redis_store.reads.batches, redis_store.reads.commands

    keys = [s.key for s in states] + [SessionKey("bot-1", "nobody")]
    got = await asyncio.gather(*(redis_store.get(key) for key in keys))

    assert got == [*states, None]
    assert redis_store.reads.commands - commands == 41
    assert redis_store.reads.batches - batches == 1
    stats = await redis_store.client.info("commandstats")
    assert stats["cmdstat_hgetall"]["calls"] == 41


async def test_a_read_alone_is_a_plain_command(redis_store: RedisStore) -> None:
    await redis_store.write(make_state(last_seen=T0), TTL)
    before = redis_store.reads.batches
    assert await redis_store.get(SessionKey("bot-1", "user-1")) is not None
    assert await redis_store.most_recent("bot-1") is not None
    assert redis_store.reads.batches - before == 2


async def test_a_failing_read_fails_only_itself(redis_store: RedisStore) -> None:
    await redis_store.write(make_state(last_seen=T0), TTL)
    await redis_store.client.set("session:bot-1:not-a-hash", "x")  # HGETALL: WRONGTYPE

    good, bad, missing = await asyncio.gather(
        redis_store.get(SessionKey("bot-1", "user-1")),
        redis_store.get(SessionKey("bot-1", "not-a-hash")),
        redis_store.get(SessionKey("bot-1", "nobody")),
        return_exceptions=True,
    )

    assert isinstance(good, SessionState) and good.key.user_id == "user-1"
    assert isinstance(bad, StoreUnavailable) and "WRONGTYPE" in str(bad)
    assert missing is None


async def test_a_caller_that_goes_away_leaves_the_others_their_answers(
    redis_store: RedisStore,
) -> None:
    await redis_store.write(make_state(last_seen=T0), TTL)
    key = SessionKey("bot-1", "user-1")
    leaving = asyncio.ensure_future(redis_store.get(key))
    staying = asyncio.ensure_future(redis_store.get(key))
    await asyncio.sleep(0)  # both queued, the batch not yet answered
    leaving.cancel()
    assert (await staying) is not None
    assert leaving.cancelled()


async def test_a_stopped_server_fails_every_read_of_the_batch() -> None:
    with RedisServer() as server:
        store = RedisStore(connect(server.url, retries=1, timeout=timedelta(seconds=1)))
        await store.write(make_state(last_seen=T0), TTL)
        server.stop()
        answers = await asyncio.gather(
            *(store.get(SessionKey("bot-1", f"user-{i}")) for i in range(5)),
            store.most_recent("bot-1"),
            return_exceptions=True,
        )
        assert all(isinstance(a, StoreUnavailable) for a in answers), answers
        server.start()
        await eventually(lambda: guard_closed(store), timeout=10)
        again = await asyncio.gather(
            store.get(SessionKey("bot-1", "user-1")), store.get(SessionKey("bot-1", "user-2"))
        )
        assert list(again) == [None, None]
        await store.close()


async def test_most_recent_loads_its_script_when_redis_lost_it(redis_store: RedisStore) -> None:
    state = make_state(last_seen=T0)
    await redis_store.write(state, TTL)
    await redis_store.client.script_flush()  # as after a restart or a failover
    found = await asyncio.gather(redis_store.most_recent("bot-1"), redis_store.most_recent("bot-1"))
    assert list(found) == [state, state]


async def test_ttl_seconds_is_written_as_plain_decimal(redis_store: RedisStore) -> None:
    """14 days is 1209600 in the contract hash, never 1.2096e+06; a sub-second TTL (tests)
    keeps its fraction."""
    await redis_store.write(make_state(user="long", last_seen=T0), timedelta(days=14))
    await redis_store.write(make_state(user="short", last_seen=T0), timedelta(seconds=0.4))
    client = redis_store.client
    assert await client.hget("session:bot-1:long", "ttlSeconds") == "1209600"
    assert await client.hget("session:bot-1:short", "ttlSeconds") == "0.4"


async def test_a_new_incarnation_replaces_an_older_one_whatever_the_revisions(
    redis_store: RedisStore,
) -> None:
    old = replace(make_state(revision=9, last_seen=T0), incarnation=1000)
    new = replace(make_state(revision=1, last_seen=T0), incarnation=2000)
    assert await redis_store.write(old, TTL)
    assert await redis_store.write(new, TTL)
    held = await redis_store.get(new.key)
    assert held is not None and held.version == Version(2000, 1)
    # the last incarnation's writers are older now, whatever their revision
    assert not await redis_store.write(replace(old, revision=10), TTL)
    held = await redis_store.get(new.key)
    assert held is not None and held.version == Version(2000, 1)


async def test_a_removal_leaves_a_tombstone_no_older_write_gets_past(
    redis_store: RedisStore,
) -> None:
    state = replace(make_state(revision=3, last_seen=T0), incarnation=1000)
    assert await redis_store.write(state, TTL)
    assert await redis_store.remove(state.key) == 3
    tombstone = f"botsession:removed:{state.key}"
    assert await redis_store.client.get(tombstone) == "1000:3"
    assert 0 < await redis_store.client.pttl(tombstone) <= 3600 * 1000
    for stale in (state, replace(state, revision=2), replace(state, incarnation=999, revision=7)):
        assert not await redis_store.write(stale, TTL)
    assert await redis_store.get(state.key) is None
    # a floor above what Redis held (the BotSession moved on) raises the tombstone
    assert await redis_store.remove(state.key, Version(1000, 5)) == 0
    assert await redis_store.client.get(tombstone) == "1000:5"
    # what comes after the removal is written: the next revision, or a new incarnation
    assert await redis_store.write(replace(state, revision=6), TTL)
    assert await redis_store.write(replace(state, incarnation=2000, revision=1), TTL)


async def test_two_installations_with_their_own_prefixes_share_one_redis(
    redis_store: RedisStore,
) -> None:
    """Their indexes, tombstones and leases are apart; only the contract's session:* keys
    (fixed by the requirements) are common, so they must not serve the same bot and user."""
    other = RedisStore(redis_store.client, keys=RedisKeys("tenant-b:"))
    mine, theirs = make_state(user="a", last_seen=T0), make_state(user="b", last_seen=T0)
    assert await redis_store.write(mine, TTL)
    assert await other.write(theirs, TTL)
    client = redis_store.client
    assert await client.zrange("botsession:expiry", 0, -1) == ["bot-1:a"]
    assert await client.zrange("tenant-b:expiry", 0, -1) == ["bot-1:b"]
    assert [s.member for s in await other.sweep_due(T0 + 2 * TTL, 100)] == ["bot-1:b"]
    assert await client.exists("tenant-b:removed:bot-1:b") == 1
    assert await redis_store.get(mine.key) is not None  # the other's sweep left mine alone
    assert (await redis_store.most_recent("bot-1"), await other.most_recent("bot-1")) == (
        mine,
        None,
    )
    assert other.keys.lease("housekeeping") == "tenant-b:lock:housekeeping"
    with pytest.raises(ValueError, match="key prefix"):
        RedisKeys("session:")


async def test_a_loop_of_redis_calls_always_stops(redis_store: RedisStore) -> None:
    """redis-py swallows a cancellation that lands early in a command now and then (it did
    a few times in thirty here, on PING); sessions.adapters.tasks.stop cancels again. Each
    trial cancels a loop of calls within its first half millisecond."""

    async def loop() -> None:
        while True:
            await redis_store.ping()
            await asyncio.sleep(0.2)

    for trial in range(60):
        task = asyncio.create_task(loop())
        await asyncio.sleep(trial % 6 * 0.0001)
        await asyncio.wait_for(stop(task), timeout=2)


async def test_a_new_version_wants_a_sync_until_the_operator_marks_it(
    redis_store: RedisStore,
) -> None:
    key = SessionKey("bot-1", "user-1")
    await redis_store.write(make_state(revision=1, last_seen=T0), TTL)
    await redis_store.write(make_state(revision=1, last_seen=T0), TTL)  # the same: nothing new
    assert await redis_store.sync_wanted(10) == [key]
    await redis_store.write(make_state(revision=2, last_seen=T0), TTL)
    await redis_store.sync_done(key, Version(0, 1))  # an older sync: 2 still wants one
    assert await redis_store.sync_wanted(10) == [key]
    await redis_store.sync_done(key, Version(0, 2))
    assert await redis_store.sync_wanted(10) == []
    await redis_store.write(make_state(revision=3, last_seen=T0), TTL)
    await redis_store.sync_done(key, None)  # its BotSession is gone
    assert await redis_store.sync_wanted(10) == []
    await redis_store.write(make_state(revision=4, last_seen=T0), TTL, restore=True)
    assert await redis_store.sync_wanted(10) == []  # a restore of what the BotSession says
