"""The operator over days, compressed: expiry, connect timeout, coarse lastSeen, healing,
two replicas, crashes, and restarts of the API server and of Redis. Everything is real:
etcd + kube-apiserver, redis-server, SQLite, and the operator as a subprocess."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from datetime import timedelta
from functools import partial

import pytest

from devstack.kubectl import kubectl
from devstack.process import free_port
from sessions.adapters.kubernetes.botsessions import resource_name
from sessions.adapters.kubernetes.client import CustomObjects, KubeClient, load_kubeconfig
from sessions.adapters.kubernetes.crd import GROUP, PLURAL, VERSION
from sessions.domain.model import (
    Phase,
    Reason,
    ReportedState,
    SessionKey,
    StoreUnavailable,
)
from sessions.usecases.liveness import BEACON_KEPT, BEACON_STALE, say_api_serves
from sessions.usecases.service import SessionService
from tests.conftest import eventually
from tests.integration.operator_stack import (
    IDENTITY,
    Stack,
    async_true,
    events,
    metric,
    record_is,
    synced_everywhere,
    with_ttl,
)

pytestmark = pytest.mark.integration


async def test_short_ttl_sessions_expire_turn_inactive_with_an_event_and_keep_history(
    stack: Stack,
) -> None:
    service = with_ttl(stack, session_ttl="2s")
    key = SessionKey("bot-1", "expiring")
    await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    with stack.operator(BOTSESSION_SESSION_TTL="2s", BOTSESSION_CLEANUP_INTERVAL="1s"):
        await eventually(lambda: record_is(stack, key, Phase.INACTIVE, Reason.EXPIRED), timeout=30)
        # The BotSession changes first; the database follows (the sweep's own write, or the
        # controller's copy that marks it synced). Read it once the controller says it is.
        await eventually(lambda: synced_everywhere(stack, [key]))
        assert await stack.redis.client.keys("session:*") == []
        history = await stack.sql.history(key)
        assert [(e.to_phase, e.reason) for e in history] == [
            (Phase.INACTIVE, Reason.EXPIRED),
            (Phase.ACTIVE, Reason.CONNECTED),
            (Phase.CONNECTING, Reason.CREATED),
        ]
        row = await stack.sql.get(key)
        assert row is not None and row.phase is Phase.INACTIVE
        await eventually(lambda: _has_event(stack, "Expired", resource_name(key)))
        await eventually(lambda: _a_run_expired_some(stack))


async def _a_run_expired_some(stack: Stack) -> bool:
    """The run is recorded after the sessions it expired, so it may lag the BotSession."""
    return any(run.succeeded and run.expired >= 1 for run in await stack.sql.cleanup_runs())


async def _has_event(stack: Stack, reason: str, name: str) -> bool:
    return any(e["reason"] == reason and e["object"] == name for e in events(stack))


async def test_connect_timeout_turns_connecting_into_failed(stack: Stack) -> None:
    key = SessionKey("bot-1", "slow")
    await stack.service.report(key, ReportedState.CONNECTING, identity=IDENTITY)
    with stack.operator(BOTSESSION_CONNECT_TIMEOUT="2s"):
        await eventually(
            lambda: record_is(stack, key, Phase.FAILED, Reason.CONNECT_TIMEOUT), timeout=30
        )
        await eventually(lambda: synced_everywhere(stack, [key]))
        assert await stack.redis.client.hget(f"session:{key}", "status") == "failed"


async def test_a_bot_that_goes_silent_is_inactive_seconds_after_its_heartbeat_deadline(
    stack: Stack,
) -> None:
    """Issue 21: the operator finds it on its own, with an Event and a metric; a session
    that only reports, and one still heartbeating, stay active."""
    silent, reporting, alive = (SessionKey("bot-1", u) for u in ("silent", "reports", "alive"))
    for key in (silent, alive):
        await stack.service.report(
            key, ReportedState.CONNECTED, identity=IDENTITY, heartbeat_timeout_seconds=3
        )
    await stack.service.report(reporting, ReportedState.CONNECTED, heartbeat_timeout_seconds=3)
    port = free_port()
    with stack.operator(BOTSESSION_METRICS_PORT=str(port)):
        await eventually(lambda: synced_everywhere(stack, [silent, reporting, alive]))
        await stack.service.heartbeat(silent)
        deadline = await stack.redis.heartbeat_deadline(silent)
        assert deadline is not None
        for _ in range(12):  # 6 s: twice the timeout
            await stack.service.heartbeat(alive)
            await stack.service.report(reporting, ReportedState.CONNECTED)
            await asyncio.sleep(0.5)
        record = await stack.botsessions.get(silent)
        assert record is not None and record.reason is Reason.HEARTBEAT_LOST
        assert record.last_seen == deadline - timedelta(seconds=3)
        assert record.recent[-1].at - deadline <= timedelta(seconds=2)  # a look every second
        for key in (reporting, alive):
            assert await record_is(stack, key, Phase.ACTIVE, Reason.CONNECTED)
        await eventually(lambda: synced_everywhere(stack, [silent]))
        assert await stack.redis.client.hget(f"session:{silent}", "status") == "inactive"
        assert metric(port, "botsession_heartbeats_lost_total") == 1
        assert metric(port, "botsession_heartbeat_deadlines") == 1  # alive's
        assert {
            (e["type"], e["object"])
            for e in events(stack)
            if e["reason"] == Reason.HEARTBEAT_LOST.value
        } == {("Normal", resource_name(silent))}


async def test_the_operator_takes_no_silence_for_loss_while_the_api_was_away(
    stack: Stack,
) -> None:
    """No API replica said it serves for a while: the deadline passes, nothing is lost, the
    operator says it pauses; once a replica is back, one heartbeat timeout later it is."""
    service = with_ttl(stack, heartbeat_timeout="3s")
    key = SessionKey("bot-1", "unheard")
    await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    await service.heartbeat(key)
    gone = service.now() - timedelta(minutes=1)  # the last word of the last API replica
    await stack.redis.api_alive(gone, BEACON_STALE, timedelta(seconds=3), BEACON_KEPT)
    port = free_port()
    with stack.operator(BOTSESSION_METRICS_PORT=str(port)) as operator:
        await eventually(lambda: async_true(metric(port, "botsession_heartbeat_loss_paused") == 1))
        await asyncio.sleep(5)  # past the deadline
        assert await record_is(stack, key, Phase.ACTIVE, Reason.CONNECTED)

        held_until = await say_api_serves(service, stack.redis)  # a replica is back
        assert held_until is not None
        await eventually(lambda: record_is(stack, key, Phase.INACTIVE, Reason.HEARTBEAT_LOST))
        record = await stack.botsessions.get(key)
        assert record is not None and record.recent[-1].at >= held_until - timedelta(seconds=1)
        assert metric(port, "botsession_heartbeat_loss_paused") == 0
        assert "heartbeat loss paused" in operator.output()


async def test_heartbeats_for_two_minutes_cause_at_most_a_few_botsession_writes(
    stack: Stack,
) -> None:
    key = SessionKey("bot-1", "chatty")
    await stack.service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    with stack.operator():
        await eventually(lambda: synced_everywhere(stack, [key]))
        name = resource_name(key)
        writes = asyncio.create_task(count_writes(stack, name, seconds=120))
        heartbeats = 0
        for _ in range(120):  # one a second for two minutes, 120 in all
            await stack.service.heartbeat(key)
            heartbeats += 1
            await asyncio.sleep(1)
        modified = await writes
    assert heartbeats == 120
    # lastSeen reaches the BotSession only when it drifted by more than a minute
    assert 1 <= modified <= 3, modified
    record = await stack.botsessions.get(key)
    held = await stack.redis.get(key)
    assert record is not None and record.last_seen is not None and held is not None
    assert held.last_seen - record.last_seen <= timedelta(seconds=65)


async def test_lastseen_copies_keep_to_their_write_budget(stack: Stack) -> None:
    keys = [SessionKey("bot-budget", f"u{i}") for i in range(30)]
    for key in keys:
        await stack.service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    budget = {"BOTSESSION_LAST_SEEN_WRITES_PER_SECOND": "5", "BOTSESSION_LAST_SEEN_DRIFT": "1s"}
    with stack.operator(**budget):
        await eventually(lambda: synced_everywhere(stack, keys))
        await asyncio.sleep(1.1)  # the heartbeats' lastSeen is newer than the reports'
        for key in keys:
            await stack.service.heartbeat(key)
        times = await copy_times(stack, "bot-budget", len(keys), timeout=30)
    # 30 copies at 5 a second: about 6 s; never more than the budget in any second
    # (plus the bucket's first 5, which it lets through at once)
    assert times[-1] - times[0] >= 4.0, times
    assert max(sum(t <= start + 1.0 for t in times[i:]) for i, start in enumerate(times)) <= 10
    for key in keys:
        held, record = await stack.redis.get(key), await stack.botsessions.get(key)
        assert held is not None and record is not None and record.last_seen == held.last_seen


async def copy_times(stack: Stack, bot_id: str, count: int, timeout: float) -> list[float]:
    """When (loop time) each of the bot's BotSessions got a new status.lastSeen, until
    `count` did, as a real watch sees the writes."""
    client = KubeClient(load_kubeconfig(stack.plane.kubeconfig))
    objects = CustomObjects(client, GROUP, VERSION, stack.namespace, PLURAL)
    loop = asyncio.get_running_loop()
    seen: dict[str, str] = {}
    times: list[float] = []
    try:
        listed = await objects.list()
        for item in listed["items"]:
            seen[item["metadata"]["name"]] = item["status"].get("lastSeen", "")
        version = listed["metadata"]["resourceVersion"]
        async with asyncio.timeout(timeout):
            async for change in objects.watch(timeout, resource_version=version):
                item = change["object"]
                if item["spec"]["botId"] != bot_id or change["type"] != "MODIFIED":
                    continue
                name, last_seen = item["metadata"]["name"], item["status"].get("lastSeen", "")
                if last_seen != seen.get(name):
                    seen[name] = last_seen
                    times.append(loop.time())
                if len(times) == count:
                    break
    finally:
        await client.close()
    return times


async def count_writes(stack: Stack, name: str, seconds: float) -> int:
    """MODIFIED events of one BotSession seen by a real watch, for `seconds`."""
    client = KubeClient(load_kubeconfig(stack.plane.kubeconfig))
    objects = CustomObjects(client, GROUP, VERSION, stack.namespace, PLURAL)
    modified = 0
    try:
        initial = (await objects.get(name))["metadata"]["resourceVersion"]
        changes = objects.watch(
            seconds, field_selector=f"metadata.name={name}", resource_version=initial
        )
        async for change in changes:
            modified += change["type"] == "MODIFIED"
    finally:
        await client.close()
    return modified


async def test_flushall_is_healed(stack: Stack) -> None:
    keys = [SessionKey("bot-1", f"u{i}") for i in range(5)]
    for key in keys:
        await stack.service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    await stack.service.report(keys[0], ReportedState.DISCONNECTED)  # inactive: not restored
    with stack.operator():
        await eventually(lambda: synced_everywhere(stack, keys))
        await stack.redis.client.flushall()
        await eventually(lambda: _all_in_redis(stack, keys[1:]), timeout=30)
        for key in keys[1:]:
            held = await stack.redis.get(key)
            assert held is not None and (held.phase, held.revision) == (Phase.ACTIVE, 2)
            assert held.identity == IDENTITY
        assert await stack.redis.get(keys[0]) is None


async def _all_in_redis(stack: Stack, keys: list[SessionKey]) -> bool:
    return all([await stack.redis.get(k) is not None for k in keys])


async def test_the_audit_restores_a_deleted_row_and_a_session_a_failover_lost(
    stack: Stack,
) -> None:
    """What Redis's sentinel cannot tell (it survives a failover that lost one write)."""
    keys = [SessionKey("bot-1", "durable"), SessionKey("bot-1", "replicated")]
    for key in keys:
        await stack.service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    with stack.operator(BOTSESSION_AUDIT_INTERVAL="2s"):
        await eventually(lambda: synced_everywhere(stack, keys))
        await eventually(stack.redis.intact)
        assert await stack.sql.delete(keys[0]) == 3
        assert await stack.redis.client.delete(f"session:{keys[1]}") == 1
        restored = await eventually(lambda: stack.sql.get(keys[0]), timeout=30)
        assert restored.phase is Phase.ACTIVE and restored.identity == IDENTITY
        assert [e.revision for e in await stack.sql.history(keys[0])] == [2, 1]
        held = await eventually(lambda: stack.redis.get(keys[1]), timeout=30)
        assert (held.phase, held.revision) == (Phase.ACTIVE, 2)


