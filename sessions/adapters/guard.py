"""Time budgets and a circuit breaker for a store that may hang instead of dying.

A Redis that accepts connections but never answers (SIGSTOP, a full network buffer, a
failover in progress) or a database that stops answering would make every request wait for
the client library's own timeouts and retries (seconds to minutes). Every call to a store
goes through its StoreGuard instead:

- it gets a fixed time budget; past it the call is abandoned and StoreUnavailable raised,
  so the caller can answer from elsewhere (the database, Redis) or say the write is pending;
- after a call failed that way (no answer, or no connection) the guard opens: for as long as
  the store stays unhealthy, calls fail at once without waiting, while one background probe
  asks the store every `probe_interval` and closes the guard when it answers.

The guard counts what it did through an observer, so the API and the operator can export
the counts as metrics without this module knowing about either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from sessions.adapters.tasks import stop
from sessions.domain.logs import event
from sessions.domain.model import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class GuardObserver(Protocol):
    def timed_out(self, store: str) -> None: ...

    def skipped(self, store: str) -> None: ...

    def opened(self, store: str) -> None: ...

    def closed(self, store: str) -> None: ...


class Unobserved:
    def timed_out(self, store: str) -> None:
        pass

    def skipped(self, store: str) -> None:
        pass

    def opened(self, store: str) -> None:
        pass

    def closed(self, store: str) -> None:
        pass


class _Labelled(Protocol):
    def labels(self, store: str) -> Any: ...


class MetricsObserver:
    """Counts into metrics labelled by store (prometheus_client's Counter and Gauge fit):
    calls that timed out, calls skipped while the store was not answering, and a gauge that
    is 1 while it is skipped."""

    def __init__(self, timeouts: _Labelled, skipped: _Labelled, unanswered: _Labelled) -> None:
        self._timeouts = timeouts
        self._skipped = skipped
        self._unanswered = unanswered

    def timed_out(self, store: str) -> None:
        self._timeouts.labels(store).inc()

    def skipped(self, store: str) -> None:
        self._skipped.labels(store).inc()

    def opened(self, store: str) -> None:
        self._unanswered.labels(store).set(1)

    def closed(self, store: str) -> None:
        self._unanswered.labels(store).set(0)


def guard_metrics(registry: CollectorRegistry, prefix: str) -> MetricsObserver:
    """The guards' metrics in a component's registry: <prefix>_store_timeouts_total,
    <prefix>_store_skipped_total and <prefix>_store_unanswered, labelled by store."""
    return MetricsObserver(
        Counter(
            f"{prefix}_store_timeouts_total",
            "Store operations abandoned at their time budget",
            ["store"],
            registry=registry,
        ),
        Counter(
            f"{prefix}_store_skipped_total",
            "Store operations not attempted because the store was not answering",
            ["store"],
            registry=registry,
        ),
        Gauge(
            f"{prefix}_store_unanswered",
            "1 while a store is skipped (it timed out or refused; a probe waits for it)",
            ["store"],
            registry=registry,
        ),
    )


class StoreGuard:
    def __init__(
        self,
        store: str,
        budget: float,
        probe: Callable[[], Awaitable[object]],
        *,
        probe_interval: float = 1.0,
        observer: GuardObserver | None = None,
        detach: bool = False,
    ) -> None:
        """detach: run each call as its own task and stop waiting for it at the budget,
        leaving its cancellation to finish in the background. Needed where a cancelled call
        cleans up on the hung connection before it gives way (SQLAlchemy with asyncpg rolls
        back first: the budget would stretch to asyncpg's own timeout); it costs a task per
        call, so Redis, whose calls give way at once, does without."""
        self.store = store
        self.detach = detach
        self._abandoned: set[asyncio.Task[Any]] = set()
        self.budget = budget
        self.probe_interval = probe_interval
        self.observer: GuardObserver = observer or Unobserved()
        self._probe = probe
        self._prober: asyncio.Task[None] | None = None
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    async def call(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one store operation within the budget; StoreUnavailable when it does not
        answer in time, when it fails to connect, or at once while the guard is open."""
        if self.opened_at is not None:
            self.observer.skipped(self.store)
            raise StoreUnavailable(
                self.store, f"{what}: skipped, the store is not answering", self.probe_interval
            )
        try:
            return await (self._detached(op) if self.detach else self._bounded(op))
        except TimeoutError:
            self.observer.timed_out(self.store)
            self.trip(f"{what}: no answer within {self.budget:g} s")
            raise StoreUnavailable(
                self.store, f"{what}: no answer within {self.budget:g} s", self.probe_interval
            ) from None
        except StoreUnavailable as exc:
            self.trip(str(exc))
            raise

    async def _bounded(self, op: Callable[[], Awaitable[T]]) -> T:
        async with asyncio.timeout(self.budget):
            return await op()

    async def _detached(self, op: Callable[[], Awaitable[T]]) -> T:
        task: asyncio.Task[T] = asyncio.ensure_future(op())
        done, _ = await asyncio.wait({task}, timeout=self.budget)
        if done:
            return task.result()
        task.cancel()
        self._abandoned.add(task)  # kept until its cleanup ends; its outcome is dropped
        task.add_done_callback(self._forget)
        raise TimeoutError

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as never retrieved

    def trip(self, why: str) -> None:
        if self.opened_at is not None:
            return
        self.opened_at = time.monotonic()
        self.observer.opened(self.store)
        event(
            log,
            "store not answering: skipped until a probe succeeds",
            logging.WARNING,
            store=self.store,
            error=why,
        )
        self._prober = asyncio.get_running_loop().create_task(
            self._probe_until_healthy(), name=f"probe {self.store}"
        )

    async def _probe_until_healthy(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            if await self._answers():
                break
        down_for = time.monotonic() - (self.opened_at or time.monotonic())
        self.opened_at = None
        self.observer.closed(self.store)
        event(log, "store answering again", store=self.store, downSeconds=round(down_for, 1))

    async def _answers(self) -> bool:
        try:
            async with asyncio.timeout(self.budget):
                await self._probe()
        except Exception:  # still down or hung: keep skipping it
            return False
        return True

    async def close(self) -> None:
        if self._prober is not None:
            await stop(self._prober)
