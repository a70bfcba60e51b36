"""Which BotSessions the catch-up picks (controller.catch_up.CatchUp.due): pure logic over
records as the operator's index holds them; syncing them is tested on real servers in
tests/integration/test_catch_up.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, cast

import pytest

from controller import catch_up
from controller.catch_up import CatchUp
from sessions.domain.model import HistoryEntry, Identity, Phase, Reason, SessionKey
from sessions.domain.records import BotSessionRecord
from sessions.domain.settings import load_settings
from tests.fakes import Clock

pytestmark = pytest.mark.unit


@dataclass
class Index:
    held: list[BotSessionRecord] = field(default_factory=list)
    filled: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.filled.set()

    def records(self) -> list[BotSessionRecord]:
        return self.held

    def unsynced(self) -> list[BotSessionRecord]:  # what the real index keeps as events come
        return [r for r in self.held if r.waiting_since is not None]


@dataclass
class Service:
    clock: Clock


@dataclass
class Runtime:
    service: Service
    settings: Any = field(default_factory=lambda: load_settings(catch_up_after="3s"))


def record(user: str, clock: Clock, age: float, **fields: Any) -> BotSessionRecord:
    return BotSessionRecord(
        key=SessionKey("bot-1", user),
        name=user,
        phase=fields.pop("phase", None),
        reason=None,
        revision=fields.pop("revision", 0),
        identity=Identity(),
        created_at=clock.now - timedelta(seconds=age),
        uid=f"uid-{user}",
        **fields,
    )


def picker(held: list[BotSessionRecord], clock: Clock) -> CatchUp:
    runtime = cast(Any, Runtime(Service(clock)))
    return CatchUp(runtime, cast(Any, None), cast(Any, Index(held)), lambda: True)


async def test_it_picks_what_waited_longer_than_the_setting_newest_first() -> None:
    clock = Clock()
    held = [
        record("fresh", clock, 1),  # kopf may still get to it in time
        record("old", clock, 60),
        record("newer", clock, 5),
        record("in-step", clock, 60, phase=Phase.ACTIVE, revision=2, synced_revision=2),
        record("deleting", clock, 60, deleting=True),
        record("api-made", clock, 4, created_by_api=True),  # the API gives its first phase
    ]
    assert [r.name for r in picker(held, clock).due()] == ["newer", "old"]


async def test_a_reported_revision_waits_from_its_transition() -> None:
    clock = Clock()
    old = record("reported", clock, 3600, phase=Phase.INACTIVE, revision=3, synced_revision=2)
    entry = HistoryEntry(
        old.key, 3, Phase.ACTIVE, Phase.INACTIVE, Reason.DISCONNECTED, "", clock.now
    )
    behind = replace(old, recent=(entry,))
    assert picker([behind], clock).due() == []  # changed just now, though created an hour ago
    clock.advance(seconds=4)
    assert [r.name for r in picker([behind], clock).due()] == ["reported"]


async def test_at_most_a_batch_per_look(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catch_up, "BATCH", 3)
    clock = Clock()
    held = [record(f"u{i}", clock, 10 + i) for i in range(10)]
    assert [r.name for r in picker(held, clock).due()] == ["u0", "u1", "u2"]


class Poisoned(CatchUp):
    """Syncs every BotSession but one, which always fails."""

    async def sync(self, candidate: BotSessionRecord) -> bool | None:
        if candidate.name == "poison":
            raise RuntimeError("this one always fails")
        return True


async def test_a_botsession_that_always_fails_holds_up_no_other() -> None:
    clock = Clock()
    held = [record("poison", clock, 10), record("u1", clock, 20), record("u2", clock, 30)]
    runtime = cast(Any, Runtime(Service(clock)))
    catch_up = Poisoned(runtime, cast(Any, None), cast(Any, Index(held)), lambda: True)
    assert await catch_up.step() == 2
    assert [r.name for r in catch_up.due()] == ["u1", "u2"]  # poison waits its backoff
    loop = asyncio.get_running_loop()
    assert 0.9 <= catch_up.retry_at["uid-poison"] - loop.time() <= 1.0
    catch_up.retry_at["uid-poison"] = loop.time()  # its time has come: it fails again
    await catch_up.step()
    assert 1.9 <= catch_up.retry_at["uid-poison"] - loop.time() <= 2.0  # 1, 2, 4 ... 30 s