async def test_two_replicas_only_one_sweeps_and_killing_the_active_hands_over(stack: Stack) -> None:
    ports = free_port(), free_port()
    env = {"BOTSESSION_CLEANUP_INTERVAL": "1s"}
    first = stack.operator(
        "--peering",
        "botsession",
        "--priority",
        "200",
        POD_NAME="op-a",
        BOTSESSION_METRICS_PORT=str(ports[0]),
        **env,
    )
    second = stack.operator(
        "--peering",
        "botsession",
        "--priority",
        "100",
        POD_NAME="op-b",
        BOTSESSION_METRICS_PORT=str(ports[1]),
        **env,
    )
    with first, second:
        await eventually(lambda: _runs_by(stack, "op-a", 3), timeout=60)
        runs = await stack.sql.cleanup_runs(limit=100)
        assert {run.runner for run in runs} == {"op-a"}
        assert metric(ports[0], "botsession_sweep_leader") == 1
        assert metric(ports[1], "botsession_sweep_leader") == 0
        # the operators created their kopf peering object themselves, and both registered
        # (kopf writes a peer's entry a little after its startup handler has run)
        await eventually(lambda: async_true(len(_peers(stack)) == 2))
        # sweeps never overlap
        spans = sorted((r.started_at, r.finished_at) for r in runs)
        assert all(a[1] is not None and a[1] <= b[0] for a, b in itertools.pairwise(spans))
        first.kill()  # SIGKILL: no goodbye, the lease must lapse
        await eventually(lambda: _runs_by(stack, "op-b", 2), timeout=90)
        assert metric(ports[1], "botsession_sweep_leader") == 1
        # and the standby now handles BotSessions too (kopf peering handed over)
        key = SessionKey("bot-1", "after-handover")
        await stack.botsessions.create(key, IDENTITY)
        await eventually(lambda: synced_everywhere(stack, [key]), timeout=90)


