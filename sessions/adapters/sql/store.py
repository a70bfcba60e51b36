"""The durable record: each session's last known state, its history, sweeps and clears.

SQLAlchemy 2 async engine: aiosqlite for the embedded default, asyncpg (or psycopg) for
PostgreSQL. State writes are upserts guarded by the version (incarnation, then revision:
sessions.domain.model.Version); history inserts ignore a duplicate (session, incarnation,
revision), so retries and replays are harmless. Every method raises
StoreUnavailable when the database cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sessions.adapters.guard import GuardObserver, StoreGuard
from sessions.adapters.sql import schema as t
from sessions.domain.model import (
    HistoryEntry,
    Identity,
    Phase,
    Reason,
    SessionKey,
    SessionState,
    StoreUnavailable,
    Version,
    utcnow,
)
from sessions.domain.privacy import session_fingerprint

log = logging.getLogger(__name__)
T = TypeVar("T")


def create_engine(url: str, budget: timedelta = timedelta(seconds=5)) -> AsyncEngine:
    """An engine with settings that suit each backend. `budget` bounds a connect, a wait
    for a pooled connection and one statement on PostgreSQL (asyncpg has none by default);
    SqlStore's guard bounds every operation as a whole."""
    if url.startswith("sqlite"):
        # hide_parameters: error messages must not quote values (phone numbers, user ids)
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    seconds = budget.total_seconds()
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql+asyncpg"):
        connect_args = {"timeout": seconds, "command_timeout": seconds}
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=seconds,
        hide_parameters=True,
        connect_args=connect_args,
    )


def user_fingerprint(key: SessionKey) -> str:
    """The clear audit's record of a session: keyed (sessions.domain.privacy), not reversible by
    hashing every phone number."""
    return session_fingerprint(key.bot_id, key.user_id)


@dataclass(frozen=True)
class SweepRun:
    started_at: datetime
    finished_at: datetime | None
    removed: int
    expired: int
    inactive: int
    succeeded: bool
    error: str | None
    runner: str


@dataclass(frozen=True)
class ClearAudit:
    actor: str
    bot_id: str
    user_fingerprint: str | None
    scope: str
    flags: tuple[bool, bool, bool]  # session, redis, database
    sessions_deleted: int
    redis_keys_deleted: int
    database_rows_deleted: int


class SqlStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        budget: timedelta = timedelta(seconds=1),
        probe_interval: timedelta = timedelta(seconds=1),
        observer: GuardObserver | None = None,
    ) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._upsert = self._upsert_statement()
        self.guard = StoreGuard(
            "database",
            budget.total_seconds(),
            lambda: self._unguarded("ping", _select_one),
            probe_interval=probe_interval.total_seconds(),
            observer=observer,
            detach=True,
        )

    async def run(
        self, what: str, op: Callable[[AsyncConnection], Awaitable[T]], write: bool = False
    ) -> T:
        """One operation within the store's time budget (sessions.adapters.guard)."""
        return await self.guard.call(what, lambda: self._unguarded(what, op, write))

    async def _unguarded(
        self, what: str, op: Callable[[AsyncConnection], Awaitable[T]], write: bool = False
    ) -> T:
        try:
            if write:
                async with self.engine.begin() as connection:
                    return await op(connection)
            async with self.engine.connect() as connection:
                return await op(connection)
        except (OperationalError, InterfaceError, OSError, TimeoutError, PoolTimeout) as exc:
            log.warning("database %s failed: %s", what, exc.__class__.__name__)
            raise StoreUnavailable("database", f"{what}: {exc.__class__.__name__}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable("database", f"{what}: connection lost") from exc
            raise

    async def ping(self) -> bool:
        return await self.run("ping", _select_one)

    # --- sessions --------------------------------------------------------------------

    def _upsert_statement(self) -> Any:
        """One statement for every upsert, executed with a row's parameters: building it per
        write cost more CPU than the round trip (docs/benchmarks.md, "Operator at scale").
        A newer version replaces the row; a new incarnation replaces it whole."""
        insert = self._insert(t.sessions)
        new, old = insert.excluded, t.sessions.c
        reborn = new.incarnation > old.incarnation
        newer_seen = sa.or_(reborn, new.last_seen > old.last_seen)
        return insert.on_conflict_do_update(
            index_elements=[old.bot_id, old.user_id],
            set_={
                "phase": new.phase,
                "reason": new.reason,
                "revision": new.revision,
                "incarnation": new.incarnation,
                "last_seen": sa.case((newer_seen, new.last_seen), else_=old.last_seen),
                "expires_at": sa.case((newer_seen, new.expires_at), else_=old.expires_at),
                "created_at": sa.case((reborn, new.created_at), else_=old.created_at),
                "updated_at": new.updated_at,
                "phone_number": new.phone_number,
                "display_name": new.display_name,
                "session_id": new.session_id,
            },
            where=sa.or_(
                reborn, sa.and_(old.incarnation == new.incarnation, old.revision <= new.revision)
            ),
        )

    @staticmethod
    def _row(state: SessionState, updated_at: datetime) -> dict[str, Any]:
        return {
            "bot_id": state.key.bot_id,
            "user_id": state.key.user_id,
            "phase": state.phase.value,
            "reason": state.reason.value if state.reason else None,
            "revision": state.revision,
            "incarnation": state.incarnation,
            "last_seen": state.last_seen,
            "expires_at": state.expires_at,
            "created_at": state.created_at,
            "updated_at": updated_at,
            "phone_number": state.identity.phone_number,
            "display_name": state.identity.display_name,
            "session_id": state.identity.session_id,
        }

    def _history_insert(self, entries: Sequence[HistoryEntry]) -> Any:
        rows = [
            {
                "bot_id": e.key.bot_id,
                "user_id": e.key.user_id,
                "revision": e.revision,
                "incarnation": e.incarnation,
                "from_phase": e.from_phase.value if e.from_phase else None,
                "to_phase": e.to_phase.value,
                "reason": e.reason.value,
                "actor": e.actor,
                "at": e.at,
            }
            for e in entries
        ]
        return (
            self._insert(t.history)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["bot_id", "user_id", "incarnation", "revision"])
        )

    async def write(self, state: SessionState, history: Sequence[HistoryEntry] = ()) -> None:
        """Upsert the state (ignored when older than the stored version) and add history
        rows (one already recorded is skipped), in one transaction."""

        async def op(c: AsyncConnection) -> None:
            await c.execute(self._upsert, self._row(state, utcnow()))
            if history:
                await c.execute(self._history_insert(history))

        await self.run("write", op, write=True)

    async def write_many(self, states: Sequence[SessionState]) -> None:
        """Upsert many states in one transaction and one executemany (the resync's lastSeen
        copies); each is ignored when older than its stored version, as in write()."""
        if not states:
            return
        now = utcnow()
        rows = [self._row(state, now) for state in states]

        async def op(c: AsyncConnection) -> None:
            await c.execute(self._upsert, rows)

        await self.run("write_many", op, write=True)

    async def get(self, key: SessionKey) -> SessionState | None:
        async def op(c: AsyncConnection) -> SessionState | None:
            row = (
                await c.execute(
                    sa.select(t.sessions).where(
                        t.sessions.c.bot_id == key.bot_id, t.sessions.c.user_id == key.user_id
                    )
                )
            ).first()
            return state_of_row(row) if row else None

        return await self.run("get", op)

    async def most_recent(self, bot_id: str) -> SessionState | None:
        async def op(c: AsyncConnection) -> SessionState | None:
            row = (
                await c.execute(
                    sa.select(t.sessions)
                    .where(t.sessions.c.bot_id == bot_id)
                    .order_by(t.sessions.c.last_seen.desc())
                    .limit(1)
                )
            ).first()
            return state_of_row(row) if row else None

        return await self.run("most_recent", op)

    async def list_bot(
        self, bot_id: str, phase: Phase | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[SessionState], int]:
        """One page of a bot's sessions, most recently seen first, and the total count."""
        where = [t.sessions.c.bot_id == bot_id]
        if phase is not None:
            where.append(t.sessions.c.phase == phase.value)

        async def op(c: AsyncConnection) -> tuple[list[SessionState], int]:
            rows = (
                await c.execute(
                    sa.select(t.sessions)
                    .where(*where)
                    .order_by(t.sessions.c.last_seen.desc(), t.sessions.c.user_id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            total = (
                await c.execute(sa.select(sa.func.count()).select_from(t.sessions).where(*where))
            ).scalar_one()
            return [state_of_row(r) for r in rows], total

        return await self.run("list_bot", op)

    async def versions(self) -> dict[SessionKey, Version]:
        """Every session's stored version (for the operator's self-healing pass)."""

        async def op(c: AsyncConnection) -> dict[SessionKey, Version]:
            s = t.sessions.c
            rows = await c.execute(sa.select(s.bot_id, s.user_id, s.incarnation, s.revision))
            return {
                SessionKey(r.bot_id, r.user_id): Version(r.incarnation, r.revision) for r in rows
            }

        return await self.run("versions", op)

    async def history(self, key: SessionKey, limit: int = 20) -> list[HistoryEntry]:
        """The newest `limit` transitions of a session, newest first."""

        async def op(c: AsyncConnection) -> list[HistoryEntry]:
            rows = await c.execute(
                sa.select(t.history)
                .where(t.history.c.bot_id == key.bot_id, t.history.c.user_id == key.user_id)
                .order_by(t.history.c.incarnation.desc(), t.history.c.revision.desc())
                .limit(limit)
            )
            return [
                HistoryEntry(
                    key=key,
                    revision=r.revision,
                    incarnation=r.incarnation,
                    from_phase=Phase(r.from_phase) if r.from_phase else None,
                    to_phase=Phase(r.to_phase),
                    reason=Reason(r.reason),
                    actor=r.actor,
                    at=r.at,
                )
                for r in rows
            ]

        return await self.run("history", op)

    async def delete(self, key: SessionKey) -> int:
        """Delete the session's row and its history; returns the rows deleted."""

        async def op(c: AsyncConnection) -> int:
            deleted = 0
            for table in (t.sessions, t.history):
                result = await c.execute(
                    sa.delete(table).where(
                        table.c.bot_id == key.bot_id, table.c.user_id == key.user_id
                    )
                )
                deleted += result.rowcount
            return deleted

        return await self.run("delete", op, write=True)

    async def mark_ended(
        self, key: SessionKey, reason: Reason, version: Version, at: datetime, actor: str
    ) -> bool:
        """A deleted BotSession: mark its row inactive at `version` with a history row, if
        the row still exists (a clear may have deleted it: never resurrect it), belongs to
        the same incarnation, is older and is not inactive."""
        return await self.run(
            "mark_ended", lambda c: _mark_ended(c, key, reason, version, at, actor), write=True
        )

    # --- sweeps and clears -------------------------------------------------------------

    async def record_cleanup_run(self, run: SweepRun) -> None:
        async def op(c: AsyncConnection) -> None:
            await c.execute(
                sa.insert(t.cleanup_runs).values(
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                    removed=run.removed,
                    expired=run.expired,
                    inactive=run.inactive,
                    succeeded=run.succeeded,
                    error=run.error,
                    runner=run.runner,
                )
            )

        await self.run("record_cleanup_run", op, write=True)

    async def cleanup_runs(self, limit: int = 20) -> list[SweepRun]:
        async def op(c: AsyncConnection) -> list[SweepRun]:
            rows = await c.execute(
                sa.select(t.cleanup_runs).order_by(t.cleanup_runs.c.started_at.desc()).limit(limit)
            )
            return [
                SweepRun(
                    r.started_at,
                    r.finished_at,
                    r.removed,
                    r.expired,
                    r.inactive,
                    r.succeeded,
                    r.error,
                    r.runner,
                )
                for r in rows
            ]

        return await self.run("cleanup_runs", op)

    async def record_clear(self, audit: ClearAudit) -> None:
        async def op(c: AsyncConnection) -> None:
            await c.execute(
                sa.insert(t.clear_audit).values(
                    at=utcnow(),
                    actor=audit.actor,
                    bot_id=audit.bot_id,
                    user_fingerprint=audit.user_fingerprint,
                    scope=audit.scope,
                    clear_session=audit.flags[0],
                    clear_redis=audit.flags[1],
                    clear_database=audit.flags[2],
                    sessions_deleted=audit.sessions_deleted,
                    redis_keys_deleted=audit.redis_keys_deleted,
                    database_rows_deleted=audit.database_rows_deleted,
                )
            )

        await self.run("record_clear", op, write=True)

    async def clear_audits(self, bot_id: str) -> list[ClearAudit]:
        async def op(c: AsyncConnection) -> list[ClearAudit]:
            rows = await c.execute(
                sa.select(t.clear_audit)
                .where(t.clear_audit.c.bot_id == bot_id)
                .order_by(t.clear_audit.c.id)
            )
            return [
                ClearAudit(
                    r.actor,
                    r.bot_id,
                    r.user_fingerprint,
                    r.scope,
                    (r.clear_session, r.clear_redis, r.clear_database),
                    r.sessions_deleted,
                    r.redis_keys_deleted,
                    r.database_rows_deleted,
                )
                for r in rows
            ]

        return await self.run("clear_audits", op)

    async def close(self) -> None:
        await self.guard.close()
        await self.engine.dispose()


async def _select_one(connection: AsyncConnection) -> bool:
    return (await connection.execute(sa.text("SELECT 1"))).scalar() == 1


def state_of_row(row: Any) -> SessionState:
    return SessionState(
        key=SessionKey(row.bot_id, row.user_id),
        phase=Phase(row.phase),
        revision=row.revision,
        reason=Reason(row.reason) if row.reason else None,
        last_seen=row.last_seen,
        expires_at=row.expires_at,
        created_at=row.created_at,
        identity=Identity(row.phone_number, row.display_name, row.session_id),
        incarnation=row.incarnation,
    )


async def _mark_ended(
    connection: AsyncConnection,
    key: SessionKey,
    reason: Reason,
    version: Version,
    at: datetime,
    actor: str,
) -> bool:
    s = t.sessions.c
    row = (
        await connection.execute(
            sa.select(s.phase, s.revision, s.incarnation).where(
                s.bot_id == key.bot_id, s.user_id == key.user_id
            )
        )
    ).first()
    if (
        row is None
        or row.phase == Phase.INACTIVE.value
        or row.incarnation != version.incarnation
        or row.revision >= version.revision
    ):
        return False
    revision = version.revision
    await connection.execute(
        sa.update(t.sessions)
        .where(t.sessions.c.bot_id == key.bot_id, t.sessions.c.user_id == key.user_id)
        .values(phase=Phase.INACTIVE.value, reason=reason.value, revision=revision, updated_at=at)
    )
    await connection.execute(
        sa.insert(t.history).values(
            bot_id=key.bot_id,
            user_id=key.user_id,
            revision=revision,
            incarnation=version.incarnation,
            from_phase=row.phase,
            to_phase=Phase.INACTIVE.value,
            reason=reason.value,
            actor=actor,
            at=at,
        )
    )
    return True
