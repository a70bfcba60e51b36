"""The catch-up (controller.catch_up) on the real API server, Redis and SQLite, with no kopf
running at all: the extreme of a kopf queue that is behind. What it syncs must look exactly
as if kopf's handler had: phase, stores, Event, syncedRevision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from controller import metrics
from controller.catch_up import CatchUp
from controller.sync import Announcer, sync_and_mark
from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.kubernetes.informer import BotSessionIndex
from sessions.adapters.tasks import stop
from sessions.domain.model import Phase, Reason, ReportedState, SessionKey
from sessions.domain.records import BotSessionRecord
from sessions.runtime import Runtime
from sessions.usecases.service import ClearFlags
from tests.conftest import eventually
from tests.integration.operator_stack import IDENTITY, Stack, events, with_ttl

pytestmark = pytest.mark.integration


@dataclass
class Harness:
    catch_up: CatchUp
    index: BotSessionIndex
    runtime: Runtime

    async def indexed(self, key: SessionKey, revision: int) -> BotSessionRecord:
        async def seen() -> BotSessionRecord | None:
            found = [r for r in self.index.records() if r.key == key]
            return found[0] if found and found[0].revision == revision else None

        return await eventually(seen, timeout=10, interval=0.05)


def announcer_of(runtime: Runtime) -> Announcer:
    return Announcer(runtime.kube, runtime.namespace, runtime.settings.events_per_second)


@pytest.fixture
async def harness(stack: Stack) -> AsyncIterator[Harness]:
    service = with_ttl(stack, catch_up_after="10ms")
    kube = stack.botsessions.objects.client
    index = BotSessionIndex(kube, stack.namespace)
    runtime = Runtime(
        service.settings, stack.redis, stack.sql, kube, stack.botsessions, service, index
    )
    task = asyncio.create_task(index.run())
    await asyncio.wait_for(index.filled.wait(), 10)
    try:
        yield Harness(CatchUp(runtime, announcer_of(runtime), index, lambda: True), index, runtime)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_botsession_kopf_has_not_reached_gets_its_first_phase_and_is_synced(
    stack: Stack, harness: Harness
) -> None:
    key = SessionKey("bot-late", "made-by-hand")
    await stack.botsessions.create(key, IDENTITY)  # as kubectl would: no phase
    await harness.indexed(key, 0)
    assert await harness.catch_up.step() == 1
    record = await stack.botsessions.get(key)
    assert record is not None
    assert (record.phase, record.reason, record.synced_revision) == (
        Phase.CONNECTING,
        Reason.CREATED,
        1,
    )
    held = await stack.redis.get(key)
    row = await stack.sql.get(key)
    assert held is not None and row is not None and held.revision == row.revision == 1
    created = [e for e in events(stack) if e["object"] == record.name]
    assert [e["reason"] for e in created] == ["Created"]
    await harness.indexed(key, 1)
    assert await harness.catch_up.step() == 0  # in step now: nothing to do


async def test_a_reported_revision_kopf_has_not_synced_is_marked_synced(
    stack: Stack, harness: Harness
) -> None:
    key = SessionKey("bot-late", "reported")
    await harness.runtime.service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    record = await harness.indexed(key, 2)
    assert record.synced_revision == 0  # no kopf: nobody marked it
    assert await harness.catch_up.step() == 1
    fresh = await stack.botsessions.get(key)
    assert fresh is not None and fresh.synced_revision == fresh.revision == 2


async def test_a_botsession_the_api_is_about_to_give_its_first_phase_is_left_to_it(
    stack: Stack, harness: Harness
) -> None:
    api = KubeBotSessions(stack.botsessions.objects.client, stack.namespace, creator="api")
    key = SessionKey("bot-late", "api-made")
    await api.create(key, IDENTITY)
    await harness.indexed(key, 0)
    assert await harness.catch_up.step() == 0  # within BOTSESSION_FIRST_PHASE_GRACE
    record = await stack.botsessions.get(key)
    assert record is not None and record.phase is None


async def test_only_the_leader_catches_up(stack: Stack, harness: Harness) -> None:
    follower = CatchUp(harness.runtime, announcer_of(harness.runtime), harness.index, lambda: False)
    key = SessionKey("bot-late", "follower")
    await stack.botsessions.create(key, IDENTITY)
    await harness.indexed(key, 0)
    task = asyncio.create_task(follower.run())
    await asyncio.sleep(2.5)  # two of its looks at the index
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    record = await stack.botsessions.get(key)
    assert record is not None and record.phase is None


async def test_events_past_the_budget_are_dropped_and_counted_the_rest_posted_once(
    stack: Stack,
) -> None:
    keys = [SessionKey("bot-events", f"u{i}") for i in range(5)]
    for key in keys:
        await stack.service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    records = [await stack.botsessions.get(key) for key in keys]
    kube = stack.botsessions.objects.client
    announcer = Announcer(kube, stack.namespace, per_second=2)
    dropped = dropped_count()

    for record in records:  # a storm: 5 at once against a budget of 2 a second
        assert record is not None
        await announcer.announce(record, record.recent[0])

    posted = [e for e in events(stack) if e["object"].startswith("bot-events")]
    assert len(posted) == 2
    assert dropped_count() - dropped == 3
    await asyncio.sleep(1.1)  # the bucket has leaked: the next one is posted
    last = records[-1]
    assert last is not None
    await announcer.announce(last, last.recent[-1])
    assert len([e for e in events(stack) if e["object"].startswith("bot-events")]) == 3


def dropped_count() -> float:
    return metrics.REGISTRY.get_sample_value("botsession_events_dropped_total") or 0.0


class SlowFirstList(BotSessionIndex):
    """An index whose first LIST waits until the test lets it go: the interleaving of a
    restart with 100,000 BotSessions, whose first LIST takes over 20 s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go = asyncio.Event()

    async def _list(self) -> str:
        await self.go.wait()
        return await super()._list()