async def _runs_by(stack: Stack, runner: str, count: int) -> bool:
    runs = await stack.sql.cleanup_runs(limit=100)
    return sum(1 for run in runs if run.runner == runner) >= count


async def test_sigkill_during_200_creations_converges_without_duplicate_history(
    stack: Stack,
) -> None:
    keys = [SessionKey("bot-storm", f"u{i:03d}") for i in range(200)]
    # every Event counted below: none dropped by the budget (test_catch_up tests that)
    operator = stack.operator(BOTSESSION_EVENTS_PER_SECOND="10000")
    with operator:

        async def create(key: SessionKey) -> None:
            await stack.botsessions.create(key, IDENTITY)

        first_half = asyncio.gather(*(create(k) for k in keys[:100]))
        await first_half
        await asyncio.sleep(1.0)  # let it get going, then crash it mid-flight
        assert operator.proc is not None
        os.kill(operator.proc.pid, signal.SIGKILL)
        operator.proc.wait(10)
        await asyncio.gather(*(create(k) for k in keys[100:]))
        operator.start()
        await eventually(lambda: _all_synced(stack, keys), timeout=240, interval=1)
    rows, _ = await stack.sql.list_bot("bot-storm", limit=500)
    assert len(rows) == 200
    for key in keys:
        history = await stack.sql.history(key)
        assert [(e.revision, e.to_phase) for e in history] == [(1, Phase.CONNECTING)], key
    created_events = [e for e in events(stack) if e["reason"] == "Created"]
    assert len(created_events) == 200  # one per session, none twice


