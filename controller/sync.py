"""One BotSession synced and its status marked: the work of the kopf handler and of the
catch-up alike (plain functions, no kopf)."""

from __future__ import annotations

from typing import Any

from controller import metrics
from sessions.adapters.kubernetes.events import announce_transition
from sessions.domain.model import utcnow
from sessions.domain.records import BotSessionRecord
from sessions.runtime import Runtime
from sessions.usecases.reconcile import SyncOutcome, conditions, reconcile


async def sync_and_mark(
    runtime: Runtime,
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
        if await announce_transition(runtime.kube, runtime.namespace, outcome.record, entry):
            metrics.TRANSITIONS.labels(
                from_phase=entry.from_phase.value if entry.from_phase else "",
                to_phase=entry.to_phase.value,
                reason=entry.reason.value,
            ).inc()
    status: dict[str, Any] = {
        "conditions": conditions(outcome.record, outcome.pending, utcnow(), previous_conditions),
        "observedGeneration": generation,
    }
    if outcome.synced:
        status["syncedRevision"] = outcome.record.revision
    if not await runtime.botsessions.set_sync_status(outcome.record, status):
        metrics.STALE_SYNCS.inc()
        return None
    return outcome
