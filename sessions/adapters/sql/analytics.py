"""The dashboard's aggregates over the database: each one indexed query with a bounded
result, run through the store's guard like every other database call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sessions.adapters.sql import schema as t
from sessions.adapters.sql.store import SqlStore, state_of_row
from sessions.domain.model import Phase, Reason, SessionState


def _hour_bucket(dialect: str, column: Any) -> Any:
    """The hour a timestamp falls in, as text comparable across backends."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.date_trunc("hour", column), 'YYYY-MM-DD"T"HH24:00:00"Z"')
    return sa.func.strftime("%Y-%m-%dT%H:00:00Z", column)


class AnalyticsQueries:
    """Aggregates for the dashboard; each is one indexed query with a bounded result."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    @staticmethod
    def _bot(table: Any, bot_id: str | None) -> list[Any]:
        return [table.c.bot_id == bot_id] if bot_id else []

    async def phase_counts(self, bot_id: str | None) -> dict[str, int]:
        async def op(c: AsyncConnection) -> dict[str, int]:
            rows = await c.execute(
                sa.select(t.sessions.c.phase, sa.func.count())
                .where(*self._bot(t.sessions, bot_id))
                .group_by(t.sessions.c.phase)
            )
            return {r[0]: r[1] for r in rows}

        return await self.store.run("phase_counts", op)

    async def transitions_per_hour(
        self, bot_id: str | None, since: datetime
    ) -> list[tuple[str, str, int]]:
        """(hour, reason, count), oldest first."""

        async def op(c: AsyncConnection) -> list[tuple[str, str, int]]:
            hour = _hour_bucket(c.dialect.name, t.history.c.at).label("hour")
            rows = await c.execute(
                sa.select(hour, t.history.c.reason, sa.func.count())
                .where(t.history.c.at >= since, *self._bot(t.history, bot_id))
                .group_by(hour, t.history.c.reason)
                .order_by(hour, t.history.c.reason)
            )
            return [(r[0], r[1], r[2]) for r in rows]

        return await self.store.run("transitions_per_hour", op)

    async def active_durations(
        self, bot_id: str | None, since: datetime, limit: int = 10_000
    ) -> list[float]:
        """Seconds each connection stayed active, for connections that ended since `since`
        (the newest `limit`): from the transition into active to the next one out of it."""
        start, end = t.history.alias("start"), t.history.alias("end")

        async def op(c: AsyncConnection) -> list[float]:
            rows = await c.execute(
                sa.select(start.c.at, end.c.at)
                .join(
                    end,
                    sa.and_(
                        end.c.bot_id == start.c.bot_id,
                        end.c.user_id == start.c.user_id,
                        end.c.incarnation == start.c.incarnation,
                        end.c.revision == start.c.revision + 1,
                    ),
                )
                .where(
                    start.c.to_phase == Phase.ACTIVE.value,
                    end.c.at >= since,
                    *self._bot(start, bot_id),
                )
                .order_by(end.c.at.desc())
                .limit(limit)
            )
            return [(finished - began).total_seconds() for began, finished in rows]

        return await self.store.run("active_durations", op)

    async def stuck_connecting(
        self, bot_id: str | None, before: datetime, limit: int = 20
    ) -> tuple[int, list[SessionState]]:
        """Sessions connecting since before `before`: how many, and the oldest few."""
        where = [
            t.sessions.c.phase == Phase.CONNECTING.value,
            t.sessions.c.updated_at < before,
            *self._bot(t.sessions, bot_id),
        ]

        async def op(c: AsyncConnection) -> tuple[int, list[SessionState]]:
            total = (
                await c.execute(sa.select(sa.func.count()).select_from(t.sessions).where(*where))
            ).scalar_one()
            rows = (
                await c.execute(
                    sa.select(t.sessions)
                    .where(*where)
                    .order_by(t.sessions.c.updated_at)
                    .limit(limit)
                )
            ).all()
            return total, [state_of_row(r) for r in rows]

        return await self.store.run("stuck_connecting", op)

    async def phase_counts_by_bot(self) -> list[tuple[str, str, int]]:
        """(botId, phase, count) for every bot: one aggregate over ix_sessions_bot_phase."""

        async def op(c: AsyncConnection) -> list[tuple[str, str, int]]:
            s = t.sessions.c
            rows = await c.execute(
                sa.select(s.bot_id, s.phase, sa.func.count())
                .group_by(s.bot_id, s.phase)
                .order_by(s.bot_id, s.phase)
            )
            return [(r[0], r[1], r[2]) for r in rows]

        return await self.store.run("phase_counts_by_bot", op)

    async def troubled_bots(self, since: datetime, limit: int) -> list[tuple[str, int, int]]:
        """(botId, failures, heartbeats lost) since `since`, the bots with the most of both
        first: one aggregate over ix_history_at's range."""
        h = t.history.c
        failures = sa.func.sum(sa.case((h.to_phase == Phase.FAILED.value, 1), else_=0))
        lost = sa.func.sum(sa.case((h.reason == Reason.HEARTBEAT_LOST.value, 1), else_=0))

        async def op(c: AsyncConnection) -> list[tuple[str, int, int]]:
            rows = await c.execute(
                sa.select(h.bot_id, failures, lost)
                .where(
                    h.at >= since,
                    sa.or_(
                        h.to_phase == Phase.FAILED.value,
                        h.reason == Reason.HEARTBEAT_LOST.value,
                    ),
                )
                .group_by(h.bot_id)
                .order_by((failures + lost).desc(), h.bot_id)
                .limit(limit)
            )
            return [(r[0], int(r[1]), int(r[2])) for r in rows]

        return await self.store.run("troubled_bots", op)

    async def search_sessions(
        self, search: str | None, phase: Phase | None, limit: int
    ) -> list[SessionState]:
        """Up to `limit` sessions of any bot whose botId or userId contains `search` (any
        case), most recently seen first. A substring cannot use an index: the caller bounds
        `limit`, and the store's guard bounds the time."""
        s = t.sessions.c
        where: list[Any] = []
        if search:
            pattern = f"%{_like_escape(search)}%"
            where.append(
                sa.or_(s.bot_id.ilike(pattern, escape="\\"), s.user_id.ilike(pattern, escape="\\"))
            )
        if phase is not None:
            where.append(s.phase == phase.value)

        async def op(c: AsyncConnection) -> list[SessionState]:
            rows = await c.execute(
                sa.select(t.sessions)
                .where(*where)
                .order_by(s.last_seen.desc(), s.bot_id, s.user_id)
                .limit(limit)
            )
            return [state_of_row(r) for r in rows]

        return await self.store.run("search_sessions", op)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
