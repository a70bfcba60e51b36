"""The operator's lifecycle against real processes: a restart with more BotSessions than
its worker limit, a returning user, the housekeeping lease between two replicas, and
concurrent first reports while the operator runs. etcd + kube-apiserver, redis-server,
SQLite, the operator as a subprocess."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from devstack.process import free_port
from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.domain.model import Phase, Reason, ReportedState, SessionKey
from sessions.domain.records import DeleteOutcome
from sessions.usecases.service import ClearFlags, SessionService
from tests.conftest import eventually
from tests.integration.operator_stack import (
    IDENTITY,
    Stack,
    async_true,
    metric,
    record_is,
    synced_everywhere,
    with_ttl,
)

pytestmark = pytest.mark.integration

LEASE = "botsession:lock:housekeeping"


async def test_a_restart_with_more_botsessions_than_the_worker_limit_keeps_reconciling(
    stack: Stack,
) -> None:
    """Three times the worker limit (lowered to 20 for the test; 200 by default)."""
    limit = {"BOTSESSION_WORKER_LIMIT": "20"}
    keys = [SessionKey("bot-many", f"u{i:03d}") for i in range(60)]
    with stack.operator(**limit):
        await asyncio.gather(*(stack.botsessions.create(k, IDENTITY) for k in keys))
        await eventually(lambda: synced_everywhere(stack, keys), timeout=120, interval=1)
    port = free_port()
    with stack.operator(**limit, BOTSESSION_METRICS_PORT=str(port)):
        new = SessionKey("bot-many", "after-restart")
        await stack.botsessions.create(new, IDENTITY)
        await eventually(lambda: synced_everywhere(stack, [new]), timeout=60)
        handled = "botsession_handled_objects_total"
        await eventually(lambda: async_true(metric(port, handled) >= len(keys)), timeout=60)
        # an old one's finalizer runs: its deletion completes and its keys go
        assert await stack.botsessions.delete(keys[0], timedelta(seconds=30)) is (
            DeleteOutcome.DELETED
        )
        assert await stack.redis.get(keys[0]) is None
        row = await stack.sql.get(keys[0])
        assert row is not None and row.phase is Phase.INACTIVE


async def gone(stack: Stack, key: SessionKey) -> bool:
    return await stack.botsessions.get(key) is None


@pytest.mark.parametrize("how", ["retention", "clear"])
async def test_a_returning_user_gets_a_new_incarnation_in_every_store(
    stack: Stack, how: str
) -> None:
    key = SessionKey("bot-1", "returning")
    service = with_ttl(stack)
    await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    await service.report(key, ReportedState.DISCONNECTED)
    first = await stack.botsessions.get(key)
    assert first is not None and first.incarnation > 0
    env = {"BOTSESSION_CLEANUP_INTERVAL": "1s", "BOTSESSION_INACTIVE_RETENTION": "1s"}
    with stack.operator(**(env if how == "retention" else {})):
        if how == "clear":
            flags = ClearFlags(session=True, redis=True, database=False)
            cleared = await service.clear(key.bot_id, key.user_id, flags, "test")
            assert cleared.sessions == 1 and cleared.complete
        await eventually(lambda: gone(stack, key), timeout=60)
        # the same user comes back: a new BotSession, a new incarnation, revisions from 1
        again = await service.report(key, ReportedState.CONNECTING, identity=IDENTITY)
        assert again.created
        await service.report(key, ReportedState.CONNECTED)
        await eventually(lambda: synced_everywhere(stack, [key]))
        second = await stack.botsessions.get(key)
        assert second is not None and second.incarnation > first.incarnation
        row = await stack.sql.get(key)
        assert row is not None
        assert (row.phase, row.revision, row.incarnation) == (Phase.ACTIVE, 2, second.incarnation)
        history = [(e.incarnation, e.revision, e.to_phase) for e in await stack.sql.history(key)]
        assert history[:2] == [
            (second.incarnation, 2, Phase.ACTIVE),
            (second.incarnation, 1, Phase.CONNECTING),
        ]
        assert [h[:2] for h in history[2:5]] == [(first.incarnation, r) for r in (3, 2, 1)]
        held = await stack.redis.get(key)
        assert held is not None
        assert (held.phase, held.incarnation, held.revision) == (
            Phase.ACTIVE,
            second.incarnation,
            2,
        )
        status = await service.status(key.bot_id, key.user_id)
        assert status.state.phase is Phase.ACTIVE
        page, _ = await service.list_bot(key.bot_id)
        assert [(s.phase, s.incarnation) for s in page] == [(Phase.ACTIVE, second.incarnation)]


async def holder(stack: Stack) -> str:
    """The runner holding the housekeeping lease (its value is `<namespace>/<runner>:<token>`)."""
    value = await stack.redis.client.get(LEASE)
    namespace, _, runner = str(value or "").rsplit(":", 1)[0].partition("/")
    assert not value or namespace == stack.namespace, value
    return runner


async def test_the_standby_started_first_hands_the_housekeeping_to_the_active_peer(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = free_port(), free_port()
    env = {"BOTSESSION_CLEANUP_INTERVAL": "1s"}
    standby = stack.operator(
        "--peering",
        "botsession",
        "--priority",
        "100",
        POD_NAME="op-standby",
        BOTSESSION_METRICS_PORT=str(ports[0]),
        **env,
    )
    active = stack.operator(
        "--peering",
        "botsession",
        "--priority",
        "200",
        POD_NAME="op-active",
        BOTSESSION_METRICS_PORT=str(ports[1]),
        **env,
    )
    with standby:
        # alone, the standby is the active peer and does the housekeeping
        await eventually(lambda: async_true(metric(ports[0], "botsession_sweep_leader") == 1))
        assert await holder(stack) == "op-standby"
        with active:
            await eventually(lambda: _holds(stack, "op-active"), timeout=60)
            assert metric(ports[0], "botsession_sweep_leader") == 0
            await eventually(lambda: _sweeps_by(stack, "op-active"), timeout=30)
            swept_by_standby = await _sweep_count(stack, "op-standby")
            await asyncio.sleep(3)
            assert await _sweep_count(stack, "op-standby") == swept_by_standby
            key = SessionKey("bot-1", "handled-by-the-active")
            await stack.botsessions.create(key, IDENTITY)
            await eventually(lambda: synced_everywhere(stack, [key]))
            # a planned handover: the active stops (SIGTERM) and lets go of the lease
            started = time.monotonic()
            active.stop()
            assert await holder(stack) != "op-active"
            await eventually(lambda: _holds(stack, "op-standby"), timeout=30, interval=0.1)
            takeover = time.monotonic() - started
        with capsys.disabled():
            print(f"\n[lease] housekeeping handed over {takeover:.1f} s after SIGTERM")
        assert takeover < 15  # one housekeeping tick (5 s), not the lease's 30 s TTL
        key = SessionKey("bot-1", "handled-by-the-standby")
        await stack.botsessions.create(key, IDENTITY)
        await eventually(lambda: synced_everywhere(stack, [key]), timeout=60)


async def _holds(stack: Stack, runner: str) -> bool:
    return await holder(stack) == runner


async def _sweep_count(stack: Stack, runner: str) -> int:
    return sum(1 for run in await stack.sql.cleanup_runs(limit=500) if run.runner == runner)


async def _sweeps_by(stack: Stack, runner: str) -> bool:
    return await _sweep_count(stack, runner) >= 1


async def test_concurrent_first_reports_say_created_exactly_once(stack: Stack) -> None:
    """Twenty reports of the same new session at once, the operator running: one answer
    says created, revision 1 is the reporter's (not the operator's), and the others say
    they changed nothing."""
    api_botsessions = KubeBotSessions(
        stack.botsessions.objects.client, stack.namespace, creator="api"
    )
    service = SessionService(api_botsessions, stack.redis, stack.sql, stack.service.settings)
    key = SessionKey("bot-1", "rush")
    with stack.operator():
        results = await asyncio.gather(
            *(
                service.report(key, ReportedState.CONNECTING, identity=IDENTITY, actor="token:bots")
                for _ in range(20)
            )
        )
        assert sum(1 for r in results if r.created) == 1
        # one of them (the creator, or one that found the object first) wrote revision 1;
        # every other one says it changed nothing
        made = [[(e.revision, e.reason, e.actor) for e in r.transitions] for r in results]
        assert sorted(made, key=len) == [[]] * 19 + [[(1, Reason.CREATED, "token:bots")]]
        await eventually(lambda: synced_everywhere(stack, [key]))
        history = await stack.sql.history(key)
        assert [(e.revision, e.actor) for e in history] == [(1, "token:bots")]


async def test_a_botsession_the_api_created_but_never_phased_gets_its_phase_after_the_grace(
    stack: Stack,
) -> None:
    """The API died between its create and its first compare-and-swap."""
    api_botsessions = KubeBotSessions(
        stack.botsessions.objects.client, stack.namespace, creator="api"
    )
    key = SessionKey("bot-1", "orphaned-create")
    with stack.operator(BOTSESSION_FIRST_PHASE_GRACE="3s"):
        record, created = await api_botsessions.create(key, IDENTITY)
        assert created and record.created_by_api
        await asyncio.sleep(1)
        early = await stack.botsessions.get(key)
        assert early is not None and early.phase is None  # left to the API, for now
        await eventually(
            lambda: record_is(stack, key, Phase.CONNECTING, Reason.CREATED), timeout=30
        )
        await eventually(lambda: synced_everywhere(stack, [key]), timeout=30)
        history = await stack.sql.history(key)
        assert [(e.revision, e.reason, e.actor) for e in history] == [
            (1, Reason.CREATED, "operator")
        ]
