"""One BotSession synced and its status marked: the work of the kopf handler and of the
catch-up alike (plain functions, no kopf)."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any

from aiolimiter import AsyncLimiter

from controller import metrics
from sessions.adapters.kubernetes.client import KubeClient
from sessions.adapters.kubernetes.events import announce_transition, event_name
from sessions.domain.model import HistoryEntry, StoreUnavailable, utcnow
from sessions.domain.records import BotSessionRecord
from sessions.runtime import Runtime
from sessions.usecases.reconcile import SyncOutcome, conditions, reconcile

REMEMBERED = 10_000  # Event names the announcer remembers having posted


class Announcer:
    """Posts the Event of each transition, at most `per_second` a second (a leaky bucket).
    Past the budget the Event is dropped and counted: in a storm of reconnects the API
    server's writes go to the BotSessions, and every transition stays in the history and
    the status's recentTransitions. client-go's event recorder drops under load the same way.
    The names it posted lately are remembered: a revision whose sync lost its status write to
    the next revision is announced by that next sync again, and would be posted twice (a 409)."""

    def __init__(
        self, client: KubeClient, namespace: str, per_second: float, remember: int = REMEMBERED
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.budget = AsyncLimiter(per_second, 1.0)
        self.remember = remember
        self._posted: OrderedDict[str, None] = OrderedDict()  # names, oldest first

    async def announce(self, record: BotSessionRecord, entry: HistoryEntry) -> None:
        name = event_name(record.name, entry)
        if name in self._posted:
            return  # a sync of this revision that could not mark itself synced did it
        if not self.budget.has_capacity():
            metrics.EVENTS_DROPPED.inc()
        else:
            await self.budget.acquire()
            if not await announce_transition(self.client, self.namespace, record, entry):
                self._remember(name)
                return  # posted before (by another replica, or before a restart): counted then
        self._remember(name)
        metrics.TRANSITIONS.labels(
            from_phase=entry.from_phase.value if entry.from_phase else "",
            to_phase=entry.to_phase.value,
            reason=entry.reason.value,
        ).inc()

    def _remember(self, name: str) -> None:
        self._posted[name] = None
        if len(self._posted) > self.remember:
            self._posted.popitem(last=False)


async def sync_and_mark(
    runtime: Runtime,
    announcer: Announcer,
    record: BotSessionRecord,
    generation: int | None,
    previous_conditions: list[dict[str, Any]] | None,
) -> SyncOutcome | None:
    """Reconcile, announce the transitions not announced yet, and write the status
    (conditions, observedGeneration, syncedRevision when synced). None when the object
    moved on to a newer revision meanwhile: its own sync marks that one."""
    try:
        outcome = await reconcile(record, runtime.reconciler)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(stage="sync").inc()
        raise
    for entry in outcome.unannounced:
        await announcer.announce(outcome.record, entry)
    status: dict[str, Any] = {
        "conditions": conditions(outcome.record, outcome.pending, utcnow(), previous_conditions),
        "observedGeneration": generation,
    }
    if outcome.synced:
        status["syncedRevision"] = outcome.record.revision
    if not await runtime.botsessions.set_sync_status(outcome.record, status):
        metrics.STALE_SYNCS.inc()
        return None
    if outcome.synced:
        with contextlib.suppress(StoreUnavailable):  # a restart's early catch-up looks again
            await runtime.redis.sync_done(outcome.record.key, outcome.record.version)
    return outcome