async def _all_synced(stack: Stack, keys: list[SessionKey]) -> bool:
    records = {r.key: r for r in await stack.botsessions.list_bot("bot-storm")}
    return all(
        k in records and records[k].revision == 1 and records[k].synced_revision == 1 for k in keys
    )


async def test_a_failing_sweep_shows_in_the_metric_and_as_a_warning_event(stack: Stack) -> None:
    port = free_port()
    with stack.operator(BOTSESSION_METRICS_PORT=str(port), BOTSESSION_CLEANUP_INTERVAL="1s"):
        await eventually(lambda: async_true(metric(port, "botsession_sweep_leader") == 1))
        assert metric(port, "botsession_sweep_failures_total") == 0
        stack.redis_server.stop()
        try:
            await eventually(
                lambda: async_true(metric(port, "botsession_sweep_failures_total") >= 1),
                timeout=60,
            )
            await eventually(
                lambda: async_true(
                    any(
                        e["type"] == "Warning" and e["reason"] == "SweepFailed"
                        for e in events(stack)
                    )
                ),
                timeout=30,
            )
            await eventually(lambda: _a_failed_run_recorded(stack))  # recorded after the event
        finally:
            stack.redis_server.start()


def _peers(stack: Stack) -> dict[str, object]:
    peering = kubectl(
        stack.plane.kubeconfig,
        "get",
        "kopfpeering",
        "botsession",
        "-n",
        stack.namespace,
        "-o",
        "json",
    ).stdout
    peers: dict[str, object] = json.loads(peering).get("status") or {}
    return peers


