"""The copy of lastSeen from Redis to the BotSessions, on the housekeeping leader.

Heartbeats write Redis only. The sessions that heartbeated wait in a Redis set, oldest
heartbeat first; once one is `last_seen_drift` old, its lastSeen is copied to the BotSession
and the database (sessions.usecases.healing.copy_last_seen). The API-server writes are
paced by a leaky bucket at `last_seen_writes_per_second`: at 100,000 heartbeating sessions
the API server gets that many writes a second and no more, and a BotSession's lastSeen lags
Redis's by about sessions / rate seconds (Redis, which the API reads, is never behind).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from controller import metrics
from controller.steps import guarded
from sessions.adapters.kubernetes.informer import BotSessionIndex
from sessions.runtime import Runtime
from sessions.usecases.healing import Copied, copy_last_seen

INTERVAL = 1.0  # seconds between looks when nothing is due


class LastSeenCopy:
    def __init__(
        self, runtime: Runtime, index: BotSessionIndex, leading: Callable[[], bool]
    ) -> None:
        self.runtime = runtime
        self.index = index
        self.leading = leading
        rate = runtime.settings.last_seen_writes_per_second
        self.limiter = AsyncLimiter(rate, 1.0)
        self.batch = max(1, math.ceil(rate))  # about a second's worth per look

    async def step(self) -> Copied:
        runtime = self.runtime
        copied = await copy_last_seen(
            runtime.redis,
            runtime.botsessions,
            runtime.sql,
            self.index.find,
            drift=runtime.settings.last_seen_drift,
            now=runtime.service.now(),
            limit=self.batch,
            pace=self.limiter.acquire,
        )
        metrics.LAST_SEEN_COPIED.inc(copied.written)
        metrics.LAST_SEEN_UNSYNCED.set(await runtime.redis.unsynced_count())
        return copied

    async def run(self) -> None:
        while True:
            copied = None
            if self.index.filled.is_set() and self.leading():
                copied = await guarded("last-seen", self.step)
            if copied is None or copied.looked_at < self.batch:  # full: more may be due now
                await asyncio.sleep(INTERVAL)
