"""Analytics, the health dashboard page and the API's metrics (issue: session analytics and
monitoring). Thin wiring over sessions.usecases.analytics."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from api import metrics
from api.routes import V1, Reader
from api.schemas import (
    AnalyticsResponse,
    BotPhases,
    Durations,
    FleetResponse,
    HourlyTransitions,
    Session,
    SessionSearch,
    Stuck,
    StuckSession,
    SweepRunOut,
    TroubledBotOut,
    errors,
)
from sessions.adapters.kubernetes.crd import ID_PATTERN
from sessions.domain.model import Phase, format_time
from sessions.runtime import Runtime
from sessions.usecases.analytics import analytics, fleet, search_sessions

router = APIRouter(tags=["analytics"])
v1 = APIRouter(prefix=V1, tags=["analytics"])
PAGE = (resources.files("api") / "static" / "dashboard.html").read_text()


@v1.get(
    "/analytics",
    summary="Sessions by phase, transitions per hour, durations, stuck sessions, sweeps",
    response_model=AnalyticsResponse,
    responses=errors(401, 403, 422, 503),
)
async def get_analytics(
    request: Request,
    _token: Reader,
    bot_id: Annotated[
        str | None,
        Query(alias="botId", pattern=ID_PATTERN, description="one bot; all bots when omitted"),
    ] = None,
    window_hours: Annotated[float, Query(alias="windowHours", gt=0, le=744)] = 24,
    stuck_minutes: Annotated[
        float | None,
        Query(
            alias="stuckMinutes",
            gt=0,
            le=10080,
            description="connecting longer than this counts as stuck (default: the connect "
            "timeout)",
        ),
    ] = None,
) -> AnalyticsResponse:
    """From the database (history, sweeps) and Redis (live count); each part is one
    bounded query. Read scope."""
    runtime: Runtime = request.app.state.runtime
    stuck_after = (
        timedelta(minutes=stuck_minutes) if stuck_minutes else runtime.settings.connect_timeout
    )
    result = await analytics(
        runtime.sql,
        runtime.redis,
        bot_id=bot_id,
        window=timedelta(hours=window_hours),
        stuck_after=stuck_after,
    )
    return AnalyticsResponse(
        botId=bot_id,
        generatedAt=format_time(result.generated_at),
        windowHours=result.window.total_seconds() / 3600,
        byPhase=result.by_phase,
        liveInRedis=result.live_in_redis,
        transitionsPerHour=[
            HourlyTransitions(hour=h, reason=r, count=c) for h, r, c in result.transitions_per_hour
        ],
        duration=Durations(
            count=result.durations_count, median=result.duration_median, p95=result.duration_p95
        ),
        stuckConnecting=Stuck(
            count=result.stuck_count,
            afterSeconds=stuck_after.total_seconds(),
            oldest=[
                StuckSession(
                    botId=s.key.bot_id, userId=s.key.user_id, since=format_time(s.last_seen)
                )
                for s in result.stuck_oldest
            ],
        ),
        cleanupRuns=[
            SweepRunOut(
                startedAt=format_time(r.started_at),
                finishedAt=format_time(r.finished_at) if r.finished_at else None,
                removed=r.removed,
                expired=r.expired,
                inactive=r.inactive,
                succeeded=r.succeeded,
                error=r.error,
                runner=r.runner,
            )
            for r in result.cleanup_runs
        ],
    )


@v1.get(
    "/analytics/bots",
    summary="Every bot at a glance: sessions by phase, the bots with the most failures",
    response_model=FleetResponse,
    responses=errors(401, 403, 422, 503),
)
async def get_fleet(
    request: Request,
    _token: Reader,
    window_hours: Annotated[float, Query(alias="windowHours", gt=0, le=744)] = 24,
    bots: Annotated[
        int, Query(ge=1, le=500, description="how many bots to list, most sessions first")
    ] = 100,
    top: Annotated[
        int, Query(ge=1, le=50, description="how many bots with failures or lost heartbeats")
    ] = 5,
) -> FleetResponse:
    """Sessions by phase in all and per bot (the database), and the bots with the most
    transitions to failed plus HeartbeatLost over the window (its history): two aggregate
    queries whatever the number of bots. Read scope."""
    runtime: Runtime = request.app.state.runtime
    result = await fleet(
        runtime.sql, window=timedelta(hours=window_hours), bots_limit=bots, troubled_limit=top
    )
    return FleetResponse(
        generatedAt=format_time(result.generated_at),
        windowHours=result.window.total_seconds() / 3600,
        byPhase=result.by_phase,
        botCount=result.bot_count,
        bots=[BotPhases(botId=b.bot_id, byPhase=b.by_phase, total=b.total) for b in result.bots],
        troubled=[
            TroubledBotOut(botId=b.bot_id, failures=b.failures, heartbeatLost=b.heartbeat_lost)
            for b in result.troubled
        ],
    )


@v1.get(
    "/sessions",
    tags=["sessions"],
    summary="Find sessions of any bot by a part of their botId or userId",
    response_model=SessionSearch,
    responses=errors(401, 403, 422, 503),
)
async def find_sessions(
    request: Request,
    _token: Reader,
    search: Annotated[
        str | None,
        Query(
            pattern=ID_PATTERN,
            max_length=128,
            description="a part of the botId or userId, any case; all sessions when omitted",
        ),
    ] = None,
    status: Annotated[Phase | None, Query(description="only sessions in this phase")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SessionSearch:
    """From the database, most recently seen first, with Redis's fresher lastSeen; one
    page only (`more` says when there is more): narrow the search rather than paging
    through every session. Read scope."""
    runtime: Runtime = request.app.state.runtime
    found, more = await search_sessions(
        runtime.sql, runtime.redis, search=search, phase=status, limit=limit
    )
    return SessionSearch(
        search=search,
        status=status,
        limit=limit,
        more=more,
        sessions=[Session.of(s) for s in found],
    )


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The page itself holds no data (every number comes from the API with the token the
    user types), so serving it needs no token."""
    return HTMLResponse(
        PAGE,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; img-src 'self' data:",
        },
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics of this API process",
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/plain": {
                    "example": (
                        'botsession_api_requests_total{method="GET",route="/healthz",'
                        'status="200"} 3.0\n'
                    )
                }
            }
        },
        **errors(401, 403),
    },
)
async def get_metrics(_token: Reader) -> Response:
    """Request counts and latency histograms per route template and status. Read scope:
    configure the scraper with a bearer token."""
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")
