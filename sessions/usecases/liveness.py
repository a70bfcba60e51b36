"""Heartbeat-loss detection: an active session that heartbeated and then stayed silent past
its heartbeat timeout becomes inactive (HeartbeatLost), seconds after its deadline.

Each heartbeat of an active session moves its deadline in a Redis sorted set
(lua/heartbeat.lua); a session that never heartbeats has none. A pass claims the sessions
whose deadline has passed, oldest first, in one atomic script call (lua/heartbeat_lost.lua),
so it costs in proportion to those sessions, and a heartbeat that came before the claim
wins, as with the sweep. Each claimed session is then made inactive by compare-and-swap on
its BotSession, unless a heartbeat or a transition came after the claim
(SessionService.lose_heartbeat).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sessions.adapters.redis.store import RedisStore
from sessions.domain.model import HistoryEntry, RevisionConflict
from sessions.usecases.service import SessionService


@dataclass
class LossPass:
    claimed: int = 0  # past their deadline in Redis
    lost: list[HistoryEntry] = field(default_factory=list)  # made inactive


async def detect_lost_heartbeats(
    service: SessionService,
    redis: RedisStore,
    *,
    limit: int = 500,
    concurrency: int = 20,
) -> LossPass:
    """One pass: up to `limit` sessions past their deadline, `concurrency` BotSession
    writes at a time. Fewer claimed than `limit` means none is left due."""
    claimed = await redis.claim_heartbeat_lost(service.now(), limit)
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
