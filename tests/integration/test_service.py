"""The shared use-cases on real Redis and on SQLite and PostgreSQL (each test runs on both).
The BotSession side is the in-memory implementation; the operator issue runs the same
use-cases against the real API server."""

from __future__ import annotations

import itertools
import json
import logging
from datetime import timedelta

import pytest

from devstack.redis_server import RedisServer
from sessions.adapters.redis.store import RedisStore, connect
from sessions.adapters.sql.store import SqlStore
from sessions.domain.model import (
    HistoryEntry,
    Identity,
    InvalidSessionInput,
    Phase,
    Reason,
    ReportedState,
    SessionInactive,
    SessionKey,
    SessionNotFound,
    StoreUnavailable,
    TransitionRefused,
)
from sessions.domain.privacy import user_fingerprint
from sessions.domain.records import BotSessionRecord, BotSessions, DeleteOutcome
from sessions.domain.settings import load_settings
from sessions.usecases.housekeeping import time_out_connecting
from sessions.usecases.service import ClearFlags, SessionService
from sessions.usecases.sweep import sweep
from tests.fakes import Clock, InMemoryBotSessions

pytestmark = pytest.mark.integration

KEY = SessionKey("bot-1", "4915112345678@c.us")
IDENTITY = Identity("4915112345678", "Jane", "session_123")


async def fetch(botsessions: BotSessions, key: SessionKey = KEY) -> BotSessionRecord:
    record = await botsessions.get(key)
    assert record is not None
    return record


