"""The store guard's logic on stand-in operations (the real hangs, a SIGSTOPped Redis and
PostgreSQL, are in tests/integration/test_hangs.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from sessions.adapters.guard import StoreGuard
from sessions.domain.model import StoreUnavailable

pytestmark = pytest.mark.unit


class Counts:
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def timed_out(self, store: str) -> None:
        self.seen["timed_out"] += 1

    def skipped(self, store: str) -> None:
        self.seen["skipped"] += 1

    def opened(self, store: str) -> None:
        self.seen["opened"] += 1

    def closed(self, store: str) -> None:
        self.seen["closed"] += 1


class Store:
    def __init__(self) -> None:
        self.hung = False

    async def answer(self) -> str:
        if self.hung:
            await asyncio.sleep(3600)
        return "ok"


async def test_a_hung_store_costs_one_budget_then_nothing_until_it_answers() -> None:
    store, counts = Store(), Counts()
    guard = StoreGuard("redis", 0.2, store.answer, probe_interval=0.05, observer=counts)
    assert await guard.call("get", store.answer) == "ok"
    store.hung = True
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"no answer within 0\.2 s"):
        await guard.call("get", store.answer)
    assert 0.15 < time.monotonic() - started < 1.0
    assert guard.is_open
    started = time.monotonic()
    for _ in range(100):
        with pytest.raises(StoreUnavailable, match="skipped"):
            await guard.call("get", store.answer)
    assert time.monotonic() - started < 0.1  # no waiting while it is open
    store.hung = False
    assert await closes(guard)  # the background probe closes it
    assert await guard.call("get", store.answer) == "ok"
    assert counts.seen == {"timed_out": 1, "skipped": 100, "opened": 1, "closed": 1}
    await guard.close()


async def closes(guard: StoreGuard, within: float = 2.5) -> bool:
    for _ in range(int(within / 0.05)):
        if not guard.is_open:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_store_that_refuses_opens_the_guard_too() -> None:
    async def refuse() -> None:
        raise StoreUnavailable("database", "connection refused")

    counts = Counts()
    guard = StoreGuard("database", 1.0, refuse, probe_interval=0.05, observer=counts)
    with pytest.raises(StoreUnavailable, match="connection refused"):
        await guard.call("write", refuse)
    assert guard.is_open and counts.seen["opened"] == 1
    await asyncio.sleep(0.2)  # the probe keeps failing: still open
    assert guard.is_open
    with pytest.raises(StoreUnavailable, match="skipped"):
        await guard.call("write", refuse)
    await guard.close()


async def test_other_errors_pass_through_and_keep_it_closed() -> None:
    async def broken() -> None:
        raise ValueError("a bug, not a store outage")

    guard = StoreGuard("redis", 1.0, broken)
    with pytest.raises(ValueError, match="a bug"):
        await guard.call("get", broken)
    assert not guard.is_open


async def test_a_detached_call_gives_up_at_the_budget_even_if_its_cleanup_hangs() -> None:
    """SQLAlchemy over asyncpg rolls back on the hung connection when cancelled: waiting for
    that would stretch the budget to asyncpg's own timeout."""
    cleaned = asyncio.Event()

    async def slow_to_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(1.0)  # the rollback on a connection that answers nothing
            cleaned.set()
            raise

    guard = StoreGuard("database", 0.2, slow_to_cancel, probe_interval=10, detach=True)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no answer"):
        await guard.call("write", slow_to_cancel)
    assert time.monotonic() - started < 0.6
    await asyncio.wait_for(cleaned.wait(), 3)  # the cleanup still ran, in the background
    await guard.close()
