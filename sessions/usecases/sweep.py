"""The expiry sweep: remove expired (lastSeen + TTL) and inactive sessions from Redis.

It works through the expiry index in bounded batches. Each batch is one call of the sweep
Lua script, which takes the due members from the index and removes them in the same atomic
step (RedisStore.sweep_due), so a session refreshed by a heartbeat is never removed, two
sweepers at once never remove a session twice, and a re-run finds nothing left to do.
Callers (the operator) turn the result into BotSession and history updates.

Every removal is logged as one structured line at INFO ("session removed from redis", with
botId, the user's fingerprint, why, phase, revision). An index entry that names no session (not
<botId>:<userId>, so not written by this project) is dropped with a WARNING instead of
stopping every later sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sessions.adapters.redis.store import MALFORMED, RedisStore, SweptSession
from sessions.domain.logs import event
from sessions.domain.model import utcnow
from sessions.domain.privacy import user_fingerprint

log = logging.getLogger(__name__)

REMOVED = "session removed from redis"
DROPPED = "malformed expiry index entry dropped"


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
        removed = await store.sweep_due(moment, batch_size)
        if not removed:
            break
        result.batches += 1
        result.removed.extend(removed)
        if log.isEnabledFor(logging.INFO):
            _log_removals(removed)
        else:
            _warn_malformed(removed)
        if len(removed) < batch_size:
            break
    result.finished_at = utcnow()
    return result


def _log_removals(removed: list[SweptSession]) -> None:
    """One line per removed session. The same record sessions.domain.logs.event() makes, built
    without the per-session SessionKey, Phase and keyword-argument round trips."""
    info = log.info
    for swept in removed:
        if swept.status == MALFORMED:
            _warn_malformed([swept])
            continue
        bot_id, _, user_id = swept.member.partition(":")
        fields = {
            "botId": bot_id,
            "user": user_fingerprint(user_id),
            "why": swept.why,
            "phase": swept.status or None,
            "revision": swept.revision,
        }
        info(REMOVED, extra={"fields": fields})


def _warn_malformed(removed: list[SweptSession]) -> None:
    for swept in removed:
        if swept.status == MALFORMED:
            event(log, DROPPED, logging.WARNING, member=swept.member)
