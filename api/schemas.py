"""Request and response bodies (camelCase, as the frontend's requirements spell them), with
the examples the OpenAPI document shows."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sessions.adapters.kubernetes.crd import ID_PATTERN
from sessions.adapters.redis.store import Heartbeat
from sessions.domain.model import (
    HistoryEntry,
    Phase,
    Reason,
    ReportedState,
    SessionState,
    format_time,
)

PHONE_PATTERN = r"^[0-9]{5,20}$"
# printable text: no control characters (PostgreSQL refuses NUL; logs and UIs choke on the rest)
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"

EXAMPLE_TIME = "2025-01-01T00:00:00Z"
EXAMPLE_EXPIRES = "2025-01-02T00:00:00Z"


def _encodable(value: str | None) -> str | None:
    """Refuse strings that are not valid Unicode (lone surrogates from JSON escapes)."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text") from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]
Id = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=128)]
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"}, examples=[EXAMPLE_TIME])]


# --- requests --------------------------------------------------------------------------


class ReportRequest(BaseModel):
    """What a bot process reports. The identity fields are recorded by the first report that
    creates the session; later reports do not change them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "state": "connected",
                    "phoneNumber": "1234567890",
                    "displayName": "User Name",
                    "sessionId": "session_123",
                },
                {"state": "disconnected", "reason": "LoggedOut"},
            ]
        },
    )

    state: ReportedState = Field(description="connecting, connected, failed or disconnected")
    reason: Reason | None = Field(
        None, description="why; defaults to the transition's usual reason (docs/api.md)"
    )
    phoneNumber: str | None = Field(None, pattern=PHONE_PATTERN, description="digits only")
    displayName: Text | None = Field(None, max_length=256, pattern=TEXT_PATTERN)
    sessionId: Text | None = Field(None, max_length=256, pattern=TEXT_PATTERN)
    heartbeatTimeoutSeconds: int | None = Field(
        None,
        ge=0,
        le=86400,
        description="this session's heartbeat timeout, set by the report that creates it: "
        "active, heartbeated, then silent this long becomes inactive (HeartbeatLost); "
        "0: never; default: the configured one (BOTSESSION_HEARTBEAT_TIMEOUT)",
    )


class ClearRequest(BaseModel):
    """Each flag defaults to true; at least one must be true. Unknown fields are refused,
    so a misspelt flag cannot silently default to true."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "userId": "user-1",
                    "clearSession": True,
                    "clearRedis": True,
                    "clearDatabase": True,
                },
                {"userId": "user-1", "clearSession": False, "clearDatabase": False},
            ]
        },
    )

    userId: str | None = Field(
        None,
        pattern=ID_PATTERN,
        min_length=1,
        max_length=128,
        description="the session to clear; only an admin token may omit it (all of the bot)",
    )
    clearSession: bool = Field(True, strict=True, description="delete the BotSession")
    clearRedis: bool = Field(True, strict=True, description="remove the Redis keys now")
    clearDatabase: bool = Field(
        True, strict=True, description="delete the row and history (an audit row remains)"
    )


# --- responses -------------------------------------------------------------------------


