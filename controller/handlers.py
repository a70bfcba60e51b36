"""kopf handlers: thin wiring over sessions.usecases.reconcile. No session logic lives here."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import kopf

from controller import metrics
from controller.catch_up import CatchUp
from controller.housekeeping_loop import HousekeepingLoop
from controller.last_seen import LastSeenCopy
from controller.liveness import LivenessWatch
from controller.persistence import NoDiffBase
from controller.sync import Announcer, sync_and_mark
from controller.webhooks import WebhookDelivery
from sessions.adapters.kubernetes.botsessions import kept_labels, record_of
from sessions.adapters.kubernetes.crd import FINALIZER, GROUP, PLURAL, VERSION
from sessions.adapters.kubernetes.peering import Activity, KopfPeers, Standalone
from sessions.adapters.tasks import stop
from sessions.domain.model import InvalidSessionInput, SessionKey, utcnow
from sessions.domain.settings import Settings
from sessions.runtime import EVERY_BOTSESSION_WAIT, Runtime
from sessions.usecases.reconcile import cleanup_deleted, conditions, first_phase_awaited

registry = kopf.OperatorRegistry()
RESOURCE = (GROUP, VERSION, PLURAL)


def retry_delay(retry: int) -> float:
    """Exponential backoff for stores that are down: 1, 2, 4 ... 60 s."""
    return float(min(60, 2 ** min(retry, 6)))


def configure(settings: kopf.OperatorSettings, config: Settings) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]
    settings.peering.lifetime = 30  # a standby takes over this long after the active dies
    # At most this many objects are handled at once; the others' events wait as raw dicts.
    # Unlimited, a burst of creations holds every object's handler state at the same time
    # and the process keeps that peak as its RSS: 383 MB instead of 212 MB after creating
    # 3,000 (docs/benchmarks.md, "Operator at scale"). A worker frees its slot 0.25 s after its
    # object's last event: the slots then cap the rate at 800 objects a second, above what
    # one core resumes (kopf's default, 5 s, caps it at 40; 1 s held a restart with 10,000
    # objects at 55 s: docs/benchmarks.md, "Operator restart"). The limit
    # is safe only because no @kopf.index is registered: kopf makes every worker wait until
    # all objects are indexed, which never happens past the limit (see
    # sessions.adapters.kubernetes.informer).
    settings.queueing.worker_limit = config.worker_limit
    settings.queueing.idle_timeout = 0.25


@dataclass(frozen=True)
class Peering:
    """This replica in a kopf active/standby pair (controller.main fills it from its flags)."""

    name: str
    identity: str  # kopf's (POD_ID)
    priority: int


def runtime_of(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Through the `kubernetes` library, like the operator's own calls
    (sessions.adapters.kubernetes.client.load_config finds credentials in the same order):
    the pod's service account, else the kubeconfig with its exec and OIDC plugins. kopf asks
    again when the API server refuses an expired token. An explicit registry has none of
    kopf's fallback logins, hence this handler."""
    info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
    return info


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.settings
    configure(settings, config)
    memo.runtime = runtime = await Runtime.open(
        config, migrate=True, every_botsession=True, wait_for_index=False
    )
    runtime.observe(metrics.GUARDS)
    metrics.serve(config.metrics_port)
    index = runtime.index
    peering: Peering | None = memo.peering
    activity: Activity = (
        KopfPeers(runtime.kube, runtime.namespace, peering.name, peering.identity, peering.priority)
        if peering
        else Standalone()
    )
    housekeeping = HousekeepingLoop(
        runtime, index, activity, runner=peering.identity if peering else None
    )
    memo.announcer = announcer = Announcer(
        runtime.kube, runtime.namespace, config.events_per_second
    )
    catch_up = CatchUp(runtime, announcer, index, lambda: housekeeping.leading, activity.active)
    last_seen = LastSeenCopy(runtime, index, lambda: housekeeping.leading)
    memo.tasks = [
        asyncio.create_task(housekeeping.run(), name="housekeeping"),
        asyncio.create_task(catch_up.run(), name="catch-up"),
        asyncio.create_task(last_seen.run(), name="lastSeen copy"),
        asyncio.create_task(
            LivenessWatch(runtime, lambda: housekeeping.leading).run(), name="liveness"
        ),
        asyncio.create_task(
            WebhookDelivery(
                runtime, memo.get("webhooks", []), housekeeping.lease, lambda: housekeeping.leading
            ).run(),
            name="webhooks",
        ),
    ]
    # kopf starts watching once this handler returns: the index is filled first (the
    # catch-up syncs what changes meanwhile)
    await runtime.wait_for_index(EVERY_BOTSESSION_WAIT)


