"""What the controller does with one BotSession, as plain functions (kopf-free).

reconcile: give an empty BotSession its first phase, then make Redis and the database match
it (revision-guarded, so an older copy never overwrites a newer one) and backfill the
history from status.recentTransitions. cleanup_deleted: what the finalizer does.
conditions: the standard status conditions Ready and Synced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sessions.adapters.redis.store import RedisStore, removal_event, transition_events
from sessions.adapters.sql.store import SqlStore
from sessions.domain.logs import event
from sessions.domain.model import (
    HistoryEntry,
    Phase,
    Reason,
    RevisionConflict,
    SessionState,
    StoreUnavailable,
    Transition,
    Version,
    format_time,
)
from sessions.domain.records import BotSessionRecord, BotSessions
from sessions.usecases.service import SessionService, pending_if_down

log = logging.getLogger(__name__)
ACTOR = "operator"
RETRYING = "the controller retries"


@dataclass
class SyncOutcome:
    record: BotSessionRecord
    unannounced: list[HistoryEntry] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # "redis", "database"

    @property
    def synced(self) -> bool:
        return not self.pending


def first_phase_awaited(record: BotSessionRecord, now: datetime, grace: timedelta) -> bool:
    """The API created this BotSession and writes its first phase right after: leave it to
    the API (its reporter is revision 1's actor) unless it has not done so within `grace`
    (it may have died in between; the housekeeping then gives the phase)."""
    return (
        record.phase is None
        and record.created_by_api
        and not record.deleting
        and now - record.created_at < grace
    )


async def give_first_phase(
    record: BotSessionRecord, service: SessionService, botsessions: BotSessions
) -> BotSessionRecord:
    """`connecting` (Created) for a BotSession without a phase; the record as it is then."""
    first = Transition(None, Phase.CONNECTING, Reason.CREATED)
    try:
        record, _ = await service.transition(record, [first], ACTOR, service.now())
    except RevisionConflict:
        # the API creates a BotSession and then writes its first phase: it won the race
        fresh = await botsessions.get(record.key)
        if fresh is None or fresh.phase is None:
            raise
        record = fresh
    return record


@dataclass(frozen=True)
class Reconciler:
    """What reconciling reads and writes: the BotSessions (and the service's compare-and-swap
    for a first phase), Redis and the database."""

    service: SessionService
    botsessions: BotSessions
    redis: RedisStore
    sql: SqlStore
    session_ttl: timedelta


async def reconcile(record: BotSessionRecord, using: Reconciler) -> SyncOutcome:
    if record.phase is None:
        record = await give_first_phase(record, using.service, using.botsessions)
    outcome = SyncOutcome(record)
    state = record.state(using.session_ttl)
    redis = _copy_to_redis(record, state, using.redis, record.ttl(using.session_ttl))
    if await pending_if_down(redis, "redis", record.key, RETRYING):
        outcome.pending.append("redis")
    database = using.sql.write(state, record.recent)
    if await pending_if_down(database, "database", record.key, RETRYING):
        outcome.pending.append("database")
    outcome.unannounced = [e for e in record.recent if e.revision > record.synced_revision]
    return outcome


async def _copy_to_redis(
    record: BotSessionRecord, state: SessionState, redis: RedisStore, ttl: timedelta
) -> None:
    if record.phase is not Phase.INACTIVE:
        await redis.write(state, ttl, record.recent, restore=True)
        return
    # Redis keeps live sessions only: just replace an older live copy
    held = await redis.get(record.key)
    if held is not None and held.version < record.version:
        if record.reason is Reason.CLEARED:  # a clear removed the keys: keep them gone
            await redis.remove(record.key, record.version)
        else:
            await redis.write(state, ttl, record.recent, restore=True)
            return
    await redis.emit(record.key, transition_events(record.recent))


async def cleanup_deleted(
    record: BotSessionRecord, redis: RedisStore, sql: SqlStore, now: datetime
) -> list[str]:
    """Remove the Redis keys (leaving a tombstone of this version, so no older writer brings
    them back) and mark the database row ended; idempotent. Returns what is still pending
    (the finalizer retries until nothing is).

    The row's ended state takes revision + 1 without a transition of the BotSession: an
    object being deleted takes no more transitions (resources.phase_patch tests for it), so
    no writer can take that revision any more."""
    pending = []
    try:
        await redis.remove(record.key, record.version)
        removed = removal_event(record.version, record.phase, f"{ACTOR}:deleted", now)
        await redis.emit(record.key, removed)
    except StoreUnavailable:
        pending.append("redis")
    ended = Version(record.incarnation, record.revision + 1)
    try:
        await sql.mark_ended(record.key, Reason.CLEARED, ended, now, f"{ACTOR}:deleted")
    except StoreUnavailable:
        pending.append("database")
    event(
        log, "session deleted", botId=record.key.bot_id, userId=record.key.user_id, pending=pending
    )
    return pending


def conditions(
    record: BotSessionRecord,
    pending: list[str],
    now: datetime,
    previous: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Ready (the session is connected) and Synced (Redis and the database hold this
    revision). lastTransitionTime moves only when a condition's status changes."""
    before = {c.get("type"): c for c in previous or []}
    phase = record.phase.value if record.phase else "none"
    wanted = [
        (
            "Ready",
            record.phase is Phase.ACTIVE,
            record.reason.value if record.reason else phase.title(),
            f"session is {phase}",
        ),
        (
            "Synced",
            not pending,
            "Synced" if not pending else "".join(p.title() for p in pending) + "Unavailable",
            f"revision {record.revision} is in Redis and the database"
            if not pending
            else "waiting for " + " and ".join(pending),
        ),
    ]
    result = []
    for kind, ok, reason, message in wanted:
        status = "True" if ok else "False"
        old = before.get(kind)
        since = old["lastTransitionTime"] if old and old.get("status") == status else None
        result.append(
            {
                "type": kind,
                "status": status,
                "reason": reason.replace(" ", ""),
                "message": message,
                "observedGeneration": record.generation,
                "lastTransitionTime": since or format_time(now),
            }
        )
    return result
