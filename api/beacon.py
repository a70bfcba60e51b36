"""Each API replica says it serves, every few seconds, so the operator can tell bots that went
silent from bots that had no API to heartbeat to (sessions.usecases.liveness)."""

from __future__ import annotations

import asyncio
import contextlib

from sessions.domain.model import StoreUnavailable
from sessions.runtime import Runtime
from sessions.usecases.liveness import BEACON_INTERVAL, say_api_serves


async def keep_saying_it_serves(runtime: Runtime) -> None:
    while True:
        with contextlib.suppress(StoreUnavailable):  # the guard logs and counts it
            await say_api_serves(runtime.service, runtime.redis)
        await asyncio.sleep(BEACON_INTERVAL.total_seconds())
