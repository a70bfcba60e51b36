"""Heartbeat-loss detection on the housekeeping leader (sessions.usecases.liveness): a look
every second, so a session is made inactive within about a second of its deadline. A look
when nothing is due is two Redis calls that find nothing. A pause (bots could not be heard)
is logged when it begins and ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from controller import metrics
from controller.steps import guarded
from sessions.domain.logs import event
from sessions.runtime import Runtime
from sessions.usecases.liveness import LossPass, detect_lost_heartbeats

INTERVAL = 1.0  # seconds between looks when nothing is due
BATCH = 500  # sessions claimed per look

log = logging.getLogger(__name__)


class LivenessWatch:
    def __init__(self, runtime: Runtime, leading: Callable[[], bool]) -> None:
        self.runtime = runtime
        self.leading = leading
        self.paused: str | None = None

    async def step(self) -> LossPass:
        runtime = self.runtime
        found = await detect_lost_heartbeats(runtime.service, runtime.redis, limit=BATCH)
        if (found.paused is None) != (self.paused is None):
            if found.paused is not None:
                event(log, "heartbeat loss paused", logging.WARNING, why=found.paused)
            else:
                event(log, "heartbeat loss resumed")
        self.paused = found.paused
        metrics.HEARTBEAT_LOSS_PAUSED.set(found.paused is not None)
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
