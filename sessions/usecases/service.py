"""The use-cases the API and the controller share.

Order of writes (docs/architecture.md, "Compare-and-swap"): the BotSession first (the
source of truth, compare-and-swap on status.revision), then Redis, then the database. When
the Kubernetes API fails nothing else is written; when Redis or the database fails the
answer says which write is pending and the controller repairs it from the BotSession.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar

from sessions.adapters.redis.store import (
    Heartbeat,
    RedisStore,
    SweptSession,
    transition_events,
)
from sessions.adapters.sql.store import ClearAudit, SqlStore, SweepRun, user_fingerprint
from sessions.domain.logs import event, log_fields
from sessions.domain.model import (
    HistoryEntry,
    Identity,
    InvalidSessionInput,
    Phase,
    Reason,
    ReportedState,
    RevisionConflict,
    SessionDeleting,
    SessionInactive,
    SessionKey,
    SessionNotFound,
    SessionState,
    StoreUnavailable,
    Transition,
    mask_phone,
    plan_report,
    to_millis,
    utcnow,
)
from sessions.domain.records import BotSessionRecord, BotSessions, DeleteOutcome
from sessions.domain.settings import Settings
from sessions.usecases.sweep import SweepResult

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5


@dataclass(frozen=True)
class ReportResult:
    state: SessionState
    transitions: list[HistoryEntry]
    created: bool
    redis_pending: bool = False
    database_pending: bool = False


T = TypeVar("T")

# where a state was read: "kubernetes" when Redis and the database could not answer
StateSource = Literal["redis", "database", "kubernetes"]
# where history was read: "kubernetes" (the BotSession's last transitions) when the database is down
HistorySource = Literal["database", "kubernetes"]


@dataclass(frozen=True)
class StatusView:
    state: SessionState
    source: StateSource


@dataclass(frozen=True)
class DetailView:
    status: StatusView
    history: list[HistoryEntry]  # newest first
    history_source: HistorySource


@dataclass(frozen=True)
class ClearFlags:
    session: bool = True
    redis: bool = True
    database: bool = True


@dataclass
class ClearResult:
    sessions: int = 0  # BotSessions deleted
    redis_keys: int = 0
    database_rows: int = 0
    pending: list[str] = field(default_factory=list)  # what is still in progress or failed

    @property
    def complete(self) -> bool:
        return not self.pending


class SessionService:
    def __init__(
        self,
        botsessions: BotSessions,
        redis: RedisStore,
        sql: SqlStore,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.botsessions = botsessions
        self.redis = redis
        self.sql = sql
        self.settings = settings
        self.clock = clock

    def now(self) -> datetime:
        """Whole seconds: the precision of the contract's times and of Kubernetes."""
        return self.clock().replace(microsecond=0)

    # --- writing a phase ----------------------------------------------------------------

    async def transition(
        self,
        record: BotSessionRecord,
        steps: Sequence[Transition],
        actor: str,
        now: datetime,
        last_seen: datetime | None = None,
    ) -> tuple[BotSessionRecord, list[HistoryEntry]]:
        """Apply transitions to the BotSession, one compare-and-swap each. lastSeen is
        `now` unless given (an expired session keeps the time it was last seen)."""
        entries = []
        seen = last_seen or now
        ttl = record.ttl(self.settings.session_ttl)
        # a first phase starts an incarnation (model.Version): later than any earlier one's
        incarnation = record.incarnation or (to_millis(self.clock()) if record.phase is None else 0)
        for step in steps:
            revision = record.revision + 1
            entry = HistoryEntry(
                record.key,
                revision,
                step.from_phase,
                step.to_phase,
                step.reason,
                actor,
                now,
                incarnation,
            )
            record = await self.botsessions.set_phase(record, entry, seen, seen + ttl)
            entries.append(entry)
            log_fields(
                log,
                "session transition",
                {
                    "botId": record.key.bot_id,
                    "userId": record.key.user_id,
                    "from": step.from_phase.value if step.from_phase else None,
                    "to": step.to_phase.value,
                    "reason": step.reason.value,
                    "revision": revision,
                    "actor": actor,
                    "phoneNumber": mask_phone(record.identity.phone_number),
                },
            )
        return record, entries

    async def _copy_out(
        self, state: SessionState, entries: Sequence[HistoryEntry], ttl_record: BotSessionRecord
    ) -> tuple[bool, bool]:
        """Write Redis and the database; returns (redis_pending, database_pending)."""
        ttl = ttl_record.ttl(self.settings.session_ttl)
        history = (*ttl_record.recent, *entries)  # a writer before may have missed some
        redis_pending = await pending_if_down(
            self.redis.write(state, ttl, history),
            "redis",
            state.key,
            "the controller will heal it",
        )
        database_pending = await pending_if_down(
            self.sql.write(state, entries), "database", state.key, "the controller will backfill it"
        )
        return redis_pending, database_pending

    async def report(
        self,
        key: SessionKey,
        reported: ReportedState,
        reason: Reason | None = None,
        identity: Identity | None = None,
        actor: str = "api",
        heartbeat_timeout_seconds: int | None = None,
    ) -> ReportResult:
        """A bot reports its phase (docs/architecture.md, "Status transitions").

        Creates the BotSession on a first report (with the identity and the heartbeat
        timeout given, later reports change neither); a report of the current phase only
        refreshes lastSeen; refused transitions raise TransitionRefused.
        """
        now = self.now()
        record = await self.botsessions.get(key)
        created = False
        if record is None:
            record, created = await self.botsessions.create(
                key, identity or Identity(), heartbeat_timeout_seconds=heartbeat_timeout_seconds
            )
        if record.deleting:
            raise SessionDeleting(f"session {key} is being deleted; report again shortly")
        entries: list[HistoryEntry] = []
        for _attempt in range(CAS_ATTEMPTS):
            steps = plan_report(record.phase, reported, reason)
            if not steps:
                break
            try:
                record, done = await self.transition(record, steps, actor, now)
                entries.extend(done)
                break
            except RevisionConflict:
                fresh = await self.botsessions.get(key)
                if fresh is None:
                    raise SessionNotFound(f"session {key} was deleted meanwhile") from None
                record = fresh
        else:
            raise RevisionConflict(f"session {key} kept changing; try again")
        state = record.state(self.settings.session_ttl, now)
        if not entries:
            return await self._refresh(record, state, created)
        redis_pending, database_pending = await self._copy_out(state, entries, record)
        return ReportResult(state, entries, created, redis_pending, database_pending)

    async def _refresh(
        self, record: BotSessionRecord, state: SessionState, created: bool
    ) -> ReportResult:
        """A report of the current phase: refresh lastSeen in Redis (re-writing a session
        Redis lost), nothing else."""
        redis_pending = False
        try:
            beat = await self.redis.heartbeat(
                record.key, state.last_seen, self.settings.heartbeat_timeout, arm=False
            )
            if beat is None:
                await self.redis.write(state, record.ttl(self.settings.session_ttl), restore=True)
        except StoreUnavailable:
            redis_pending = True
        return ReportResult(state, [], created, redis_pending=redis_pending)

    # --- heartbeats and reads ------------------------------------------------------------

    async def heartbeat(self, key: SessionKey) -> Heartbeat:
        """Refresh lastSeen in Redis only. When Redis misses the session or holds it
        inactive, the BotSession decides (one API read, only then): a live BotSession
        restores Redis (a lost write, or a report whose Redis write is still pending),
        unless a removal took it away (a sweep, a clear): then the bot must report again."""
        now = self.now()
        timeout = self.settings.heartbeat_timeout
        beat = await self.redis.heartbeat(key, now, timeout)
        if beat is not None and beat.phase is not Phase.INACTIVE:
            return beat
        record = await self.botsessions.get(key)
        if record is None or record.phase is None or record.deleting:
            if beat is None:
                raise SessionNotFound(f"no session {key}; report its phase first")
            raise SessionInactive(f"session {key} is inactive; report connecting first")
        if record.phase is Phase.INACTIVE:
            raise SessionInactive(f"session {key} is inactive; report connecting first")
        state = record.state(self.settings.session_ttl, now)
        if await self.redis.write(state, record.ttl(self.settings.session_ttl), restore=True):
            return Heartbeat(state.phase, state.last_seen, state.expires_at, state.revision)
        beat = await self.redis.heartbeat(key, now, timeout)  # a newer write or a removal won
        if beat is None or beat.phase is Phase.INACTIVE:
            raise SessionInactive(f"session {key} was removed; report connecting first")
        return beat

    async def status(self, bot_id: str, user_id: str | None = None) -> StatusView:
        """Redis first; the database's last state when Redis misses or is down; the
        BotSession itself when the database is down too.

        Without a userId: the bot's most recently seen session.
        """
        key = SessionKey(bot_id, user_id) if user_id else None
        try:
            state = await (self.redis.get(key) if key else self.redis.most_recent(bot_id))
            if state is not None:
                return StatusView(state, "redis")
        except StoreUnavailable:
            pass  # logged by the store; the database answers
        try:
            fallback = await (self.sql.get(key) if key else self.sql.most_recent(bot_id))
        except StoreUnavailable as database_down:
            return StatusView(
                await self._state_from_botsessions(bot_id, key, database_down), "kubernetes"
            )
        if fallback is None:
            raise SessionNotFound(f"no session for {_who(bot_id, user_id)}")
        return StatusView(fallback, "database")

    async def _state_from_botsessions(
        self, bot_id: str, key: SessionKey | None, database_down: StoreUnavailable
    ) -> SessionState:
        """The last resort of status(): the source of truth, at one API server read. Its
        lastSeen lags Redis's by up to the last-seen drift. Kubernetes down as well: the
        database's error stands (503)."""
        if key is not None:
            record = await self._instead_of_database(self.botsessions.get(key), database_down)
            candidates = [record] if record is not None else []
        else:
            candidates = await self._instead_of_database(
                self.botsessions.list_bot(bot_id), database_down
            )
        live = [r for r in candidates if r.phase is not None and not r.deleting]
        if not live:
            raise SessionNotFound(f"no session for {_who(bot_id, key.user_id if key else None)}")
        return max(live, key=lambda r: r.seen).state(self.settings.session_ttl)

    async def list_bot(
        self, bot_id: str, phase: Phase | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[SessionState], int]:
        """A page of the bot's sessions from the database, with Redis's fresher lastSeen."""
        if not 1 <= limit <= 500 or offset < 0:
            raise InvalidSessionInput("limit must be 1-500 and offset at least 0")
        page, total = await self.sql.list_bot(bot_id, phase, limit, offset)
        try:
            hot = await self.redis.get_many([s.key for s in page])
        except StoreUnavailable:
            return page, total
        merged = [
            h if h is not None and h.revision >= s.revision else s
            for s, h in zip(page, hot, strict=True)
        ]
        return merged, total

    async def detail(self, key: SessionKey, history: int = 20) -> DetailView:
        """The status, and the newest `history` transitions from the database; while the
        database is down, the few the BotSession keeps (resources.RECENT_TRANSITIONS)."""
        view = await self.status(key.bot_id, key.user_id)
        database_down: StoreUnavailable | None = None
        if view.source != "kubernetes":  # else the status has just found the database down
            try:
                return DetailView(view, await self.sql.history(key, history), "database")
            except StoreUnavailable as exc:
                database_down = exc
        record = await self._instead_of_database(self.botsessions.get(key), database_down)
        recent = list(reversed(record.recent))[:history] if record else []
        return DetailView(view, recent, "kubernetes")

    @staticmethod
    async def _instead_of_database(read: Awaitable[T], database_down: StoreUnavailable | None) -> T:
        """A BotSession read standing in for the database. When the API server cannot
        answer either, the database's error is the one reported."""
        try:
            return await read
        except StoreUnavailable:
            if database_down is None:
                raise
            raise database_down from None

    # --- clearing ----------------------------------------------------------------------

    async def _keys_of_bot(self, bot_id: str) -> list[SessionKey]:
        keys = {r.key for r in await self.botsessions.list_bot(bot_id)}
        offset = 0
        while True:
            page, total = await self.sql.list_bot(bot_id, limit=500, offset=offset)
            keys.update(s.key for s in page)
            offset += len(page)
            if not page or offset >= total:
                break
        return sorted(keys)

    async def clear(
        self, bot_id: str, user_id: str | None, flags: ClearFlags, actor: str
    ) -> ClearResult:
        """Clear one session, or every session of a bot when user_id is None (the caller
        checks that only admins may do that). See docs/api.md, "Clear a session"."""
        if not (flags.session or flags.redis or flags.database):
            raise InvalidSessionInput(
                "at least one of clearSession, clearRedis, clearDatabase must be true"
            )
        keys = [SessionKey(bot_id, user_id)] if user_id else await self._keys_of_bot(bot_id)
        result = ClearResult()
        try:
            for key in keys:
                await self._clear_one(key, flags, actor, result)
        except Exception:
            # a clear that fails half-way is audited with what it did; one that failed
            # before doing anything wrote nothing, and stays so
            if result.sessions or result.redis_keys or result.database_rows:
                await self._audit(bot_id, user_id, flags, actor, result)
            raise
        await self._audit(bot_id, user_id, flags, actor, result)
        return result

    async def _audit(
        self,
        bot_id: str,
        user_id: str | None,
        flags: ClearFlags,
        actor: str,
        result: ClearResult,
    ) -> None:
        audit = ClearAudit(
            actor,
            bot_id,
            user_fingerprint(SessionKey(bot_id, user_id)) if user_id else None,
            "session" if user_id else "bot",
            (flags.session, flags.redis, flags.database),
            result.sessions,
            result.redis_keys,
            result.database_rows,
        )
        try:
            await self.sql.record_clear(audit)
        except StoreUnavailable:
            result.pending.append("audit")
        event(
            log,
            "sessions cleared",
            botId=bot_id,
            userId=user_id,
            actor=actor,
            scope=audit.scope,
            sessions=result.sessions,
            redisKeys=result.redis_keys,
            databaseRows=result.database_rows,
            pending=result.pending,
        )

    async def _clear_one(
        self, key: SessionKey, flags: ClearFlags, actor: str, result: ClearResult
    ) -> None:
        if flags.session:
            outcome = await self.botsessions.delete(key, self.settings.clear_wait)
            if outcome is DeleteOutcome.DELETED:
                result.sessions += 1
            elif outcome is DeleteOutcome.PENDING:
                result.pending.append(f"session {key}")
        floor = None
        ended: list[HistoryEntry] = []
        if flags.redis and not flags.session:
            ended = await self.make_inactive(key, Reason.CLEARED, actor)
            floor = ended[-1].version if ended else None
        if flags.redis:
            try:
                result.redis_keys += await self.redis.remove(key, floor)
                await self.redis.emit(key, transition_events(ended))
            except StoreUnavailable:
                result.pending.append(f"redis {key}")
        if flags.database:
            try:
                result.database_rows += await self.sql.delete(key)
            except StoreUnavailable:
                result.pending.append(f"database {key}")

    async def make_inactive(
        self,
        key: SessionKey,
        reason: Reason,
        actor: str,
        last_seen: datetime | None = None,
        only: Callable[[BotSessionRecord], bool] = lambda _record: True,
    ) -> list[HistoryEntry]:
        """Move a live session's BotSession to inactive (Expired, Cleared, HeartbeatLost),
        keeping the time it was last seen, and record the history row. Nothing to do ([])
        when it is gone, being deleted, already inactive, or `only` refuses the version read."""
        _record, entries = await self._make_inactive(key, reason, actor, last_seen, only)
        return entries

    async def _make_inactive(
        self,
        key: SessionKey,
        reason: Reason,
        actor: str,
        last_seen: datetime | None,
        only: Callable[[BotSessionRecord], bool],
    ) -> tuple[BotSessionRecord | None, list[HistoryEntry]]:
        """make_inactive, with the BotSession as written (None when nothing was done)."""
        for _attempt in range(CAS_ATTEMPTS):
            record = await self.botsessions.get(key)
            if record is None or record.deleting or record.phase in (None, Phase.INACTIVE):
                return None, []
            if not only(record):
                return None, []
            now = self.now()
            seen = last_seen or record.last_seen or now
            step = Transition(record.phase, Phase.INACTIVE, reason)
            try:
                record, entries = await self.transition(record, [step], actor, now, seen)
            except RevisionConflict:
                continue
            except SessionDeleting:
                return None, []
            with contextlib.suppress(StoreUnavailable):  # the controller backfills it
                await self.sql.write(record.state(self.settings.session_ttl, seen), entries)
            return record, entries
        raise RevisionConflict(f"session {key} kept changing; try again")

    # --- the sweep ---------------------------------------------------------------------

    async def expire_swept(
        self, swept: Sequence[SweptSession], actor: str = "sweep"
    ) -> list[HistoryEntry]:
        """Turn sessions the sweep removed as expired (or found gone) into inactive (Expired)
        BotSessions with history rows, but only those that are still what the sweep removed:
        one that moved on since (a bot reported again) stays live and gets its Redis copy
        back. Inactive ones need nothing; malformed index entries name no session."""
        recorded: list[HistoryEntry] = []
        for session in swept:
            if session.why in ("expired", "gone"):
                recorded += await self._expire(session, actor)
        return recorded

    async def _expire(self, swept: SweptSession, actor: str) -> list[HistoryEntry]:
        removed = swept.version
        now = self.now()
        moved_on: list[BotSessionRecord] = []

        def still_swept(record: BotSessionRecord) -> bool:
            if removed is not None:
                same = record.version == removed
            else:
                # Redis had dropped the hash itself (its TTL): expired if the BotSession's
                # own expiry, which trails Redis's, has passed (a transition moves it ahead)
                ttl = record.ttl(self.settings.session_ttl)
                same = (record.expires_at or record.created_at + ttl) <= now
            if not same:
                moved_on.append(record)
            return same

        entries = await self.make_inactive(
            swept.key, Reason.EXPIRED, actor, swept.last_seen, only=still_swept
        )
        if moved_on:
            record = moved_on[-1]
            state = record.state(self.settings.session_ttl)
            await pending_if_down(
                self.redis.write(state, record.ttl(self.settings.session_ttl), restore=True),
                "redis",
                record.key,
                "the controller will heal it",
            )
        return entries

    # --- lost heartbeats ------------------------------------------------------------------

    async def lose_heartbeat(
        self, claimed: SweptSession, actor: str = "liveness"
    ) -> list[HistoryEntry]:
        """Make a session whose heartbeat deadline passed inactive (HeartbeatLost), lastSeen
        its last heartbeat, unless it moved on since the claim: a heartbeat after it (a new
        deadline), or a transition (another version). Redis follows at once, so the bot's
        next heartbeat is told to report `connecting`."""
        key, claimed_version = claimed.key, claimed.version
        if await self.redis.heartbeat_deadline(key) is not None:
            return []  # a heartbeat came after the claim: the bot is alive

        def unchanged(record: BotSessionRecord) -> bool:
            return record.phase is Phase.ACTIVE and record.version == claimed_version

        record, entries = await self._make_inactive(
            key, Reason.HEARTBEAT_LOST, actor, claimed.last_seen, unchanged
        )
        if record is not None:
            ttl = record.ttl(self.settings.session_ttl)
            await pending_if_down(
                self.redis.write(record.state(self.settings.session_ttl), ttl, record.recent),
                "redis",
                key,
                "the operator's sync writes it",
            )
        return entries

    async def record_sweep(
        self,
        result: SweepResult | None,
        runner: str,
        error: str | None = None,
        started_at: datetime | None = None,
    ) -> SweepRun:
        """Record a sweep run (or a failed one) for the dashboard and alerts."""
        run = SweepRun(
            started_at=result.started_at if result else (started_at or self.now()),
            finished_at=result.finished_at if result else self.now(),
            removed=len(result.removed) if result else 0,
            expired=(result.count("expired") + result.count("gone")) if result else 0,
            inactive=result.count("inactive") if result else 0,
            succeeded=error is None,
            error=error,
            runner=runner,
        )
        await self.sql.record_cleanup_run(run)
        return run


async def pending_if_down(write: Awaitable[object], store: str, key: SessionKey, then: str) -> bool:
    """Await one store write. When the store is down, log it with what happens next and
    return True: the write is pending (the BotSession already holds the truth)."""
    try:
        await write
    except StoreUnavailable as exc:
        event(
            log,
            f"{store} write pending; {then}",
            logging.WARNING,
            botId=key.bot_id,
            userId=key.user_id,
            error=str(exc),
        )
        return True
    return False


def _who(bot_id: str, user_id: str | None) -> str:
    return f"{bot_id}:{user_id}" if user_id else f"bot {bot_id}"