@kopf.on.cleanup(registry=registry)
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await stop(*memo.get("tasks", []))  # the housekeeping loop lets go its lease
    if "runtime" in memo:
        await runtime_of(memo).close()


def in_step(body: kopf.Body) -> bool:
    """This revision and generation are already in Redis and the database, announced and in
    the conditions: nothing to do (most events: the sync's own status write, lastSeen copies,
    a restart's resume)."""
    status, meta = body.status, body.metadata
    synced = bool(
        status.get("phase")
        and status.get("syncedRevision") == status.get("revision")
        and status.get("observedGeneration") == meta.get("generation")
    )
    return synced and labels_missing(body) == {}


def labels_missing(body: kopf.Body) -> dict[str, str]:
    try:
        key = SessionKey(body.spec.get("botId", ""), body.spec.get("userId", ""))
    except InvalidSessionInput:
        return {}  # not a BotSession the sync can read: it says so itself
    wanted = kept_labels(body.metadata.get("name", ""), key)
    return {k: v for k, v in wanted.items() if body.metadata.labels.get(k) != v}


@kopf.on.event(*RESOURCE, registry=registry)
async def sync(
    type: str | None,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """First phase if empty; Redis and the database made to match; Events; conditions.

    Every event of a BotSession comes here, a restart's listing included (type None); one in
    step costs no I/O. One attempt per revision and generation: a sync that a store keeps
    pending is marked so in the conditions and retried by the catch-up (controller.catch_up),
    which also covers a failure here. An event handler, not kopf's create/update handlers:
    those make kopf rewrite an annotation of every BotSession after every change
    (controller.persistence)."""
    if not memo.get("handled"):  # kopf's memo here is this object's own copy
        memo.handled = True
        metrics.HANDLED_OBJECTS.inc()
    if type == "DELETED" or body.metadata.get("deletionTimestamp") or in_step(body):
        return
    runtime = runtime_of(memo)
    record = record_of(dict(body))
    if first_phase_awaited(record, utcnow(), runtime.settings.first_phase_grace):
        return  # the API's first phase comes as the next event: synced then
    for label, value in labels_missing(body).items():  # lookups by bot, and by alias
        patch.metadata.labels[label] = value
    attempt = (record.revision, record.generation)
    if memo.get("attempted") == attempt:
        return  # our own status write of a pending sync: the catch-up retries it
    memo.attempted = attempt
    outcome = await sync_and_mark(
        runtime,
        memo.announcer,
        record,
        body.metadata.get("generation"),
        body.status.get("conditions"),
    )
    if outcome is not None and not outcome.synced:
        kopf.warn(
            body,
            reason="SyncPending",
            message=f"{' and '.join(outcome.pending)} unavailable; retrying",
        )


@kopf.on.delete(*RESOURCE, registry=registry)
async def finalize(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """The finalizer: remove the Redis keys and mark the database row ended, then let go."""
    record = record_of(dict(body))
    runtime = runtime_of(memo)
    pending = await cleanup_deleted(record, runtime.redis, runtime.sql, runtime.service.now())
    if not pending:
        return
    patch.status["conditions"] = conditions(
        record, pending, utcnow(), body.status.get("conditions")
    )
    kopf.warn(
        body,
        reason="CleanupPending",
        message=f"{' and '.join(pending)} unavailable; the finalizer retries",
    )
    raise kopf.TemporaryError(f"cleanup waiting for {pending}", delay=retry_delay(retry))