class StatusResponse(BaseModel):
    """Exactly the shape of the frontend's requirements."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "status": "active",
                    "lastSeen": EXAMPLE_TIME,
                    "phoneNumber": "1234567890",
                    "displayName": "User Name",
                    "sessionId": "session_123",
                }
            ]
        }
    )

    success: Literal[True] = True
    status: Phase
    lastSeen: Time
    phoneNumber: str = Field(description='"" when the bot never reported one')
    displayName: str
    sessionId: str

    @classmethod
    def of(cls, state: SessionState) -> StatusResponse:
        return cls(**cls._fields_of(state))

    @classmethod
    def json_of(cls, state: SessionState) -> bytes:
        """The body as FastAPI's serializer writes it, without building the model first (what
        SessionState holds needs no validation; test_api.py compares the bytes)."""
        body = {"success": True, **cls._fields_of(state)}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    @staticmethod
    def _fields_of(state: SessionState) -> dict[str, Any]:
        return {
            "status": state.phase.value,
            "lastSeen": format_time(state.last_seen),
            "phoneNumber": state.identity.phone_number,
            "displayName": state.identity.display_name,
            "sessionId": state.identity.session_id,
        }


SESSION_EXAMPLE: dict[str, Any] = {
    "botId": "bot-1",
    "userId": "user-1",
    "status": "active",
    "reason": "Connected",
    "revision": 2,
    "lastSeen": EXAMPLE_TIME,
    "expiresAt": EXAMPLE_EXPIRES,
    "createdAt": EXAMPLE_TIME,
    "phoneNumber": "1234567890",
    "displayName": "User Name",
    "sessionId": "session_123",
}


class Session(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SESSION_EXAMPLE]})

    botId: str
    userId: str
    status: Phase
    reason: Reason | None
    revision: int = Field(description="increments with every phase change")
    lastSeen: Time
    expiresAt: Time
    createdAt: Time
    phoneNumber: str
    displayName: str
    sessionId: str

    @classmethod
    def of(cls, state: SessionState) -> Session:
        return cls(
            botId=state.key.bot_id,
            userId=state.key.user_id,
            status=state.phase,
            reason=state.reason,
            revision=state.revision,
            lastSeen=format_time(state.last_seen),
            expiresAt=format_time(state.expires_at),
            createdAt=format_time(state.created_at),
            phoneNumber=state.identity.phone_number,
            displayName=state.identity.display_name,
            sessionId=state.identity.session_id,
        )


TRANSITION_EXAMPLE: dict[str, Any] = {
    "revision": 2,
    "from": "connecting",
    "to": "active",
    "reason": "Connected",
    "actor": "bot-runner",
    "at": EXAMPLE_TIME,
}


class TransitionOut(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True, json_schema_extra={"examples": [TRANSITION_EXAMPLE]}
    )

    revision: int
    from_: Phase | None = Field(alias="from", description="null for a session's first phase")
    to: Phase
    reason: Reason
    actor: str = Field(description="the API token's name, operator, or sweep")
    at: Time

    @classmethod
    def of(cls, entry: HistoryEntry) -> TransitionOut:
        return cls.model_validate(
            {
                "revision": entry.revision,
                "from": entry.from_phase,
                "to": entry.to_phase,
                "reason": entry.reason,
                "actor": entry.actor,
                "at": format_time(entry.at),
            }
        )


class ReportResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "created": True,
                    "session": SESSION_EXAMPLE,
                    "transitions": [
                        {
                            **TRANSITION_EXAMPLE,
                            "revision": 1,
                            "from": None,
                            "to": "connecting",
                            "reason": "Created",
                        },
                        TRANSITION_EXAMPLE,
                    ],
                    "redisPending": False,
                    "databasePending": False,
                }
            ]
        }
    )

    success: Literal[True] = True
    created: bool = Field(description="this report created the session (HTTP 201)")
    session: Session
    transitions: list[TransitionOut] = Field(
        description="the transitions this report recorded, oldest first; [] when it repeated "
        "the current phase (which only refreshes lastSeen)"
    )
    redisPending: bool = Field(description="Redis was down: the operator copies it later")
    databasePending: bool = Field(description="the database was down: backfilled later")


class TicketResponse(BaseModel):
    """A stream ticket: open GET /v1/whatsapp/session-events?ticket=<ticket> with it (an
    EventSource cannot send the Authorization header). Reusable until expiresAt."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "ticket": "q3Jv0b7k0m8Yc9m2Jx1t7f6Qm0g5y3kz2w8r1u4s6e0",
                    "expiresAt": EXAMPLE_EXPIRES,
                }
            ]
        }
    )

    success: Literal[True] = True
    ticket: str
    expiresAt: Time


class HeartbeatResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "status": "active",
                    "lastSeen": EXAMPLE_TIME,
                    "expiresAt": EXAMPLE_EXPIRES,
                    "revision": 2,
                }
            ]
        }
    )

    success: Literal[True] = True
    status: Phase
    lastSeen: Time
    expiresAt: Time
    revision: int

    @classmethod
    def of(cls, beat: Heartbeat) -> HeartbeatResponse:
        return cls(**cls._fields_of(beat))

    @classmethod
    def json_of(cls, beat: Heartbeat) -> bytes:
        """The body as FastAPI's serializer writes it (test_api.py compares the bytes)."""
        body = {"success": True, **cls._fields_of(beat)}
        return json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def _fields_of(beat: Heartbeat) -> dict[str, Any]:
        return {
            "status": beat.phase.value,
            "lastSeen": format_time(beat.last_seen),
            "expiresAt": format_time(beat.expires_at),
            "revision": beat.revision,
        }


class SessionList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "botId": "bot-1",
                    "total": 1,
                    "limit": 50,
                    "offset": 0,
                    "sessions": [SESSION_EXAMPLE],
                }
            ]
        }
    )

    success: Literal[True] = True
    botId: str
    total: int = Field(description="sessions matching the filter, over all pages")
    limit: int
    offset: int
    sessions: list[Session] = Field(description="most recently seen first")


