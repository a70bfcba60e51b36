"""The catch-up: BotSessions that kopf's queue has not got to, synced without waiting.

kopf handles at most `worker_limit` objects at once, in the order their events came. After
a restart with 10,000 BotSessions every one is resumed first (each costs kopf ~1.5 ms of CPU,
and a worker holds its slot a little after its object's last event), so a BotSession
created meanwhile, or a report's new revision, would wait its turn behind all of them: 55 s
at 10,000 (docs/benchmarks.md, "Operator restart"). The catch-up reads the operator's own
index (sessions.adapters.kubernetes.informer) once a second on the housekeeping leader and
syncs the BotSessions whose last change has waited longer than `catch_up_after`, each read
again from the API server first. kopf reaches them later and finds them in step. Both
paths are safe together: every write is guarded by the revision it was made for.

While the index is still being filled (its first LIST of 100,000 BotSessions takes over
20 s, and kopf starts only after it), the catch-up syncs, on the active kopf peer, what
changed since the fill began (BotSessionIndex.early_unsynced) and what was written while
no operator synced it (Redis's sync-wanted set, each BotSession read first), so a
BotSession created during a restart is synced within seconds whatever their number."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from controller import metrics
from controller.steps import guarded
from controller.sync import Announcer, sync_and_mark
from sessions.adapters.kubernetes.informer import BotSessionIndex
from sessions.domain.logs import event
from sessions.domain.model import SessionKey, StoreUnavailable
from sessions.domain.records import BotSessionRecord
from sessions.runtime import Runtime
from sessions.usecases.reconcile import first_phase_awaited

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between looks at the index
BATCH = 50  # BotSessions synced per look at most, newest change first
# a BotSession the catch-up could not sync is tried again after 1, 2, 4 ... seconds, at
# most this long: kopf's handler tries each revision once, so these are its retries
RETRY_AFTER = 30.0


class CatchUp:
    def __init__(
        self,
        runtime: Runtime,
        announcer: Announcer,
        index: BotSessionIndex,
        leading: Callable[[], bool],
        active_peer: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.runtime = runtime
        self.announcer = announcer
        self.index = index
        self.leading = leading  # holds the housekeeping lease (which needs the index filled)
        self.active_peer = active_peer  # before the index is filled (None: then it waits)
        self.retry_at: dict[str, float] = {}  # uid -> loop time; those that stayed behind
        self.failures: dict[str, int] = {}  # uid -> syncs that failed in a row

    async def candidates(self) -> list[BotSessionRecord]:
        """The index's unsynced BotSessions; before it is filled, the early ones and those
        Redis says were written but not synced (read from the API server; the ones found in
        step or gone are forgotten there)."""
        if self.index.filled.is_set():
            return self.index.unsynced()
        found = {record.uid: record for record in self.index.early_unsynced()}
        redis, botsessions = self.runtime.redis, self.runtime.botsessions
        wanted: list[SessionKey] = []
        with contextlib.suppress(StoreUnavailable):  # the early watch's ones go on without it
            wanted = await redis.sync_wanted(BATCH)
        for key in wanted:
            record = await botsessions.get(key)
            if record is None:
                await redis.sync_done(key, None)
            elif record.waiting_since is None:
                await redis.sync_done(key, record.version)
            else:
                found.setdefault(record.uid, record)
        return list(found.values())

    def due(self, records: list[BotSessionRecord] | None = None) -> list[BotSessionRecord]:
        """The BotSessions waiting longer than catch_up_after, newest change first: kopf
        works through its queue from the oldest end, so the two meet rather than collide on
        the same objects (and a BotSession created during a restart's resume is first)."""
        settings, now = self.runtime.settings, self.runtime.service.clock()
        clock = asyncio.get_running_loop().time()
        waiting, still_behind = [], {}
        for record in self.index.unsynced() if records is None else records:
            since = record.waiting_since
            if since is None or now - since < settings.catch_up_after:
                continue
            if first_phase_awaited(record, now, settings.first_phase_grace):
                continue
            retry_at = self.retry_at.get(record.uid, 0.0)
            if retry_at > clock:
                still_behind[record.uid] = retry_at
                continue
            waiting.append((since, record))
        self.retry_at = still_behind  # forget the ones that caught up or went
        behind = still_behind.keys() | {record.uid for _, record in waiting}
        self.failures = {uid: n for uid, n in self.failures.items() if uid in behind}
        waiting.sort(key=lambda pair: pair[0], reverse=True)
        return [record for _, record in waiting[:BATCH]]

    async def step(self) -> int:
        """Sync what is due; returns how many were synced here. A BotSession that fails is
        tried again after a backoff (up to RETRY_AFTER), so one that always fails holds up no
        other; a store that is down ends the step (the next ones would wait for it too)."""
        synced = 0
        for candidate in self.due(await self.candidates()):
            try:
                done = await self.sync(candidate)
            except (asyncio.CancelledError, StoreUnavailable):
                raise
            except Exception as exc:
                metrics.RECONCILE_ERRORS.labels(stage="catch-up").inc()
                event(
                    log,
                    "catch-up of a BotSession failed",
                    logging.ERROR,
                    botId=candidate.key.bot_id,
                    userId=candidate.key.user_id,  # logged as its fingerprint
                    error=type(exc).__name__,
                )
                done = False
            if done:
                synced += 1
            elif done is False:
                failed = self.failures[candidate.uid] = self.failures.get(candidate.uid, 0) + 1
                delay = min(RETRY_AFTER, 2.0 ** (failed - 1))
                self.retry_at[candidate.uid] = asyncio.get_running_loop().time() + delay
        metrics.CAUGHT_UP.inc(synced)
        return synced

    async def sync(self, candidate: BotSessionRecord) -> bool | None:
        """True when synced here, False when a store kept it behind; None when there was
        nothing to do any more (synced by someone else, moved on to a newer revision, gone)."""
        record = await self.runtime.botsessions.get(candidate.key)
        if record is None or record.uid != candidate.uid or record.waiting_since is None:
            return None  # kopf or the API got there meanwhile, or it went
        outcome = await sync_and_mark(self.runtime, self.announcer, record, record.generation, None)
        return None if outcome is None else outcome.synced

    async def may_act(self) -> bool:
        if self.index.filled.is_set():
            return self.leading()
        if self.active_peer is None:
            return False
        return bool(await guarded("catch-up", self.active_peer))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            if await self.may_act():
                await guarded("catch-up", self.step)
