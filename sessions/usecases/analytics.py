"""Session analytics for the dashboard: from the database (durable history) and Redis (live
counts), each part one bounded query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sessions.adapters.redis.store import RedisStore
from sessions.adapters.sql.analytics import AnalyticsQueries
from sessions.adapters.sql.store import SqlStore, SweepRun
from sessions.domain.model import Phase, SessionState, StoreUnavailable, utcnow

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


@dataclass(frozen=True)
class BotCounts:
    bot_id: str
    by_phase: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_phase.values())


@dataclass(frozen=True)
class TroubledBot:
    bot_id: str
    failures: int
    heartbeat_lost: int


@dataclass(frozen=True)
class Fleet:
    """Every bot at a glance: sessions by phase in all and per bot, and the bots with the
    most failures and lost heartbeats in the window."""

    generated_at: datetime
    window: timedelta
    by_phase: dict[str, int]
    bot_count: int
    bots: list[BotCounts]  # the `bots_limit` bots with the most sessions
    troubled: list[TroubledBot]


def _per_bot(rows: list[tuple[str, str, int]]) -> list[BotCounts]:
    counts: dict[str, dict[str, int]] = {}
    for bot_id, phase, count in rows:
        counts.setdefault(bot_id, {})[phase] = count
    return [BotCounts(bot_id, phases) for bot_id, phases in counts.items()]


def _total(bots: list[BotCounts]) -> dict[str, int]:
    total: dict[str, int] = {}
    for bot in bots:
        for phase, count in bot.by_phase.items():
            total[phase] = total.get(phase, 0) + count
    return total


async def fleet(
    sql: SqlStore,
    *,
    window: timedelta,
    bots_limit: int,
    troubled_limit: int,
    now: datetime | None = None,
) -> Fleet:
    """Two aggregate queries whatever the number of bots."""
    moment = now or utcnow()
    window = min(window, MAX_WINDOW)
    queries = AnalyticsQueries(sql)
    bots = _per_bot(await queries.phase_counts_by_bot())
    troubled = await queries.troubled_bots(moment - window, troubled_limit)
    busiest = sorted(bots, key=lambda b: (-b.total, b.bot_id))[:bots_limit]
    return Fleet(
        generated_at=moment,
        window=window,
        by_phase=_total(bots),
        bot_count=len(bots),
        bots=busiest,
        troubled=[TroubledBot(b, f, h) for b, f, h in troubled],
    )


async def search_sessions(
    sql: SqlStore, redis: RedisStore, *, search: str | None, phase: Phase | None, limit: int
) -> tuple[list[SessionState], bool]:
    """Up to `limit` sessions of any bot matching `search` (a substring of the botId or
    userId) and `phase`, most recently seen first, with Redis's fresher lastSeen where it
    holds the same revision or newer; and whether there are more."""
    found = await AnalyticsQueries(sql).search_sessions(search, phase, limit + 1)
    page = found[:limit]
    try:
        hot = await redis.get_many([s.key for s in page])
    except StoreUnavailable:
        return page, len(found) > limit
    merged = [
        h if h is not None and h.revision >= s.revision else s
        for s, h in zip(page, hot, strict=True)
    ]
    return merged, len(found) > limit
