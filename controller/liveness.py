"""Heartbeat-loss detection on the housekeeping leader (sessions.usecases.liveness): a look
every second, so a session is made inactive within about a second of its deadline. A look
when nothing is due is one Redis call that finds nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controller import metrics
from controller.steps import guarded
from sessions.runtime import Runtime
from sessions.usecases.liveness import LossPass, detect_lost_heartbeats

INTERVAL = 1.0  # seconds between looks when nothing is due
BATCH = 500  # sessions claimed per look


class LivenessWatch:
    def __init__(self, runtime: Runtime, leading: Callable[[], bool]) -> None:
        self.runtime = runtime
        self.leading = leading

    async def step(self) -> LossPass:
        runtime = self.runtime
        found = await detect_lost_heartbeats(runtime.service, runtime.redis, limit=BATCH)
        metrics.HEARTBEATS_LOST.inc(len(found.lost))
        metrics.HEARTBEATING.set(await runtime.redis.heartbeat_deadline_count())
        return found

    async def run(self) -> None:
        while True:
            found = None
            if self.leading():
                found = await guarded("liveness", self.step)
            if found is None or found.claimed < BATCH:  # a full batch: more may be due now
                await asyncio.sleep(INTERVAL)