async def test_first_report_creates_the_session_everywhere(
    service: SessionService, botsessions: BotSessions, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sessions.usecases.service")
    result = await service.report(
        KEY, ReportedState.CONNECTING, identity=IDENTITY, actor="bot-runner"
    )
    assert result.created
    assert (result.state.phase, result.state.revision) == (Phase.CONNECTING, 1)
    record = await fetch(botsessions)
    assert (record.phase, record.reason, record.revision) == (Phase.CONNECTING, Reason.CREATED, 1)
    redis_state = await service.redis.get(KEY)
    assert redis_state == result.state
    assert await service.sql.get(KEY) == result.state
    (entry,) = await service.sql.history(KEY)
    assert (entry.from_phase, entry.to_phase, entry.reason, entry.actor) == (
        None,
        Phase.CONNECTING,
        Reason.CREATED,
        "bot-runner",
    )
    (line,) = [r for r in caplog.records if r.getMessage() == "session transition"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields == {
        "botId": "bot-1",
        "user": user_fingerprint(KEY.user_id),  # never the userId itself
        "from": None,
        "to": "connecting",
        "reason": "Created",
        "revision": 1,
        "actor": "bot-runner",
        "phoneNumber": "**********678",
    }


async def test_first_report_connected_records_two_transitions(service: SessionService) -> None:
    result = await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    assert [(e.revision, e.to_phase) for e in result.transitions] == [
        (1, Phase.CONNECTING),
        (2, Phase.ACTIVE),
    ]
    assert [e.revision for e in await service.sql.history(KEY)] == [2, 1]
    assert (await service.status("bot-1", KEY.user_id)).state.phase is Phase.ACTIVE


async def test_a_report_of_the_current_phase_only_refreshes_last_seen(
    service: SessionService, botsessions: BotSessions, clock: Clock
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    version = (await fetch(botsessions)).resource_version
    clock.advance(minutes=3)
    result = await service.report(KEY, ReportedState.CONNECTED)
    assert result.transitions == [] and not result.created
    assert (await fetch(botsessions)).resource_version == version
    assert len(await service.sql.history(KEY)) == 2
    stored = await service.redis.get(KEY)
    assert stored is not None and stored.last_seen == clock.now


async def test_a_restarted_bot_records_inactive_then_connecting(service: SessionService) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    result = await service.report(KEY, ReportedState.CONNECTING)
    assert [(e.revision, e.from_phase, e.to_phase, e.reason) for e in result.transitions] == [
        (3, Phase.ACTIVE, Phase.INACTIVE, Reason.RESTARTED),
        (4, Phase.INACTIVE, Phase.CONNECTING, Reason.RECONNECTING),
    ]
    assert len(await service.sql.history(KEY)) == 4


async def test_a_refused_transition_writes_nothing(service: SessionService) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await service.report(KEY, ReportedState.DISCONNECTED, Reason.LOGGED_OUT)
    before = (
        await service.redis.get(KEY),
        await service.sql.get(KEY),
        await service.sql.history(KEY),
    )
    with pytest.raises(TransitionRefused, match="allowed next: connecting"):
        await service.report(KEY, ReportedState.CONNECTED)
    after = (
        await service.redis.get(KEY),
        await service.sql.get(KEY),
        await service.sql.history(KEY),
    )
    assert before == after


async def test_kubernetes_down_writes_nothing(
    memory_service: SessionService, memory_botsessions: InMemoryBotSessions
) -> None:
    service = memory_service
    memory_botsessions.unavailable = True
    with pytest.raises(StoreUnavailable, match="kubernetes"):
        await service.report(KEY, ReportedState.CONNECTING, identity=IDENTITY)
    assert await service.redis.get(KEY) is None
    assert await service.sql.get(KEY) is None


async def test_redis_down_on_report_writes_the_rest_and_says_pending(
    botsessions: BotSessions, sql_store: SqlStore, clock: Clock
) -> None:
    with RedisServer() as server:
        store = RedisStore(connect(server.url, retries=0, timeout=timedelta(seconds=1)))
        service = SessionService(botsessions, store, sql_store, load_settings(), clock)
        server.stop()
        result = await service.report(KEY, ReportedState.CONNECTING, identity=IDENTITY)
        assert result.redis_pending and not result.database_pending
        assert (await fetch(botsessions)).phase is Phase.CONNECTING
        assert await sql_store.get(KEY) == result.state
        # and the status read falls back to the database while Redis is stopped
        view = await service.status("bot-1", KEY.user_id)
        assert (view.source, view.state.phase) == ("database", Phase.CONNECTING)
        await store.close()


async def test_database_down_on_report_says_pending(
    botsessions: BotSessions, redis_store: RedisStore, clock: Clock
) -> None:
    from sessions.adapters.sql.store import create_engine

    dead = SqlStore(create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none"))
    service = SessionService(botsessions, redis_store, dead, load_settings(), clock)
    result = await service.report(KEY, ReportedState.CONNECTING, identity=IDENTITY)
    assert result.database_pending and not result.redis_pending
    assert await redis_store.get(KEY) == result.state
    await dead.close()


def unreachable_database() -> SqlStore:
    from sessions.adapters.sql.store import create_engine

    return SqlStore(create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none"))


async def test_with_the_database_down_too_the_botsession_answers(
    botsessions: BotSessions, redis_store: RedisStore, clock: Clock
) -> None:
    dead = unreachable_database()
    service = SessionService(botsessions, redis_store, dead, load_settings(), clock)
    await service.report(SessionKey("bot-1", "older"), ReportedState.CONNECTING)
    clock.advance(minutes=1)
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await redis_store.client.flushall()  # Redis misses, the database cannot answer

    view = await service.status("bot-1", KEY.user_id)
    assert (view.source, view.state.phase, view.state.identity) == (
        "kubernetes",
        Phase.ACTIVE,
        IDENTITY,
    )
    newest = await service.status("bot-1")
    assert (newest.source, newest.state.key) == ("kubernetes", KEY)
    detail = await service.detail(KEY, history=1)
    assert detail.history_source == "kubernetes"
    assert [(e.to_phase, e.reason) for e in detail.history] == [(Phase.ACTIVE, Reason.CONNECTED)]
    with pytest.raises(SessionNotFound):
        await service.status("bot-1", "nobody")
    with pytest.raises(SessionNotFound):
        await service.status("no-such-bot")
    # Redis answers again (a report of the current phase rewrites what it lost); the
    # history still has to come from the BotSession
    await service.report(KEY, ReportedState.CONNECTED)
    detail = await service.detail(KEY)
    assert (detail.status.source, detail.history_source) == ("redis", "kubernetes")
    assert [e.to_phase for e in detail.history] == [Phase.ACTIVE, Phase.CONNECTING]
    await dead.close()


async def test_with_kubernetes_down_as_well_the_database_error_stands(
    memory_service: SessionService, memory_botsessions: InMemoryBotSessions
) -> None:
    await memory_service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await memory_service.redis.client.flushall()
    dead = unreachable_database()
    service = SessionService(
        memory_botsessions, memory_service.redis, dead, memory_service.settings
    )
    memory_botsessions.unavailable = True
    with pytest.raises(StoreUnavailable, match="database"):
        await service.status("bot-1", KEY.user_id)
    await dead.close()


async def test_status_reads_redis_first_then_the_database(
    service: SessionService, redis_store: RedisStore
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    assert (await service.status("bot-1", KEY.user_id)).source == "redis"
    await redis_store.client.flushall()  # as if swept or lost
    view = await service.status("bot-1", KEY.user_id)
    assert (view.source, view.state.phase, view.state.identity) == (
        "database",
        Phase.ACTIVE,
        IDENTITY,
    )
    with pytest.raises(SessionNotFound):
        await service.status("bot-1", "nobody")
    with pytest.raises(SessionNotFound):
        await service.status("no-such-bot")


async def test_status_without_user_is_the_most_recently_seen(
    service: SessionService, clock: Clock, redis_store: RedisStore
) -> None:
    await service.report(SessionKey("bot-1", "old"), ReportedState.CONNECTING)
    clock.advance(seconds=30)
    await service.report(SessionKey("bot-1", "new"), ReportedState.CONNECTED)
    assert (await service.status("bot-1")).state.key.user_id == "new"
    clock.advance(seconds=30)
    await service.heartbeat(SessionKey("bot-1", "old"))
    assert (await service.status("bot-1")).state.key.user_id == "old"
    await redis_store.client.flushall()
    view = await service.status("bot-1")
    assert (view.source, view.state.key.user_id) == ("database", "new")


async def test_heartbeat_touches_redis_only(
    service: SessionService, clock: Clock, botsessions: BotSessions
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    version, db_row = (await fetch(botsessions)).resource_version, await service.sql.get(KEY)
    clock.advance(minutes=10)
    beat = await service.heartbeat(KEY)
    assert (beat.phase, beat.last_seen) == (Phase.ACTIVE, clock.now)
    assert beat.expires_at == clock.now + timedelta(hours=24)
    assert (await fetch(botsessions)).resource_version == version
    assert await service.sql.get(KEY) == db_row


async def test_heartbeat_restores_a_session_redis_lost(
    service: SessionService, redis_store: RedisStore
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await redis_store.client.flushall()
    beat = await service.heartbeat(KEY)
    assert beat.phase is Phase.ACTIVE
    stored = await redis_store.get(KEY)
    assert stored is not None and stored.identity == IDENTITY and stored.revision == 2


async def test_heartbeat_follows_a_reconnect_whose_redis_write_is_pending(
    service: SessionService, redis_store: RedisStore
) -> None:
    """A report updated the BotSession but its Redis write was lost (Redis still holds
    the older, inactive hash): the next heartbeat is served from the BotSession."""
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await service.report(KEY, ReportedState.DISCONNECTED)
    hash_key = redis_store.keys.hash(KEY)
    inactive, ttl = await redis_store.client.dump(hash_key), await redis_store.client.pttl(hash_key)
    assert inactive is not None
    await service.report(KEY, ReportedState.CONNECTING)
    await redis_store.client.restore(hash_key, ttl, inactive, replace=True)
    beat = await service.heartbeat(KEY)
    assert (beat.phase, beat.revision) == (Phase.CONNECTING, 4)
    stored = await redis_store.get(KEY)
    assert stored is not None and (stored.phase, stored.revision) == (Phase.CONNECTING, 4)


async def test_heartbeat_of_unknown_or_inactive_sessions(service: SessionService) -> None:
    with pytest.raises(SessionNotFound):
        await service.heartbeat(KEY)
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await service.report(KEY, ReportedState.DISCONNECTED)
    with pytest.raises(SessionInactive):
        await service.heartbeat(KEY)


async def test_list_bot_is_paginated_and_filtered(service: SessionService, clock: Clock) -> None:
    for i in range(5):
        clock.advance(seconds=1)
        await service.report(SessionKey("bot-1", f"u{i}"), ReportedState.CONNECTED)
    clock.advance(seconds=1)
    await service.report(SessionKey("bot-1", "u0"), ReportedState.DISCONNECTED)
    page, total = await service.list_bot("bot-1", limit=2)
    assert total == 5 and [s.key.user_id for s in page] == ["u0", "u4"]
    inactive, count = await service.list_bot("bot-1", Phase.INACTIVE)
    assert count == 1 and inactive[0].key.user_id == "u0"
    with pytest.raises(InvalidSessionInput):
        await service.list_bot("bot-1", limit=0)


async def test_detail_has_recent_history(service: SessionService) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    detail = await service.detail(KEY)
    assert detail.status.state.phase is Phase.ACTIVE
    assert [e.to_phase for e in detail.history] == [Phase.ACTIVE, Phase.CONNECTING]
    assert detail.history_source == "database"


FLAG_COMBINATIONS = [ClearFlags(*combo) for combo in itertools.product([True, False], repeat=3)]


@pytest.mark.parametrize(
    "flags", FLAG_COMBINATIONS, ids=lambda f: f"session={f.session}-redis={f.redis}-db={f.database}"
)
async def test_every_clear_flag_combination(
    service: SessionService,
    flags: ClearFlags,
    botsessions: BotSessions,
    redis_store: RedisStore,
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    other = SessionKey("bot-1", "bystander")
    await service.report(other, ReportedState.CONNECTED)
    if not (flags.session or flags.redis or flags.database):
        with pytest.raises(InvalidSessionInput, match="at least one"):
            await service.clear("bot-1", KEY.user_id, flags, actor="frontend")
        assert await service.sql.clear_audits("bot-1") == []
        return
    result = await service.clear("bot-1", KEY.user_id, flags, actor="frontend")
    assert result.complete
    assert (await botsessions.get(KEY) is None) is flags.session
    assert result.sessions == int(flags.session)
    if flags.redis:
        assert result.redis_keys == 3
        assert (
            await redis_store.client.exists(
                f"session:{KEY}", f"session:status:{KEY}", f"session:expiry:{KEY}"
            )
            == 0
        )
        if not flags.session:  # it stays, inactive, so nothing restores the keys
            record = await fetch(botsessions)
            assert (record.phase, record.reason) == (Phase.INACTIVE, Reason.CLEARED)
    else:
        assert result.redis_keys == 0 and await redis_store.get(KEY) is not None
    if flags.database:
        history_rows = 3 if flags.redis and not flags.session else 2
        assert result.database_rows == 1 + history_rows
        assert await service.sql.get(KEY) is None and await service.sql.history(KEY) == []
    else:
        assert result.database_rows == 0 and await service.sql.get(KEY) is not None
    (audit,) = await service.sql.clear_audits("bot-1")
    assert (audit.actor, audit.scope, audit.flags) == (
        "frontend",
        "session",
        (flags.session, flags.redis, flags.database),
    )
    assert audit.user_fingerprint is not None and KEY.user_id not in audit.user_fingerprint
    # the bystander is untouched
    assert await botsessions.get(other) is not None and await redis_store.get(other) is not None
    # repeating it is harmless
    again = await service.clear("bot-1", KEY.user_id, flags, actor="frontend")
    assert again.complete and (again.sessions, again.redis_keys) == (0, 0)


async def test_clear_reports_a_pending_deletion(
    memory_service: SessionService, memory_botsessions: InMemoryBotSessions
) -> None:
    service = memory_service
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    memory_botsessions.pending_deletes.add(KEY)
    result = await service.clear("bot-1", KEY.user_id, ClearFlags(), actor="frontend")
    assert result.pending == [f"session {KEY}"] and not result.complete


async def test_clear_every_session_of_a_bot(
    service: SessionService, botsessions: BotSessions
) -> None:
    for user in ("a", "b", "c"):
        await service.report(SessionKey("bot-1", user), ReportedState.CONNECTED)
    await service.report(SessionKey("bot-2", "a"), ReportedState.CONNECTED)
    result = await service.clear("bot-1", None, ClearFlags(), actor="admin")
    assert (result.sessions, result.redis_keys) == (3, 9)
    assert [r.key for r in await botsessions.list_bot("bot-1")] == []
    assert await botsessions.get(SessionKey("bot-2", "a")) is not None
    (audit,) = await service.sql.clear_audits("bot-1")
    assert (audit.scope, audit.user_fingerprint) == ("bot", None)


async def test_swept_sessions_become_inactive_expired_with_history(
    service: SessionService, clock: Clock, botsessions: BotSessions
) -> None:
    short = SessionService(
        service.botsessions, service.redis, service.sql, load_settings(session_ttl="10m"), clock
    )
    await short.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await short.report(SessionKey("bot-1", "gone"), ReportedState.CONNECTED)
    await short.report(SessionKey("bot-1", "gone"), ReportedState.DISCONNECTED)
    seen = clock.now
    clock.advance(minutes=11)
    result = await sweep(short.redis, now=clock.now)
    assert sorted((s.key.user_id, s.why) for s in result.removed) == [
        (KEY.user_id, "expired"),
        ("gone", "inactive"),
    ]
    entries = await short.expire_swept(result.removed)
    assert [(e.key, e.to_phase, e.reason) for e in entries] == [
        (KEY, Phase.INACTIVE, Reason.EXPIRED)
    ]
    record = await fetch(botsessions)
    assert (record.phase, record.reason, record.last_seen) == (Phase.INACTIVE, Reason.EXPIRED, seen)
    db = await short.sql.get(KEY)
    assert db is not None and (db.phase, db.reason, db.last_seen) == (
        Phase.INACTIVE,
        Reason.EXPIRED,
        seen,
    )
    run = await short.record_sweep(result, runner="test")
    assert (run.removed, run.expired, run.inactive, run.succeeded) == (2, 1, 1, True)
    assert await short.sql.cleanup_runs() == [run]
    # a second pass finds nothing to expire
    assert await short.expire_swept(result.removed) == []


async def test_a_failed_sweep_is_recorded(service: SessionService) -> None:
    run = await service.record_sweep(None, runner="test", error="redis unavailable")
    assert not run.succeeded and run.error == "redis unavailable"


def test_log_lines_are_json_and_mask_phone_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    from sessions.domain.logs import JsonFormatter, event

    logger = logging.getLogger("test.json")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # only this handler: another test may have configured the root
    try:
        event(logger, "hello 4915112345678", token="Bearer abc.def", userId="u1")
    finally:
        logger.removeHandler(handler)
    line = json.loads(capsys.readouterr().err)
    assert line["message"] == "hello **********678"
    assert line["token"] == "Bearer [redacted]"
    assert "userId" not in line and line["user"] == user_fingerprint("u1")


class OperatorFirst(InMemoryBotSessions):
    """The operator wins the race: it gives a new BotSession its first phase between the
    API's create and the API's own compare-and-swap."""

    async def create(
        self,
        key: SessionKey,
        identity: Identity,
        ttl_seconds: int | None = None,
        *,
        heartbeat_timeout_seconds: int | None = None,
    ) -> tuple[BotSessionRecord, bool]:
        record, created = await super().create(
            key, identity, ttl_seconds, heartbeat_timeout_seconds=heartbeat_timeout_seconds
        )
        first = HistoryEntry(
            key, 1, None, Phase.CONNECTING, Reason.CREATED, "operator", record.created_at
        )
        await self.set_phase(
            record, first, record.created_at, record.created_at + timedelta(hours=24)
        )
        return record, created  # the stale copy, as the API holds it


async def test_a_first_report_is_created_even_when_the_operator_set_the_phase_first(
    redis_store: RedisStore, sql_store: SqlStore, clock: Clock
) -> None:
    service = SessionService(OperatorFirst(), redis_store, sql_store, load_settings(), clock)
    result = await service.report(KEY, ReportedState.CONNECTING, identity=IDENTITY)
    assert result.created and result.transitions == []
    assert (result.state.phase, result.state.revision) == (Phase.CONNECTING, 1)
    assert await redis_store.get(KEY) is not None


async def test_a_clear_that_fails_half_way_is_audited_with_what_it_did(
    memory_service: SessionService, memory_botsessions: InMemoryBotSessions
) -> None:
    service = memory_service
    for user in ("a", "b"):
        await service.report(SessionKey("bot-1", user), ReportedState.CONNECTED)
    original = memory_botsessions.delete
    calls = 0

    async def flaky(key: SessionKey, wait: timedelta) -> DeleteOutcome:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreUnavailable("kubernetes", "connection refused", retry_after=1)
        return await original(key, wait)

    memory_botsessions.delete = flaky  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await service.clear("bot-1", None, ClearFlags(), actor="admin")
    (audit,) = await service.sql.clear_audits("bot-1")
    assert (audit.scope, audit.sessions_deleted, audit.redis_keys_deleted) == ("bot", 1, 3)


async def test_sessions_connecting_past_the_timeout_fail_and_only_those(
    service: SessionService, botsessions: BotSessions, clock: Clock
) -> None:
    slow, quick, fresh = (SessionKey("bot-1", user) for user in ("slow", "quick", "fresh"))
    await service.report(slow, ReportedState.CONNECTING)
    await service.report(quick, ReportedState.CONNECTING)
    seen_earlier = [await fetch(botsessions, slow), await fetch(botsessions, quick)]
    clock.advance(seconds=30)
    await service.report(quick, ReportedState.CONNECTED)  # the index may not know yet
    clock.advance(seconds=60)
    await service.report(fresh, ReportedState.CONNECTING)
    clock.advance(seconds=31)  # slow: 121 s connecting, over the default 2 minutes
    records = [*seen_earlier, await fetch(botsessions, fresh)]

    done = await time_out_connecting(
        service, botsessions, records, service.settings.connect_timeout
    )

    assert [(e.key, e.from_phase, e.to_phase, e.reason) for e in done] == [
        (slow, Phase.CONNECTING, Phase.FAILED, Reason.CONNECT_TIMEOUT)
    ]
    failed = await fetch(botsessions, slow)
    assert (failed.phase, failed.reason) == (Phase.FAILED, Reason.CONNECT_TIMEOUT)
    assert (await fetch(botsessions, quick)).phase is Phase.ACTIVE
    assert (await fetch(botsessions, fresh)).phase is Phase.CONNECTING
    # only the BotSession changes here; the operator's sync copies it out (test_operator_lifecycle)
    assert (
        await time_out_connecting(service, botsessions, records, service.settings.connect_timeout)
        == []
    )
