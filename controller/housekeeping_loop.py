"""The operator's background loop: connect timeout, sweep, the check that Redis kept its
data, the audit of every session and the orphan count, on the lease holder only.

kopf runs start-up tasks on a standby peer too, so this loop takes a Redis lease first, and
only on the peer that kopf lets handle objects (the active one,
sessions.adapters.kubernetes.peering) once its BotSession index is filled
(sessions.adapters.kubernetes.informer). A replica that stops being active releases the
lease at once, and so does one that shuts down, so a planned handover does not wait for the
lease's TTL. The work itself is in sessions.usecases.housekeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta

from controller import metrics
from sessions.adapters.kubernetes.events import post_operator_warning
from sessions.adapters.kubernetes.informer import BotSessionIndex
from sessions.adapters.kubernetes.peering import Activity
from sessions.adapters.redis.lease import LeaseLost
from sessions.domain.logs import event
from sessions.domain.model import Phase, StoreUnavailable, to_millis
from sessions.runtime import Runtime
from sessions.usecases.healing import audit, restore_if_lost
from sessions.usecases.housekeeping import (
    adopt_phaseless,
    count_orphans,
    run_sweep,
    time_out_connecting,
)

log = logging.getLogger(__name__)
LEASE_TTL = timedelta(seconds=30)
CONNECT_CHECK_INTERVAL = 5.0  # seconds; the precision of the connect timeout


class Every:
    """A pass over every session, due every `interval` seconds; the first is one interval
    after the first ask, so none runs while a restart resumes every object."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.at: float | None = None

    def due(self, now: float) -> bool:
        if self.at is not None and now < self.at:
            return False
        first = self.at is None
        self.at = now + self.interval
        return not first


HOLDER_CHECK_INTERVAL = 60.0  # seconds between looks at who holds the lease, when not us


def foreign_namespace(holder: str | None, namespace: str) -> str | None:
    """The namespace of a lease holder that is not of this installation's namespace."""
    if holder is None or "/" not in holder:
        return None  # free, or taken by a release from before holders named their namespace
    theirs = holder.split("/", 1)[0]
    return theirs if theirs != namespace else None