async def test_what_changes_while_the_index_fills_is_synced_before_it_is_filled(
    stack: Stack,
) -> None:
    service = with_ttl(stack, catch_up_after="10ms")
    kube = stack.botsessions.objects.client
    old = SessionKey("bot-restart", "old")
    await stack.botsessions.create(old, IDENTITY)  # before the restart: left to the LIST
    index = SlowFirstList(kube, stack.namespace)
    runtime = Runtime(
        service.settings, stack.redis, stack.sql, kube, stack.botsessions, service, index
    )
    task = asyncio.create_task(index.run())
    try:
        await asyncio.sleep(1)  # the early watch is up
        new = SessionKey("bot-restart", "new")
        await stack.botsessions.create(new, IDENTITY)  # during the restart
        seen = await eventually(lambda: async_value(index.early_unsynced()), timeout=10)
        assert [r.key for r in seen] == [new]

        async def active() -> bool:
            return True

        standby = CatchUp(runtime, announcer_of(runtime), index, lambda: False)
        assert not await standby.may_act()  # no peer to ask: it waits for the index
        catch_up = CatchUp(runtime, announcer_of(runtime), index, lambda: False, active)
        assert await catch_up.may_act()
        assert await catch_up.step() == 1
        assert not index.filled.is_set()
        record = await stack.botsessions.get(new)
        assert record is not None and record.synced_revision == record.revision == 1
        untouched = await stack.botsessions.get(old)
        assert untouched is not None and untouched.phase is None

        index.go.set()
        await asyncio.wait_for(index.filled.wait(), 10)
        assert index.early_unsynced() == []
        assert [r.key for r in index.unsynced()] == [old]  # the LIST's, for the usual path
    finally:
        await stop(task)


async def async_value(value: Any) -> Any:
    return value


async def test_what_was_written_while_no_operator_ran_is_synced_before_the_index_fills(
    stack: Stack,
) -> None:
    """Reported before the operator's watch began (the operator was down, or starting):
    Redis's sync-wanted set names it, and the catch-up reads it from the API server."""
    service = with_ttl(stack, catch_up_after="10ms")
    key = SessionKey("bot-restart", "while-down")
    await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    in_step = SessionKey("bot-restart", "in-step")
    await service.report(in_step, ReportedState.CONNECTING, identity=IDENTITY)
    gone = SessionKey("bot-restart", "gone")
    await service.report(gone, ReportedState.CONNECTING, identity=IDENTITY)
    await service.clear(gone.bot_id, gone.user_id, ClearFlags(True, False, False), "admin")
    assert len(await stack.redis.sync_wanted(50)) == 3

    kube = stack.botsessions.objects.client
    index = SlowFirstList(kube, stack.namespace)
    runtime = Runtime(
        service.settings, stack.redis, stack.sql, kube, stack.botsessions, service, index
    )
    announcer = announcer_of(runtime)
    record = await stack.botsessions.get(in_step)
    assert record is not None
    await sync_and_mark(runtime, announcer, record, record.generation, None)  # kopf did
    task = asyncio.create_task(index.run())
    try:

        async def active() -> bool:
            return True

        catch_up = CatchUp(runtime, announcer, index, lambda: False, active)
        assert await catch_up.may_act()
        assert await catch_up.step() == 1
        assert not index.filled.is_set()
        synced = await stack.botsessions.get(key)
        assert synced is not None and synced.synced_revision == synced.revision == 2
        assert await stack.redis.sync_wanted(50) == []  # each forgotten, or synced
    finally:
        index.go.set()
        await stop(task)
