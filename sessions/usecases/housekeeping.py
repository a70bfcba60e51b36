"""The operator's periodic work, as plain functions (kopf-free):

- run_sweep: the expiry sweep, swept sessions turned inactive (Expired), BotSessions
  inactive for longer than the retention deleted, the run recorded;
- connect_timeout_due, time_out_connecting: connecting for longer than the connect timeout
  becomes failed (ConnectTimeout);
- count_orphans: session:* keys that no BotSession owns.

Keeping Redis and the database in step is in sessions.usecases.healing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sessions.adapters.redis.store import RedisStore
from sessions.adapters.sql.store import SweepRun
from sessions.domain.logs import event
from sessions.domain.model import (
    HistoryEntry,
    InvalidSessionInput,
    Phase,
    Reason,
    RevisionConflict,
    SessionKey,
    StoreUnavailable,
    Transition,
)
from sessions.domain.records import BotSessionRecord, BotSessions
from sessions.domain.settings import Settings
from sessions.usecases.reconcile import ACTOR, first_phase_awaited, give_first_phase
from sessions.usecases.service import SessionService
from sessions.usecases.sweep import SweepResult, sweep

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    result: SweepResult | None = None
    expired: list[HistoryEntry] = field(default_factory=list)
    retired: list[SessionKey] = field(default_factory=list)
    run: SweepRun | None = None
    error: str | None = None


def changed_at(record: BotSessionRecord) -> datetime:
    """When the session entered its current phase."""
    if record.recent and record.recent[-1].revision == record.revision:
        return record.recent[-1].at
    return record.seen


def retirable(record: BotSessionRecord, retention: timedelta, now: datetime) -> bool:
    return (
        record.phase is Phase.INACTIVE
        and not record.deleting
        and changed_at(record) + retention <= now
    )


async def retire_inactive(
    botsessions: BotSessions,
    records: Sequence[BotSessionRecord],
    retention: timedelta,
    now: datetime,
) -> list[SessionKey]:
    """Delete BotSessions inactive for longer than the retention (the finalizer cleans up).

    `records` may lag the API server (an index): each candidate is read again right before
    its deletion, and deleted only as read (preconditions on uid and resourceVersion), so a
    session that reconnected meanwhile stays, with its Redis keys."""
    retired = []
    for candidate in records:
        if not retirable(candidate, retention, now):
            continue
        record = await botsessions.get(candidate.key)
        if record is None or not retirable(record, retention, now):
            continue
        if await botsessions.delete_unchanged(record):
            retired.append(record.key)
            event(
                log, "inactive session retired", botId=record.key.bot_id, userId=record.key.user_id
            )
    return retired


async def run_sweep(
    service: SessionService,
    redis: RedisStore,
    botsessions: BotSessions,
    records: Sequence[BotSessionRecord],
    runner: str,
    settings: Settings,
) -> SweepReport:
    """One sweep with everything that follows from it. Failures are caught, logged at error
    level and recorded as a failed run (when the database can take it)."""
    report = SweepReport()
    started = service.now()
    try:
        report.result = await sweep(redis, batch_size=settings.sweep_batch_size)
        report.expired = await service.expire_swept(report.result.removed)
        report.retired = await retire_inactive(
            botsessions, records, settings.inactive_retention, service.now()
        )
        report.run = await service.record_sweep(report.result, runner)
    except Exception as exc:
        report.error = f"{exc.__class__.__name__}: {exc}"
        event(log, "sweep failed", logging.ERROR, runner=runner, error=report.error)
        # when the database is what failed, the metric and the Warning event still tell
        with contextlib.suppress(StoreUnavailable):
            report.run = await service.record_sweep(
                None, runner, error=report.error, started_at=started
            )
    return report


def connect_timeout_due(record: BotSessionRecord, timeout: timedelta, now: datetime) -> bool:
    return record.phase is Phase.CONNECTING and changed_at(record) + timeout <= now


async def adopt_phaseless(
    service: SessionService,
    botsessions: BotSessions,
    records: Sequence[BotSessionRecord],
    grace: timedelta,
) -> int:
    """Give the first phase to BotSessions the API created but did not give one within the
    grace (the API died between its create and its first compare-and-swap). Returns how many
    it gave; each is read again first, so one the API got to meanwhile is left alone."""
    now = service.now()
    adopted = 0
    for candidate in records:
        if candidate.phase is not None or candidate.deleting or not candidate.created_by_api:
            continue
        if first_phase_awaited(candidate, now, grace):
            continue
        record = await botsessions.get(candidate.key)
        if record is not None and record.phase is None and not record.deleting:
            await give_first_phase(record, service, botsessions)
            adopted += 1
    return adopted


async def time_out_connecting(
    service: SessionService,
    botsessions: BotSessions,
    records: Sequence[BotSessionRecord],
    timeout: timedelta,
    concurrency: int = 20,
) -> list[HistoryEntry]:
    """Turn every session connecting for longer than the connect timeout into failed
    (ConnectTimeout). `records` may be slim (the index): only the due ones are read in full,
    one GET each, right before their compare-and-swap."""

    def due_now(record: BotSessionRecord) -> bool:
        return not record.deleting and connect_timeout_due(record, timeout, service.now())

    due = [r for r in records if due_now(r)]
    step = Transition(Phase.CONNECTING, Phase.FAILED, Reason.CONNECT_TIMEOUT)
    slots = asyncio.Semaphore(concurrency)

    async def time_out(record: BotSessionRecord) -> list[HistoryEntry]:
        async with slots:
            full = await botsessions.get(record.key)
            if full is None or not due_now(full):
                return []
            with contextlib.suppress(RevisionConflict):  # it changed meanwhile: next pass sees
                _, done = await service.transition(full, [step], ACTOR, service.now())
                return done
            return []

    return [entry for done in await asyncio.gather(*map(time_out, due)) for entry in done]


async def count_orphans(redis: RedisStore, owned: set[SessionKey]) -> int:
    """session:<botId>:<userId> hashes no BotSession owns (left alone, only counted). This
    scans the keyspace, so it runs rarely and never in a request path."""
    orphans = 0
    async for member in redis.session_keys():
        bot_id, user_id = member.split(":", 1)
        try:
            if SessionKey(bot_id, user_id) not in owned:
                orphans += 1
        except InvalidSessionInput:
            orphans += 1
    return orphans
