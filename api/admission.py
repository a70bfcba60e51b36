"""Admission of the write path: at most `concurrency` reports and clears are worked on at
once; the others wait their turn (first come, first served), and past `queue_limit`
waiting, or `max_wait` seconds of waiting, a request is answered 503 with Retry-After.

Why: one API process works on every request in one event loop. In a storm (500 bots
reporting at once) every report's store calls then wait behind the CPU work of all the
others, seconds of it, and the stores' time budgets (sessions.adapters.guard) mistook that
wait for a store that hangs: the writes were given up as pending and the guards opened for
everyone. Admitted in turns, the reports in work are few, each store call waits at most for
those few, and the storm is worked through at the machine's pace.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from api import metrics
from api.errors import ApiProblem


class WriteAdmission:
    def __init__(self, concurrency: int, queue_limit: int, max_wait: float) -> None:
        self.concurrency = concurrency
        self.queue_limit = queue_limit
        self.max_wait = max_wait
        self._slots = asyncio.Semaphore(concurrency)
        self.waiting = 0

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the slots for the body of the `async with`."""
        if self._slots.locked() and self.waiting >= self.queue_limit:
            self._refuse("too many writes are waiting")
        self.waiting += 1
        metrics.WRITES_WAITING.inc()
        try:
            await asyncio.wait_for(self._slots.acquire(), self.max_wait)
        except TimeoutError:
            self._refuse(f"no turn within {self.max_wait:g} s")
        finally:
            self.waiting -= 1
            metrics.WRITES_WAITING.dec()
        try:
            yield
        finally:
            self._slots.release()

    def _refuse(self, why: str) -> None:
        metrics.WRITES_REFUSED.inc()
        raise ApiProblem(
            503,
            "overloaded",
            f"the API is busy with other writes ({why}); retry after the given seconds",
            headers={"Retry-After": str(max(1, math.ceil(self.max_wait / 2)))},
        )
