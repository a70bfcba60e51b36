"""The endpoints: thin wiring from HTTP to sessions.usecases.service.SessionService."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from api.admission import WriteAdmission
from api.auth import (
    UNAUTHORIZED_HEADERS,
    ApiToken,
    Scope,
    TokenRegistry,
    authorize,
    bearer,
    bearer_token,
    require,
)
from api.errors import ApiProblem, error_body
from api.events import EventFanout, EventFilter, EventsExpired, check_resumable, stream
from api.health import Readiness
from api.schemas import (
    SOURCE_HEADER,
    ClearRequest,
    ClearResponse,
    HealthResponse,
    HeartbeatResponse,
    NotReadyResponse,
    ReadyResponse,
    ReportRequest,
    ReportResponse,
    Session,
    SessionDetail,
    SessionList,
    StatusResponse,
    TicketResponse,
    TransitionOut,
    errors,
)
from api.tickets import issue, redeem
from sessions.adapters.kubernetes.crd import ID_PATTERN
from sessions.domain.model import Identity, Phase, SessionKey, format_time, to_millis
from sessions.runtime import Runtime
from sessions.usecases.service import ClearFlags, SessionService

V1 = "/v1/whatsapp"

router = APIRouter(prefix=V1)
health = APIRouter(tags=["health"])

BotId = Annotated[
    str,
    Path(
        alias="botId",
        pattern=ID_PATTERN,
        max_length=128,
        description="1-128 letters, digits and . _ @ + = -",
        examples=["bot-1"],
    ),
]
UserId = Annotated[
    str,
    Path(
        alias="userId",
        pattern=ID_PATTERN,
        max_length=128,
        description="1-128 letters, digits and . _ @ + = -",
        examples=["user-1"],
    ),
]


def service_of(request: Request) -> SessionService:
    runtime: Runtime = request.app.state.runtime
    return runtime.service


def admission_of(request: Request) -> WriteAdmission:
    admission: WriteAdmission = request.app.state.admission
    return admission


Service = Annotated[SessionService, Depends(service_of)]
Admission = Annotated[WriteAdmission, Depends(admission_of)]
Reader = Annotated[ApiToken, Depends(require(Scope.READ))]
Reporter = Annotated[ApiToken, Depends(require(Scope.REPORT))]


EVENT_EXAMPLE = (
    "id: 1796166525300-0\nevent: transition\ndata: "
    '{"id": "1796166525300-0", "type": "transition", "botId": "bot-1", "userId": "user-1", '
    '"incarnation": 1796166525000, "revision": 2, "from": "connecting", "to": "active", '
    '"reason": "Connected", "actor": "bot-runner", "at": "2026-12-01T23:00:00Z"}\n\n'
)
EVENT_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")
OptionalBotId = Annotated[
    str | None,
    Query(alias="botId", pattern=ID_PATTERN, max_length=128, description="only this bot's"),
]
OptionalUserId = Annotated[
    str | None,
    Query(
        alias="userId", pattern=ID_PATTERN, max_length=128, description="with botId: one session"
    ),
]


# --- the frontend's two endpoints ------------------------------------------------------


@router.get(
    "/session-status/{botId}",
    tags=["frontend"],
    summary="A session's status, in the shape of the frontend's requirements",
    response_model=StatusResponse,
    responses={
        200: {"headers": SOURCE_HEADER, "description": "the session's status"},
        **errors(401, 403, 404, 422, 503),
    },
)
async def session_status(
    bot_id: BotId,
    response: Response,
    service: Service,
    _token: Reader,
    user_id: Annotated[
        str | None,
        Query(
            alias="userId",
            pattern=ID_PATTERN,
            max_length=128,
            description="the user; without it, the bot's most recently seen session",
            examples=["user-1"],
        ),
    ] = None,
) -> StatusResponse:
    """Redis first; when Redis misses (the session is inactive or was swept) or is down, the
    database's last state; when the database is down too, the BotSession itself.
    `X-Session-Source` says which answered.

    Without `userId`: the bot's only session, or, when it has several, the most recently
    seen one (the live sessions in Redis first, else the database's most recent)."""
    view = await service.status(bot_id, user_id)
    response.headers["X-Session-Source"] = view.source
    return StatusResponse.of(view.state)


@router.post(
    "/clear-session/{botId}",
    tags=["frontend"],
    summary="Clear a session (or, with an admin token, every session of a bot)",
    response_model=ClearResponse,
    responses={
        200: {"description": "cleared; `cleared` says exactly what was removed"},
        202: {
            "model": ClearResponse,
            "description": "accepted: the BotSession's removal (or a store) is still pending",
            "content": {
                "application/json": {
                    "example": {
                        "success": True,
                        "cleared": {"session": 0, "redisKeys": 3, "databaseRows": 3},
                        "pending": ["session bot-1:user-1"],
                    }
                }
            },
        },
        **errors(401, 403, 422, 502, 503),
    },
)
async def clear_session(
    bot_id: BotId,
    body: ClearRequest,
    response: Response,
    service: Service,
    admission: Admission,
    token: Reporter,
) -> ClearResponse:
    """Needs the `report` scope for one session (`userId`), `admin` for all of a bot's.
    Repeating it is harmless: what is already gone counts 0."""
    if body.userId is None and not token.allows(Scope.ADMIN):
        raise ApiProblem(
            422,
            "invalid_input",
            "userId is required (only a token with the admin scope may omit it, to clear "
            "every session of the bot)",
        )
    async with admission.turn():
        result = await service.clear(
            bot_id,
            body.userId,
            ClearFlags(body.clearSession, body.clearRedis, body.clearDatabase),
            actor=token.name,
        )
    if result.pending:
        response.status_code = 202
    return ClearResponse.model_validate(
        {
            "cleared": {
                "session": result.sessions,
                "redisKeys": result.redis_keys,
                "databaseRows": result.database_rows,
            },
            "pending": result.pending,
        }
    )


# --- the bot platform's endpoints ------------------------------------------------------


@router.post(
    "/sessions/{botId}/{userId}/report",
    tags=["sessions"],
    summary="Report a session's phase (creates the session on its first report)",
    response_model=ReportResponse,
    responses={
        200: {"description": "recorded (or, repeating the current phase, lastSeen refreshed)"},
        201: {
            "model": ReportResponse,
            "description": "the session was created",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        **errors(401, 403, 404, 409, 422, 502, 503),
    },
)
async def report(
    bot_id: BotId,
    user_id: UserId,
    body: ReportRequest,
    response: Response,
    service: Service,
    admission: Admission,
    token: Reporter,
) -> ReportResponse:
    """`connecting`, `connected` (phase active), `failed`, `disconnected` (phase inactive).
    A refused transition is 409 with the current phase and the allowed next ones."""
    key = SessionKey(bot_id, user_id)
    identity = Identity(body.phoneNumber or "", body.displayName or "", body.sessionId or "")
    async with admission.turn():
        result = await service.report(
            key,
            body.state,
            body.reason,
            identity,
            actor=token.name,
            heartbeat_timeout_seconds=body.heartbeatTimeoutSeconds,
        )
    if result.created:
        response.status_code = 201
        response.headers["Location"] = (
            f"{V1}/sessions/{quote(bot_id, safe='')}/{quote(user_id, safe='')}"
        )
    return ReportResponse(
        created=result.created,
        session=Session.of(result.state),
        transitions=[TransitionOut.of(e) for e in result.transitions],
        redisPending=result.redis_pending,
        databasePending=result.database_pending,
    )


@router.post(
    "/sessions/{botId}/{userId}/heartbeat",
    tags=["sessions"],
    summary="Keep a live session alive (Redis only)",
    response_model=HeartbeatResponse,
    responses={
        200: {"description": "lastSeen and expiresAt refreshed"},
        **errors(401, 403, 404, 409, 422, 503),
    },
)
async def heartbeat(
    bot_id: BotId, user_id: UserId, service: Service, _token: Reporter
) -> HeartbeatResponse:
    """Refreshes lastSeen and the expiry in Redis; never writes the BotSession or the
    database. 404 for an unknown session, 409 `session_inactive` for an inactive one
    (report `connecting` first)."""
    beat = await service.heartbeat(SessionKey(bot_id, user_id))
    return HeartbeatResponse.of(beat)


async def event_reader(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ticket: Annotated[
        str | None,
        Query(description="a stream ticket (POST .../session-events/tickets), for EventSource"),
    ] = None,
) -> ApiToken:
    """A token with the read scope, from the Authorization header or a stream ticket."""
    registry: TokenRegistry = request.app.state.tokens
    presented = bearer_token(request.headers.get("authorization"))
    if presented is not None:
        return authorize(request, registry.authenticate(presented), Scope.READ)
    if ticket is None:
        raise ApiProblem(
            401,
            "unauthorized",
            "missing bearer token (Authorization: Bearer <token>) or ?ticket=",
            UNAUTHORIZED_HEADERS,
        )
    runtime: Runtime = request.app.state.runtime
    token = await redeem(runtime.redis, registry, ticket)
    if token is None:
        raise ApiProblem(401, "unauthorized", "invalid or expired ticket", UNAUTHORIZED_HEADERS)
    return authorize(request, token, Scope.READ)


@router.post(
    "/session-events/tickets",
    tags=["frontend"],
    summary="A ticket to open the event stream from a browser's EventSource",
    status_code=201,
    response_model=TicketResponse,
    responses={201: {"description": "the ticket"}, **errors(401, 403, 503)},
)
async def event_ticket(request: Request, token: Reader, service: Service) -> TicketResponse:
    runtime: Runtime = request.app.state.runtime
    ticket, expires = await issue(runtime.redis, token, service.now())
    return TicketResponse(ticket=ticket, expiresAt=format_time(expires))


@router.get(
    "/session-events",
    tags=["frontend"],
    summary="Every session change as it happens (Server-Sent Events), resumable",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"example": EVENT_EXAMPLE}},
            "description": "`event: transition` or `event: removed`, `id:` to resume from, "
            '`data:` one JSON object (docs/api.md, "Session events"); a comment every 15 s',
        },
        **errors(401, 403, 410, 422, 503),
    },
)
async def session_events(
    request: Request,
    _token: Annotated[ApiToken, Depends(event_reader)],
    bot_id: OptionalBotId = None,
    user_id: OptionalUserId = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="resume after this event")
    ] = None,
    last_event_id_query: Annotated[
        str | None,
        Query(alias="lastEventId", description="the same, for clients that cannot set headers"),
    ] = None,
) -> StreamingResponse:
    if user_id is not None and bot_id is None:
        raise ApiProblem(422, "invalid_input", "userId needs botId")
    last = last_event_id or last_event_id_query
    if last is not None and not EVENT_ID.fullmatch(last):
        raise ApiProblem(422, "invalid_input", "Last-Event-ID must be an event id (<ms>-<n>)")
    runtime: Runtime = request.app.state.runtime
    fanout: EventFanout = request.app.state.events
    if last is not None:
        try:
            await check_resumable(runtime.redis, last, to_millis(runtime.service.now()))
        except EventsExpired:
            raise ApiProblem(
                410,
                "events_expired",
                "events after this id are no longer kept; read the sessions' status, then "
                "reconnect without Last-Event-ID",
            ) from None
    return StreamingResponse(
        stream(fanout, EventFilter(bot_id, user_id), last),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/sessions/{botId}",
    tags=["sessions"],
    summary="A bot's sessions, most recently seen first",
    response_model=SessionList,
    responses={200: {"description": "one page"}, **errors(401, 403, 422, 503)},
)
async def list_sessions(
    bot_id: BotId,
    service: Service,
    _token: Reader,
    status: Annotated[Phase | None, Query(description="only sessions in this phase")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SessionList:
    """From the database, with Redis's fresher lastSeen where it has one. A bot without
    sessions is an empty list, not 404."""
    page, total = await service.list_bot(bot_id, status, limit, offset)
    return SessionList(
        botId=bot_id,
        total=total,
        limit=limit,
        offset=offset,
        sessions=[Session.of(s) for s in page],
    )


@router.get(
    "/sessions/{botId}/{userId}",
    tags=["sessions"],
    summary="One session in full, with its recent history",
    response_model=SessionDetail,
    responses={
        200: {"headers": SOURCE_HEADER, "description": "the session"},
        **errors(401, 403, 404, 422, 503),
    },
)
async def session_detail(
    bot_id: BotId,
    user_id: UserId,
    request: Request,
    response: Response,
    service: Service,
    _token: Reader,
    history: Annotated[
        int | None, Query(ge=0, le=100, description="how many transitions (default 20)")
    ] = None,
) -> SessionDetail:
    limit = request.app.state.api_settings.history_limit if history is None else history
    detail = await service.detail(SessionKey(bot_id, user_id), limit)
    response.headers["X-Session-Source"] = detail.status.source
    return SessionDetail(
        source=detail.status.source,
        session=Session.of(detail.status.state),
        history=[TransitionOut.of(e) for e in detail.history],
        historySource=detail.history_source,
    )


# --- health ----------------------------------------------------------------------------


@health.get("/healthz", summary="Liveness: the process runs", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    return HealthResponse()


@health.get(
    "/readyz",
    summary="Readiness: Kubernetes, Redis or the database, the schema",
    response_model=ReadyResponse,
    responses={
        503: {
            "model": NotReadyResponse,
            "description": "not ready; `checks` says which check failed",
            "content": {
                "application/json": {
                    "example": {
                        "success": False,
                        "error": {"code": "not_ready", "message": "not ready: kubernetes"},
                        "checks": {
                            "kubernetes": {"ok": False, "detail": "kubernetes is unreachable"},
                            "redis": {"ok": True, "detail": None},
                            "database": {"ok": True, "detail": None},
                            "schema": {"ok": True, "detail": None},
                        },
                    }
                }
            },
        }
    },
)
async def readyz(request: Request) -> Any:
    """200 when the Kubernetes API answers, Redis or the database answers, and the database
    schema is current (the API never migrates it in a cluster); else 503."""
    readiness: Readiness = request.app.state.readiness
    ok, results = await readiness.check(request.app.state.runtime)
    checks = {name: {"ok": good, "detail": detail} for name, (good, detail) in results.items()}
    if ok:
        return ReadyResponse.model_validate({"checks": checks})
    failed = [name for name, (good, _) in results.items() if not good]
    body = error_body("not_ready", "not ready: " + ", ".join(failed))
    return JSONResponse({**body, "checks": checks}, status_code=503)