def runner_name() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class HousekeepingLoop:
    def __init__(
        self,
        runtime: Runtime,
        index: BotSessionIndex,
        activity: Activity,
        runner: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.index = index
        self.records = index.records
        self.activity = activity
        self.active = False  # the last answer of `activity`, kept while it cannot be read
        self.leading = False  # holds the lease: the catch-up runs only then
        self.runner = runner or runner_name()
        # the namespace in the holder: an installation in another namespace under the same
        # Redis key prefix shows in it (a shard set up without a prefix of its own)
        self.lease = runtime.redis.lease(
            "housekeeping", LEASE_TTL, f"{runtime.namespace}/{self.runner}"
        )
        self.next_holder_check = 0.0
        settings = runtime.settings
        self.tick = min(
            CONNECT_CHECK_INTERVAL,
            settings.resync_interval.total_seconds(),
            settings.cleanup_interval.total_seconds(),
        )
        self.next_resync = 0.0
        self.audits = Every(settings.audit_interval.total_seconds())
        self.orphan_scans = Every(settings.orphan_scan_interval.total_seconds())
        self.next_failure_report = 0.0

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    metrics.RECONCILE_ERRORS.labels(stage="housekeeping").inc()
                    event(log, "housekeeping step failed", logging.ERROR, error=str(exc))
                await self.rest()
        finally:
            await self.lease.release()
            self.lead(False)

    async def rest(self) -> None:
        """One tick; cut short when the index fills, so the lease is taken at once then."""
        if self.index.filled.is_set():
            await asyncio.sleep(self.tick)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.index.filled.wait(), self.tick)

    def lead(self, leader: bool) -> None:
        if leader != self.leading:
            event(log, "housekeeping lease taken" if leader else "housekeeping lease let go")
        self.leading = leader
        metrics.SWEEP_LEADER.set(int(leader))

    async def may_lead(self) -> bool:
        """Only the active peer, with its index filled, may hold the lease."""
        if not self.index.filled.is_set():
            return False
        try:
            self.active = await self.activity.active()
        except StoreUnavailable as exc:  # the API server: keep the last answer
            event(log, "could not read the peering", logging.WARNING, error=str(exc))
        return self.active

    async def step(self) -> None:
        if self.index.filled.is_set():
            self.publish_phases()
        if not await self.may_lead():
            await self.lease.release()
            self.lead(False)
            return
        try:
            leader = await self.lease.hold()
        except StoreUnavailable as exc:
            self.lead(False)
            await self.report_unavailable(str(exc))
            return
        self.lead(leader)
        if not leader:
            await self.check_holder()
            return
        try:
            await self.lease.kept_during(self.lead_step(), every=LEASE_TTL / 3)
        except LeaseLost as exc:
            self.lead(False)
            event(log, "housekeeping lease lost; pass cancelled", logging.WARNING, error=str(exc))

    async def check_holder(self) -> None:
        """Another installation holding this prefix's lease shares every key under it: the
        lease, the sentinel of lost data, the lastSeen backlog. Said once every
        HOLDER_CHECK_INTERVAL, and in botsession_redis_prefix_shared."""
        loop = asyncio.get_running_loop()
        if loop.time() < self.next_holder_check:
            return
        self.next_holder_check = loop.time() + HOLDER_CHECK_INTERVAL
        holder = await self.lease.holder()
        other = foreign_namespace(holder, self.runtime.namespace)
        metrics.PREFIX_SHARED.set(int(other is not None))
        if other is not None:
            event(
                log,
                "another installation uses this Redis key prefix",
                logging.ERROR,
                namespace=other,
                prefix=self.runtime.settings.redis_key_prefix,
                fix="give each installation sharing one Redis its own "
                "BOTSESSION_REDIS_KEY_PREFIX (the chart's redis.keyPrefix)",
            )

    async def lead_step(self) -> None:
        """The leader's work, under the lease (kept however long a pass takes)."""
        loop = asyncio.get_running_loop()
        # here rather than a kopf timer per connecting object: with any timer, kopf keeps the
        # latest full body of every object in memory (docs/benchmarks.md, "Operator at scale")
        runtime, settings, index = self.runtime, self.runtime.settings, self.index
        await adopt_phaseless(
            runtime.service, runtime.botsessions, index.in_phase(None), settings.first_phase_grace
        )
        await time_out_connecting(
            runtime.service,
            runtime.botsessions,
            index.in_phase(Phase.CONNECTING),
            settings.connect_timeout,
        )
        if await self.sweep_due():
            await self.sweep()
        if loop.time() >= self.next_resync:
            self.next_resync = loop.time() + settings.resync_interval.total_seconds()
            restored = await restore_if_lost(
                runtime.botsessions, runtime.redis, self.records, settings.session_ttl
            )
            metrics.HEALED.labels(store="redis").inc(restored or 0)
        if self.audits.due(loop.time()):
            records, ttl = self.records(), settings.session_ttl
            healed = await audit(runtime.botsessions, runtime.redis, runtime.sql, records, ttl)
            metrics.HEALED.labels(store="redis").inc(healed.redis)
            metrics.HEALED.labels(store="database").inc(healed.database)
        if self.orphan_scans.due(loop.time()):
            owned = {r.key for r in self.records()}
            metrics.ORPHANED_KEYS.set(await count_orphans(runtime.redis, owned))

    def publish_phases(self) -> None:
        now = self.runtime.service.now()
        oldest_connecting = 0.0
        for record in self.index.in_phase(Phase.CONNECTING):
            if record.recent:
                age = (now - record.recent[-1].at).total_seconds()
                oldest_connecting = max(oldest_connecting, age)
        for phase in Phase:
            metrics.SESSIONS.labels(phase=phase.value).set(self.index.count(phase))
        metrics.STUCK_CONNECTING.set(oldest_connecting)

    async def sweep_due(self) -> bool:
        last = await self.runtime.redis.last_sweep()
        interval_ms = self.runtime.settings.cleanup_interval.total_seconds() * 1000
        return last is None or to_millis(self.runtime.service.now()) - last >= interval_ms

    async def sweep(self) -> None:
        with metrics.SWEEP_DURATION.time():
            report = await run_sweep(
                self.runtime.service,
                self.runtime.redis,
                self.runtime.botsessions,
                self.records(),
                self.runner,
                self.runtime.settings,
            )
        await self.runtime.redis.mark_sweep(self.runtime.service.now())
        if report.error:
            await self.failed(report.error)
            return
        if report.result is not None:
            for why in ("expired", "inactive", "gone", "malformed"):
                metrics.SWEEP_REMOVED.labels(why=why).inc(report.result.count(why))
        metrics.SWEEP_LAST_SUCCESS.set_to_current_time()

    async def report_unavailable(self, error: str) -> None:
        """Redis is down: no sweep can run. Report it once per cleanup interval."""
        loop = asyncio.get_running_loop()
        if loop.time() < self.next_failure_report:
            return
        self.next_failure_report = (
            loop.time() + self.runtime.settings.cleanup_interval.total_seconds()
        )
        await self.failed(error)
        with contextlib.suppress(StoreUnavailable):  # the database may be down too
            await self.runtime.service.record_sweep(None, self.runner, error=error)

    async def failed(self, error: str) -> None:
        metrics.SWEEP_FAILURES.inc()
        event(log, "sweep failed", logging.ERROR, runner=self.runner, error=error)
        try:
            await post_operator_warning(
                self.runtime.kube, self.runtime.namespace, reason="SweepFailed", message=error
            )
        except Exception as exc:  # an event is best effort; the metric is the alert
            event(log, "could not post the SweepFailed event", logging.WARNING, error=str(exc))
