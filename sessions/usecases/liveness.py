"""Heartbeat-loss detection: an active session that heartbeated and then stayed silent past
its heartbeat timeout becomes inactive (HeartbeatLost), seconds after its deadline.

Each heartbeat of an active session moves its deadline in a Redis sorted set
(lua/heartbeat.lua); a session that never heartbeats has none. A pass claims the sessions
whose deadline has passed, oldest first, in one atomic script call (lua/heartbeat_lost.lua),
so it costs in proportion to those sessions, and a heartbeat that came before the claim
wins, as with the sweep. Each claimed session is then made inactive by compare-and-swap on
its BotSession, unless a heartbeat or a transition came after the claim
(SessionService.lose_heartbeat).

Silence proves nothing while bots could not be heard: every API replica down, or none able
to reach Redis. Each API replica says it serves every BEACON_INTERVAL (api_alive); while the
last word is older than BEACON_STALE the detection pauses, and once one is heard again it
waits one whole default heartbeat timeout (the hold, set in the same script), so every live
bot gets to heartbeat before silence counts again. The operator's own outages need no hold:
the API kept moving the deadlines meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sessions.adapters.redis.store import RedisStore
from sessions.domain.logs import event
from sessions.domain.model import HistoryEntry, RevisionConflict, format_time
from sessions.usecases.service import SessionService

log = logging.getLogger(__name__)

BEACON_INTERVAL = timedelta(seconds=5)  # how often each API replica says it serves
BEACON_STALE = timedelta(seconds=20)  # no word from any replica this long: bots went unheard
BEACON_KEPT = timedelta(days=1)  # an API removed for good stops pausing the detection then


@dataclass
class LossPass:
    claimed: int = 0  # past their deadline in Redis
    lost: list[HistoryEntry] = field(default_factory=list)  # made inactive
    paused: str | None = None  # why nothing was claimed, when bots could not be heard


def paused_because(
    now: datetime, beacon: datetime | None, hold_until: datetime | None
) -> str | None:
    """Why silence proves nothing now (None: it does). No beacon at all: no API replica ever
    ran against this Redis (heartbeats come from elsewhere), nothing to wait for."""
    if hold_until is not None and now < hold_until:
        return f"bots had no API to heartbeat to; held until {format_time(hold_until)}"
    if beacon is not None and now - beacon > BEACON_STALE:
        return f"no API replica has said it serves since {format_time(beacon)}"
    return None


async def say_api_serves(service: SessionService, redis: RedisStore) -> datetime | None:
    """One word of an API replica; the end of the hold it set, if any (logged)."""
    held = await redis.api_alive(
        service.now(), BEACON_STALE, service.settings.heartbeat_timeout, BEACON_KEPT
    )
    if held is not None:
        event(
            log,
            "no API replica served for a while: heartbeat loss held",
            logging.WARNING,
            until=format_time(held),
        )
    return held


async def detect_lost_heartbeats(
    service: SessionService,
    redis: RedisStore,
    *,
    limit: int = 500,
    concurrency: int = 20,
) -> LossPass:
    """One pass: up to `limit` sessions past their deadline, `concurrency` BotSession
    writes at a time. Fewer claimed than `limit` means none is left due. Nothing is claimed
    while bots could not be heard (paused_because)."""
    now = service.now()
    paused = paused_because(now, *await redis.heartbeat_signal())
    if paused is not None:
        return LossPass(paused=paused)
    claimed = await redis.claim_heartbeat_lost(now, limit)
    result = LossPass(claimed=len(claimed))
    slots = asyncio.Semaphore(concurrency)

    async def lose(index: int) -> list[HistoryEntry]:
        async with slots:
            try:
                return await service.lose_heartbeat(claimed[index])
            except RevisionConflict:  # kept changing: it is alive
                return []

    for entries in await asyncio.gather(*map(lose, range(len(claimed)))):
        result.lost.extend(entries)  # each transition is logged where it is written
    return result
