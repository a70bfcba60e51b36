"""Heartbeat-loss detection (issue 21, item 1) on a real redis-server and database, with the
BotSessions in memory and on the real API server: deadlines in Redis, the atomic claim, the
transition to inactive (HeartbeatLost), and the races with a late heartbeat or report.
The operator's loop doing it on its own is in test_operator."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sessions.adapters.redis.store import RedisStore
from sessions.adapters.sql.store import SqlStore
from sessions.domain.model import (
    Phase,
    Reason,
    ReportedState,
    SessionInactive,
    SessionKey,
)
from sessions.usecases.liveness import BEACON_INTERVAL, detect_lost_heartbeats, say_api_serves
from sessions.usecases.service import SessionService
from tests.conftest import make_state
from tests.fakes import Clock

pytestmark = pytest.mark.integration

T0 = datetime(2031, 5, 17, 10, 30, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
TIMEOUT = timedelta(minutes=3)  # BOTSESSION_HEARTBEAT_TIMEOUT's default
KEY = SessionKey("bot-1", "user-1")


# --- deadlines in Redis -------------------------------------------------------------------


async def test_only_a_heartbeat_of_an_active_session_sets_a_deadline(
    redis_store: RedisStore,
) -> None:
    await redis_store.write(make_state(phase=Phase.CONNECTING, last_seen=T0), TTL)
    await redis_store.heartbeat(KEY, T0 + timedelta(seconds=5), TIMEOUT)
    assert await redis_store.heartbeat_deadline(KEY) is None  # connecting: the connect timeout

    await redis_store.write(make_state(revision=2, last_seen=T0), TTL)
    await redis_store.heartbeat(KEY, T0 + timedelta(seconds=10), TIMEOUT, arm=False)
    assert await redis_store.heartbeat_deadline(KEY) is None  # a report is not a heartbeat

    await redis_store.heartbeat(KEY, T0 + timedelta(seconds=20), TIMEOUT)
    assert await redis_store.heartbeat_deadline(KEY) == T0 + timedelta(seconds=20) + TIMEOUT
    await redis_store.heartbeat(KEY, T0 + timedelta(seconds=30), TIMEOUT, arm=False)
    assert await redis_store.heartbeat_deadline(KEY) == T0 + timedelta(seconds=30) + TIMEOUT
    assert await redis_store.heartbeat_deadline_count() == 1


async def test_a_session_s_own_timeout_wins_and_zero_means_never(
    redis_store: RedisStore,
) -> None:
    await redis_store.write(replace(make_state(last_seen=T0), heartbeat_timeout_seconds=30), TTL)
    await redis_store.heartbeat(KEY, T0, TIMEOUT)
    assert await redis_store.heartbeat_deadline(KEY) == T0 + timedelta(seconds=30)
    assert (await redis_store.get(KEY)).heartbeat_timeout_seconds == 30  # type: ignore[union-attr]

    never = replace(make_state(user="never", last_seen=T0), heartbeat_timeout_seconds=0)
    await redis_store.write(never, TTL)
    await redis_store.heartbeat(never.key, T0, TIMEOUT)
    assert await redis_store.heartbeat_deadline(never.key) is None

    plain = make_state(user="plain", last_seen=T0)
    await redis_store.write(plain, TTL)
    await redis_store.heartbeat(plain.key, T0, timedelta(0))  # the configured timeout is off
    assert await redis_store.heartbeat_deadline(plain.key) is None


async def test_a_session_that_leaves_active_or_is_removed_loses_its_deadline(
    redis_store: RedisStore,
) -> None:
    for user in ("left", "removed", "swept"):
        await redis_store.write(make_state(user=user, last_seen=T0), TTL)
        await redis_store.heartbeat(SessionKey("bot-1", user), T0, TIMEOUT)
    assert await redis_store.heartbeat_deadline_count() == 3

    await redis_store.write(make_state(user="left", phase=Phase.INACTIVE, revision=2), TTL)
    await redis_store.remove(SessionKey("bot-1", "removed"))
    await redis_store.sweep_due(T0 + 2 * TTL, 100)
    assert await redis_store.heartbeat_deadline_count() == 0


async def test_the_claim_takes_what_is_past_its_deadline_once(redis_store: RedisStore) -> None:
    for user, beat in (("silent", T0), ("alive", T0 + timedelta(minutes=2))):
        await redis_store.write(make_state(user=user, last_seen=T0), TTL)
        await redis_store.heartbeat(SessionKey("bot-1", user), beat, TIMEOUT)

    claimed = await redis_store.claim_heartbeat_lost(T0 + TIMEOUT, 100)
    assert [(c.member, c.phase, c.last_seen, c.revision) for c in claimed] == [
        ("bot-1:silent", Phase.ACTIVE, T0, 1)
    ]
    assert await redis_store.claim_heartbeat_lost(T0 + TIMEOUT, 100) == []
    assert await redis_store.heartbeat_deadline(SessionKey("bot-1", "silent")) is None
    assert await redis_store.heartbeat_deadline(SessionKey("bot-1", "alive")) is not None


async def test_a_heartbeat_just_before_the_claim_wins(redis_store: RedisStore) -> None:
    await redis_store.write(make_state(last_seen=T0), TTL)
    await redis_store.heartbeat(KEY, T0, TIMEOUT)
    await redis_store.heartbeat(KEY, T0 + TIMEOUT - timedelta(seconds=1), TIMEOUT)  # the late one
    assert await redis_store.claim_heartbeat_lost(T0 + TIMEOUT, 100) == []


async def test_the_claim_drops_deadlines_of_sessions_no_longer_active(
    redis_store: RedisStore,
) -> None:
    """A deadline left behind (Redis dropped the hash itself at its TTL) is dropped, not
    claimed: there is no active session to make inactive."""
    await redis_store.write(make_state(last_seen=T0), TTL)
    await redis_store.heartbeat(KEY, T0, TIMEOUT)
    await redis_store.client.delete("session:bot-1:user-1")
    assert await redis_store.claim_heartbeat_lost(T0 + TIMEOUT, 100) == []
    assert await redis_store.heartbeat_deadline_count() == 0


# --- the transition ---------------------------------------------------------------------


async def test_a_bot_that_heartbeats_and_goes_silent_becomes_inactive(
    service: SessionService, clock: Clock, sql_store: SqlStore
) -> None:
    await service.report(KEY, ReportedState.CONNECTED)
    clock.advance(seconds=30)
    await service.heartbeat(KEY)
    last_beat = service.now()

    clock.advance(seconds=TIMEOUT.total_seconds() - 1)
    assert (await detect_lost_heartbeats(service, service.redis)).claimed == 0
    clock.advance(seconds=1)
    found = await detect_lost_heartbeats(service, service.redis)

    assert [(e.from_phase, e.to_phase, e.reason, e.actor) for e in found.lost] == [
        (Phase.ACTIVE, Phase.INACTIVE, Reason.HEARTBEAT_LOST, "liveness")
    ]
    record = await service.botsessions.get(KEY)
    assert record is not None
    assert (record.phase, record.reason, record.last_seen) == (
        Phase.INACTIVE,
        Reason.HEARTBEAT_LOST,
        last_beat,
    )
    in_redis = await service.redis.get(KEY)
    assert in_redis is not None
    assert (in_redis.phase, in_redis.reason, in_redis.revision) == (
        Phase.INACTIVE,
        Reason.HEARTBEAT_LOST,
        record.revision,
    )
    assert (await sql_store.history(KEY))[0].reason is Reason.HEARTBEAT_LOST
    with pytest.raises(SessionInactive):  # the zombie is told to report `connecting`
        await service.heartbeat(KEY)
    back = await service.report(KEY, ReportedState.CONNECTING)
    assert back.state.phase is Phase.CONNECTING


async def test_a_bot_that_only_reports_is_never_timed_out(
    service: SessionService, clock: Clock
) -> None:
    await service.report(KEY, ReportedState.CONNECTED)
    clock.advance(minutes=10)
    await service.report(KEY, ReportedState.CONNECTED)  # the current phase: lastSeen only
    clock.advance(hours=2)
    assert (await detect_lost_heartbeats(service, service.redis)).claimed == 0
    record = await service.botsessions.get(KEY)
    assert record is not None and record.phase is Phase.ACTIVE


async def test_a_heartbeat_after_the_claim_keeps_the_session_active(
    service: SessionService, clock: Clock
) -> None:
    """The interleaving injected: the claim, then a heartbeat, then the compare-and-swap."""
    await service.report(KEY, ReportedState.CONNECTED)
    await service.heartbeat(KEY)
    clock.advance(minutes=4)
    claimed = await service.redis.claim_heartbeat_lost(service.now(), 10)
    assert [c.key for c in claimed] == [KEY]

    await service.heartbeat(KEY)
    assert await service.lose_heartbeat(claimed[0]) == []
    record = await service.botsessions.get(KEY)
    assert record is not None and record.phase is Phase.ACTIVE
    assert await service.redis.heartbeat_deadline(KEY) == service.now() + TIMEOUT


async def test_a_report_after_the_claim_wins(service: SessionService, clock: Clock) -> None:
    await service.report(KEY, ReportedState.CONNECTED)
    await service.heartbeat(KEY)
    clock.advance(minutes=4)
    claimed = await service.redis.claim_heartbeat_lost(service.now(), 10)

    await service.report(KEY, ReportedState.CONNECTING)  # restarted: inactive, connecting
    assert await service.lose_heartbeat(claimed[0]) == []
    record = await service.botsessions.get(KEY)
    assert record is not None
    assert (record.phase, record.reason) == (Phase.CONNECTING, Reason.RECONNECTING)


async def test_the_report_that_creates_a_session_sets_its_timeout(
    service: SessionService, clock: Clock
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, heartbeat_timeout_seconds=20)
    await service.report(KEY, ReportedState.CONNECTED, heartbeat_timeout_seconds=600)  # ignored
    record = await service.botsessions.get(KEY)
    assert record is not None and record.heartbeat_timeout_seconds == 20
    await service.heartbeat(KEY)
    assert await service.redis.heartbeat_deadline(KEY) == service.now() + timedelta(seconds=20)

    clock.advance(seconds=20)
    found = await detect_lost_heartbeats(service, service.redis)
    assert [e.reason for e in found.lost] == [Reason.HEARTBEAT_LOST]


async def test_a_pass_works_through_more_than_one_batch(
    service: SessionService, clock: Clock
) -> None:
    keys = [SessionKey("bot-many", f"user-{i}") for i in range(7)]
    for key in keys:
        await service.report(key, ReportedState.CONNECTED)
        await service.heartbeat(key)
    clock.advance(minutes=4)
    first = await detect_lost_heartbeats(service, service.redis, limit=5, concurrency=2)
    second = await detect_lost_heartbeats(service, service.redis, limit=5, concurrency=2)
    assert (first.claimed, len(first.lost), second.claimed, len(second.lost)) == (5, 5, 2, 2)
    assert {e.key for e in first.lost + second.lost} == set(keys)


# --- silence proves nothing while bots could not be heard ------------------------------


async def api_serves_for(service: SessionService, clock: Clock, seconds: float) -> None:
    """An API replica up for that long, saying so every BEACON_INTERVAL as it does."""
    step = BEACON_INTERVAL.total_seconds()
    while seconds > 0:
        clock.advance(seconds=min(step, seconds))
        seconds -= step
        await say_api_serves(service, service.redis)


async def test_no_api_for_a_while_holds_the_detection_one_timeout(
    service: SessionService, clock: Clock
) -> None:
    """Every API replica gone (or cut off from Redis) for longer than BEACON_STALE: the
    deadlines passed meanwhile, but the bots had nowhere to heartbeat. Nothing is taken
    for lost until one default timeout after an API replica is back."""
    await say_api_serves(service, service.redis)
    await service.report(KEY, ReportedState.CONNECTED)
    await service.heartbeat(KEY)

    clock.advance(minutes=10)  # no API replica says a word: the API is down
    paused = await detect_lost_heartbeats(service, service.redis)
    assert paused.claimed == 0 and paused.paused is not None
    assert "no API replica" in paused.paused

    held = await say_api_serves(service, service.redis)  # back
    assert held == service.now() + TIMEOUT
    await api_serves_for(service, clock, TIMEOUT.total_seconds() - 1)
    still = await detect_lost_heartbeats(service, service.redis)
    assert still.claimed == 0 and still.paused is not None and "held until" in still.paused

    await api_serves_for(service, clock, 1)  # a whole timeout, no heartbeat: now it is lost
    found = await detect_lost_heartbeats(service, service.redis)
    assert found.paused is None
    assert [e.reason for e in found.lost] == [Reason.HEARTBEAT_LOST]


async def test_a_bot_that_heartbeats_within_the_hold_stays_active(
    service: SessionService, clock: Clock
) -> None:
    await say_api_serves(service, service.redis)
    await service.report(KEY, ReportedState.CONNECTED)
    await service.heartbeat(KEY)
    clock.advance(minutes=10)
    await say_api_serves(service, service.redis)
    await api_serves_for(service, clock, 30)
    await service.heartbeat(KEY)  # the bot reaches the API again
    await api_serves_for(service, clock, TIMEOUT.total_seconds() - 30)  # the hold ends
    after = await detect_lost_heartbeats(service, service.redis)
    assert (after.paused, after.claimed) == (None, 0)
    record = await service.botsessions.get(KEY)
    assert record is not None and record.phase is Phase.ACTIVE


async def test_replicas_that_keep_saying_they_serve_set_no_hold(
    service: SessionService, clock: Clock
) -> None:
    for _ in range(5):
        assert await say_api_serves(service, service.redis) is None
        clock.advance(seconds=5)
    assert await service.redis.heartbeat_signal() == (service.now() - timedelta(seconds=5), None)