async def _a_failed_run_recorded(stack: Stack) -> bool:
    return any(not run.succeeded and run.error for run in await stack.sql.cleanup_runs())


async def report_steadily(service: SessionService, keys: list[SessionKey], rounds: int) -> int:
    """Each bot cycles connecting -> connected -> disconnected, retrying a report the way a
    bot would when the API answers 'unavailable' (for up to 90 s: a restart of the store
    under test is slower on a loaded machine). Returns the transitions made."""
    cycle = [ReportedState.CONNECTING, ReportedState.CONNECTED, ReportedState.DISCONNECTED]
    made = 0
    loop = asyncio.get_running_loop()
    for round_ in range(rounds):
        for key in keys:
            state = cycle[round_ % 3]
            give_up = loop.time() + 90
            while True:
                try:
                    result = await service.report(key, state, identity=IDENTITY)
                    made += len(result.transitions)
                    break
                except StoreUnavailable:
                    if loop.time() > give_up:
                        raise AssertionError(f"report of {key} never went through") from None
                    await asyncio.sleep(0.2)
        await asyncio.sleep(0.05)
    return made


async def history_has_no_gaps(stack: Stack, keys: list[SessionKey]) -> bool:
    for key in keys:
        record = await stack.botsessions.get(key)
        if record is None or record.synced_revision != record.revision:
            return False
        revisions = sorted(e.revision for e in await stack.sql.history(key, limit=1000))
        if revisions != list(range(1, record.revision + 1)):
            return False
    return True


async def test_restarting_kube_apiserver_under_reports_loses_no_transition(stack: Stack) -> None:
    keys = [SessionKey("bot-steady", f"u{i}") for i in range(5)]
    with stack.operator():
        reports = asyncio.create_task(report_steadily(stack.service, keys, rounds=30))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(stack.plane.restart_apiserver)
        made = await reports
        assert made >= 5 * 20
        await eventually(lambda: history_has_no_gaps(stack, keys), timeout=120, interval=1)


async def test_restarting_redis_under_reports_loses_no_transition(stack: Stack) -> None:
    keys = [SessionKey("bot-steady", f"r{i}") for i in range(5)]
    with stack.operator():
        reports = asyncio.create_task(report_steadily(stack.service, keys, rounds=30))
        await asyncio.sleep(1.0)
        stack.redis_server.stop()
        await asyncio.sleep(2.0)
        stack.redis_server.start()  # empty: the operator must refill it
        await reports
        await eventually(lambda: history_has_no_gaps(stack, keys), timeout=120, interval=1)
        for key in keys:
            record = await stack.botsessions.get(key)
            assert record is not None
            if record.phase is not Phase.INACTIVE:
                held = await eventually(partial(stack.redis.get, key), timeout=30)
                assert held.revision == record.revision
