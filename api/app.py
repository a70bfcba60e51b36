"""The FastAPI application: wiring only. A lifespan opens the Runtime (Redis, SQL, the
Kubernetes client, the use-cases) and closes it on shutdown."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api import dashboard, errors, metrics, webhooks
from api.admission import WriteAdmission
from api.auth import TokenRegistry
from api.beacon import keep_saying_it_serves
from api.events import EventFanout
from api.health import Readiness
from api.limits import RateLimiter
from api.middleware import (
    QUIET_ROUTES,
    BodyLimit,
    HeartbeatFastPath,
    RequestLog,
    StatusFastPath,
)
from api.routes import health, heartbeat, router, session_status
from api.settings import ApiSettings, load_api_settings
from sessions.adapters.tasks import stop
from sessions.domain import logs, privacy
from sessions.domain.settings import Settings, load_settings
from sessions.runtime import Runtime

RuntimeFactory = Callable[[Settings], Awaitable[Runtime]]

DESCRIPTION = """\
Status, reporting and clearing of WhatsApp bot sessions. Each session (`botId` + `userId`)
is a BotSession custom resource; Redis holds the hot copy and the database the durable
record and history.

Every endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`, with the
scope named in its description (`read`, `report`; `admin` implies both). Every error is
`{"success": false, "error": {"code", "message", ...}}`. See docs/api.md.
"""

TAGS = [
    {"name": "frontend", "description": "the endpoints of the frontend team's requirements"},
    {"name": "sessions", "description": "reporting and reading sessions (bot platform)"},
    {"name": "analytics", "description": "numbers for the health dashboard (/dashboard)"},
    {"name": "health", "description": "probes, without authentication"},
]


# Python's default (700, 10, 10) runs a young-generation collection every 700 allocations,
# several times per request at thousands of requests a second; almost nothing a request
# allocates outlives it, so collecting less often frees the same memory for less CPU
# (+3-6 % session-status throughput, docs/benchmarks.md). Costs at most a few MB.
GC_THRESHOLDS = (10_000, 50, 100)


def _operation_id(route: APIRoute) -> str:
    return route.name


def route_of(endpoint: Callable[..., Any]) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)


def default_runtime_factory(api_settings: ApiSettings) -> RuntimeFactory:
    async def open_runtime(settings: Settings) -> Runtime:
        return await Runtime.open(
            settings,
            kubeconfig=api_settings.kubeconfig,
            migrate=api_settings.migrate,
        )

    return open_runtime


def create_app(
    settings: Settings | None = None,
    runtime_factory: RuntimeFactory | None = None,
    api_settings: ApiSettings | None = None,
    fast_paths: bool = True,
) -> FastAPI:
    """The app. Settings default to the environment (BOTSESSION_*, BOTSESSION_API_*);
    raises SettingsError or auth.TokenError on bad configuration, before serving anything.

    `fast_paths=False` leaves every session-status and heartbeat request to the FastAPI
    routes (the tests compare the two answers)."""
    api_settings = api_settings or load_api_settings()
    settings = settings or load_settings()
    tokens = TokenRegistry(
        api_settings.tokens.get_secret_value() if api_settings.tokens else None,
        api_settings.tokens_file,
        api_settings.tokens_reload_interval,
    )
    factory = runtime_factory or default_runtime_factory(api_settings)
    logs.quiet_data_loggers()
    privacy.configure(
        settings.fingerprint_key.get_secret_value() if settings.fingerprint_key else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await factory(settings)
        runtime.observe(metrics.GUARDS)
        app.state.runtime = runtime
        # Everything alive now (imports, routes, models, pools) lives as long as the process;
        # without this, every full collection walks it all again, and those pauses were the
        # p99 of session-status under load (docs/benchmarks.md, "The REST API under load").
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        app.state.events = fanout = EventFanout(runtime.redis)
        tasks = [
            asyncio.create_task(keep_saying_it_serves(runtime), name="api beacon"),
            asyncio.create_task(fanout.run(), name="session events"),
        ]
        try:
            yield
        finally:
            await stop(*tasks)
            await runtime.close()

    app = FastAPI(
        title="botsession API",
        version="1",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.api_settings = api_settings
    app.state.tokens = tokens
    app.state.readiness = Readiness(timeout=api_settings.ready_timeout)
    app.state.limiter = RateLimiter()
    app.state.admission = WriteAdmission(
        api_settings.write_concurrency,
        api_settings.write_queue_limit,
        api_settings.write_max_wait,
    )
    app.state.default_rate = api_settings.default_rate()
    errors.install(app)
    if fast_paths:
        # added first, so RequestLog (added last: outermost) logs and counts their answers too
        app.add_middleware(StatusFastPath, route=route_of(session_status))
        app.add_middleware(HeartbeatFastPath, route=route_of(heartbeat))
    app.add_middleware(BodyLimit, max_bytes=api_settings.max_body_bytes)
    quiet = QUIET_ROUTES
    if not api_settings.log_polls:  # thousands a second: the metrics count them
        quiet |= {route_of(session_status).path, route_of(heartbeat).path}
    app.add_middleware(RequestLog, quiet=quiet)
    app.include_router(router)
    app.include_router(dashboard.v1)
    app.include_router(webhooks.router)
    app.include_router(dashboard.router)
    app.include_router(health)
    return app