class SessionDetail(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "source": "redis",
                    "session": SESSION_EXAMPLE,
                    "history": [TRANSITION_EXAMPLE],
                    "historySource": "database",
                }
            ]
        }
    )

    success: Literal[True] = True
    source: Literal["redis", "database", "kubernetes"] = Field(
        description="where the state was read (as X-Session-Source)"
    )
    session: Session
    history: list[TransitionOut] = Field(description="recent transitions, newest first")
    historySource: Literal["database", "kubernetes"] = Field(
        description="database; kubernetes while the database is down: then only the last "
        "few transitions the BotSession keeps"
    )


class Cleared(BaseModel):
    session: int = Field(description="BotSessions deleted")
    redisKeys: int = Field(description="Redis keys removed")
    databaseRows: int = Field(description="database rows (session + history) deleted")


class ClearResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "cleared": {"session": 1, "redisKeys": 3, "databaseRows": 3},
                    "pending": [],
                }
            ]
        }
    )

    success: Literal[True] = True
    cleared: Cleared
    pending: list[str] = Field(
        description="what is still in progress or failed (HTTP 202 when not empty), e.g. "
        '"session bot-1:user-1" while the BotSession\'s finalizer runs'
    )


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="machine-readable; see docs/api.md")
    message: str = Field(description="what was wrong, for people")
    current: Phase | None = Field(None, description="transition_refused: the current phase")
    requested: Phase | None = Field(None, description="transition_refused: the phase asked")
    allowed: list[Phase] | None = Field(None, description="transition_refused: allowed next")
    store: str | None = Field(None, description="store_unavailable: kubernetes, redis, database")
    details: list[dict[str, str]] | None = Field(
        None, description="invalid_input: each field and what is wrong with it"
    )


class ErrorResponse(BaseModel):
    success: Literal[False] = False
    error: ErrorInfo


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"success": True, "status": "ok"}]})

    success: Literal[True] = True
    status: Literal["ok"] = "ok"


READY_EXAMPLE: dict[str, Any] = {
    "kubernetes": {"ok": True, "detail": None},
    "redis": {"ok": True, "detail": None},
    "database": {"ok": True, "detail": None},
    "schema": {"ok": True, "detail": None},
}


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"success": True, "checks": READY_EXAMPLE}]}
    )

    success: Literal[True] = True
    checks: dict[str, Check]


class NotReadyResponse(BaseModel):
    success: Literal[False] = False
    error: ErrorInfo
    checks: dict[str, Check]


# --- documented error responses --------------------------------------------------------

_ERROR_EXAMPLES: dict[int, tuple[str, dict[str, Any]]] = {
    401: (
        "no token, or an unknown one",
        {"code": "unauthorized", "message": "missing bearer token (Authorization: Bearer ...)"},
    ),
    403: (
        "the token lacks the scope",
        {"code": "forbidden", "message": "token 'frontend' lacks the report scope"},
    ),
    404: (
        "no such session",
        {"code": "session_not_found", "message": "no session for bot-1:user-1"},
    ),
    410: (
        "the events after Last-Event-ID are no longer kept",
        {
            "code": "events_expired",
            "message": "events after this id are no longer kept; read the sessions' status, "
            "then reconnect without Last-Event-ID",
        },
    ),
    409: (
        "refused transition (or an inactive session's heartbeat, or a lost compare-and-swap)",
        {
            "code": "transition_refused",
            "message": "cannot move a session from inactive to active; allowed next: connecting",
            "current": "inactive",
            "requested": "active",
            "allowed": ["connecting"],
        },
    ),
    422: (
        "the request is invalid",
        {
            "code": "invalid_input",
            "message": "body.state: Input should be 'connecting', 'connected', 'failed' or "
            "'disconnected'",
            "details": [
                {
                    "field": "body.state",
                    "message": "Input should be 'connecting', 'connected', 'failed' or "
                    "'disconnected'",
                }
            ],
        },
    ),
    502: (
        "the Kubernetes API refused the request (e.g. RBAC)",
        {"code": "kubernetes_error", "message": "the Kubernetes API answered 403 Forbidden"},
    ),
    503: (
        "a store is unavailable (Kubernetes: nothing was written); see Retry-After",
        {
            "code": "store_unavailable",
            "message": "kubernetes is unavailable; retry after 1 s (nothing was written to Redis "
            "or the database)",
            "store": "kubernetes",
        },
    ),
}

_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"schema": {"type": "string"}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses, each with an example."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, example = _ERROR_EXAMPLES[status]
        entry: dict[str, Any] = {
            "model": ErrorResponse,
            "description": description,
            "content": {"application/json": {"example": {"success": False, "error": example}}},
        }
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        if status == 401:
            entry["headers"] = _WWW_AUTHENTICATE
        documented[status] = entry
    return documented


