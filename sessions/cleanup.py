"""The expiry sweep: remove expired (lastSeen + TTL) and inactive sessions from Redis.

It reads due members from the expiry index in bounded batches and lets a Lua script
re-check and remove each one atomically, so a session refreshed by a heartbeat in the
meantime survives, two sweepers at once never remove a session twice, and a re-run finds
nothing left to do. Callers (the operator) turn the result into BotSession and history
updates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sessions.logs import event
from sessions.model import utcnow
from sessions.redis_store import RedisStore, SweptSession

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    started_at: datetime
    finished_at: datetime | None = None
    removed: list[SweptSession] = field(default_factory=list)
    batches: int = 0

    def count(self, why: str) -> int:
        return sum(1 for s in self.removed if s.why == why)


async def sweep(
    store: RedisStore,
    *,
    batch_size: int = 500,
    now: datetime | None = None,
    max_batches: int = 100_000,
) -> SweepResult:
    """Remove every session due at `now`; returns what was removed."""
    moment = now or utcnow()
    result = SweepResult(started_at=utcnow())
    while result.batches < max_batches:
        members = await store.due(moment, batch_size)
        if not members:
            break
        removed = await store.sweep_members(members, moment)
        result.batches += 1
        result.removed.extend(removed)
        for swept in removed:
            event(
                log,
                "session removed from redis",
                botId=swept.key.bot_id,
                userId=swept.key.user_id,
                why=swept.why,
                phase=swept.phase.value if swept.phase else None,
                revision=swept.revision,
            )
        if len(members) < batch_size:
            break
    result.finished_at = utcnow()
    return result
