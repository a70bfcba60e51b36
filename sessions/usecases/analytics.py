"""Session analytics for the dashboard: from the database (durable history) and Redis (live
counts), each part one bounded query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sessions.adapters.redis.store import RedisStore
from sessions.adapters.sql.analytics import AnalyticsQueries
from sessions.adapters.sql.store import SqlStore, SweepRun
from sessions.domain.model import SessionState, StoreUnavailable, utcnow

MAX_WINDOW = timedelta(days=31)


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear-interpolated percentile (fraction in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Analytics:
    bot_id: str | None
    generated_at: datetime
    window: timedelta
    by_phase: dict[str, int]
    live_in_redis: int | None  # None when Redis is down
    transitions_per_hour: list[tuple[str, str, int]]
    durations_count: int
    duration_median: float | None
    duration_p95: float | None
    stuck_after: timedelta
    stuck_count: int
    stuck_oldest: list[SessionState]
    cleanup_runs: list[SweepRun]


async def analytics(
    sql: SqlStore,
    redis: RedisStore,
    *,
    bot_id: str | None,
    window: timedelta,
    stuck_after: timedelta,
    now: datetime | None = None,
) -> Analytics:
    moment = now or utcnow()
    window = min(window, MAX_WINDOW)
    queries = AnalyticsQueries(sql)
    durations = await queries.active_durations(bot_id, moment - window)
    stuck_count, stuck = await queries.stuck_connecting(bot_id, moment - stuck_after)
    live: int | None
    try:
        live = await redis.live_count(bot_id)
    except StoreUnavailable:
        live = None  # the dashboard shows "unknown"; the database parts still answer
    return Analytics(
        bot_id=bot_id,
        generated_at=moment,
        window=window,
        by_phase=await queries.phase_counts(bot_id),
        live_in_redis=live,
        transitions_per_hour=await queries.transitions_per_hour(bot_id, moment - window),
        durations_count=len(durations),
        duration_median=percentile(durations, 0.5),
        duration_p95=percentile(durations, 0.95),
        stuck_after=stuck_after,
        stuck_count=stuck_count,
        stuck_oldest=stuck,
        cleanup_runs=await sql.cleanup_runs(10),
    )