SOURCE_HEADER = {
    "X-Session-Source": {
        "description": "where the state was read: redis; database (Redis missed or is down);"
        " kubernetes (the database is down too: the BotSession, lastSeen up to a minute behind)",
        "schema": {"type": "string", "enum": ["redis", "database", "kubernetes"]},
    }
}


# --- analytics (api/dashboard.py) ------------------------------------------------------


class HourlyTransitions(BaseModel):
    hour: str = Field(examples=["2026-11-25T10:00:00Z"])
    reason: str = Field(examples=["Connected"])
    count: int


class Durations(BaseModel):
    count: int = Field(description="connections that ended in the window")
    median: float | None = Field(description="seconds active, median", examples=[1800.0])
    p95: float | None = Field(description="seconds active, 95th percentile")


class StuckSession(BaseModel):
    botId: str
    userId: str
    since: str = Field(description="when it last changed, ISO 8601 UTC")


class Stuck(BaseModel):
    count: int
    afterSeconds: float
    oldest: list[StuckSession]


class SweepRunOut(BaseModel):
    startedAt: str
    finishedAt: str | None
    removed: int
    expired: int
    inactive: int
    succeeded: bool
    error: str | None
    runner: str


class AnalyticsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "botId": "bot-1",
                    "generatedAt": "2026-11-25T12:00:00Z",
                    "windowHours": 24,
                    "byPhase": {"active": 12, "connecting": 1, "inactive": 30},
                    "liveInRedis": 13,
                    "transitionsPerHour": [
                        {"hour": "2026-11-25T11:00:00Z", "reason": "Connected", "count": 4}
                    ],
                    "duration": {"count": 25, "median": 1800.0, "p95": 7200.0},
                    "stuckConnecting": {
                        "count": 1,
                        "afterSeconds": 120.0,
                        "oldest": [
                            {"botId": "bot-1", "userId": "user-7", "since": "2026-11-25T11:40:00Z"}
                        ],
                    },
                    "cleanupRuns": [
                        {
                            "startedAt": "2026-11-25T11:00:00Z",
                            "finishedAt": "2026-11-25T11:00:01Z",
                            "removed": 3,
                            "expired": 2,
                            "inactive": 1,
                            "succeeded": True,
                            "error": None,
                            "runner": "botsession-0",
                        }
                    ],
                }
            ]
        }
    )

    success: bool = True
    botId: str | None
    generatedAt: str
    windowHours: float
    byPhase: dict[str, int] = Field(examples=[{"active": 12, "connecting": 1}])
    liveInRedis: int | None = Field(description="sessions Redis holds; null when Redis is down")
    transitionsPerHour: list[HourlyTransitions]
    duration: Durations
    stuckConnecting: Stuck
    cleanupRuns: list[SweepRunOut]


# --- the live dashboard (api/dashboard.py) ---------------------------------------------


class BotPhases(BaseModel):
    botId: str
    byPhase: dict[str, int] = Field(examples=[{"active": 12, "failed": 1}])
    total: int


class TroubledBotOut(BaseModel):
    botId: str
    failures: int = Field(description="transitions to failed in the window")
    heartbeatLost: int = Field(description="sessions made inactive for HeartbeatLost")


class FleetResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "generatedAt": "2026-11-25T12:00:00Z",
                    "windowHours": 24,
                    "byPhase": {"active": 40, "connecting": 2, "failed": 3, "inactive": 55},
                    "botCount": 2,
                    "bots": [
                        {
                            "botId": "bot-1",
                            "byPhase": {"active": 30, "failed": 3, "inactive": 40},
                            "total": 73,
                        },
                        {
                            "botId": "bot-2",
                            "byPhase": {"active": 10, "connecting": 2, "inactive": 15},
                            "total": 27,
                        },
                    ],
                    "troubled": [{"botId": "bot-1", "failures": 4, "heartbeatLost": 2}],
                }
            ]
        }
    )

    success: Literal[True] = True
    generatedAt: str
    windowHours: float
    byPhase: dict[str, int] = Field(description="sessions by phase, every bot together")
    botCount: int = Field(description="bots with at least one session in the database")
    bots: list[BotPhases] = Field(description="the bots with the most sessions, most first")
    troubled: list[TroubledBotOut] = Field(
        description="the bots with the most failures plus lost heartbeats in the window, "
        "most first; bots with neither are left out"
    )


class SessionSearch(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "search": "user",
                    "status": None,
                    "limit": 50,
                    "more": False,
                    "sessions": [SESSION_EXAMPLE],
                }
            ]
        }
    )

    success: Literal[True] = True
    search: str | None
    status: Phase | None
    limit: int
    more: bool = Field(description="more sessions match than `limit`: narrow the search")
    sessions: list[Session] = Field(description="most recently seen first")
