"""One error envelope for every 4xx and 5xx:

    {"success": false, "error": {"code": "...", "message": "...", ...details}}

Domain errors (sessions.domain.model) map to statuses here; FastAPI's validation errors, unknown
routes (404), wrong methods (405) and unexpected exceptions (500) get the same envelope.
Nothing here logs a request body, a token or an error message that may quote user data.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sessions.adapters.kubernetes.client import ApiError
from sessions.domain.logs import event
from sessions.domain.model import (
    InvalidSessionInput,
    NameCollision,
    RevisionConflict,
    SessionDeleting,
    SessionError,
    SessionInactive,
    SessionNotFound,
    StoreUnavailable,
    TransitionRefused,
)

log = logging.getLogger("api")


# how long a client should wait before retrying when a store is unavailable
DEFAULT_RETRY_AFTER = 1.0

STATUS_OF: dict[type[SessionError], int] = {
    InvalidSessionInput: 422,
    TransitionRefused: 409,
    SessionNotFound: 404,
    SessionInactive: 409,
    SessionDeleting: 409,
    NameCollision: 409,
    RevisionConflict: 409,
    StoreUnavailable: 503,
}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiProblem(Exception):
    """An error the API itself raises (auth, request rules), answered in the envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message, **details}}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    **details: Any,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **details), status, headers=headers)


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """Retry-After in whole seconds (RFC 9110: delay-seconds), at least 1."""
    return {"Retry-After": str(max(1, math.ceil(seconds or DEFAULT_RETRY_AFTER)))}


def status_of(exc: SessionError) -> int:
    for kind, status in STATUS_OF.items():
        if isinstance(exc, kind):
            return status
    return 500


def session_error_response(exc: SessionError) -> JSONResponse:
    status = status_of(exc)
    details: dict[str, Any] = {}
    headers: dict[str, str] = {}
    message = str(exc)
    if isinstance(exc, TransitionRefused):
        details = {
            "current": exc.current.value if exc.current else None,
            "requested": exc.target.value,
            "allowed": [phase.value for phase in exc.allowed],
        }
    elif isinstance(exc, SessionDeleting):
        headers = retry_after_header(DEFAULT_RETRY_AFTER)  # it is gone within moments
    elif isinstance(exc, StoreUnavailable):
        details = {"store": exc.store}
        headers = retry_after_header(exc.retry_after)
        # the detail (a URL, a path with the user's id) stays out of the answer
        message = f"{exc.store} is unavailable; retry after {headers['Retry-After']} s"
        if exc.store == "kubernetes":
            message += " (nothing was written to Redis or the database)"
    return error_response(status, exc.code, message, headers or None, **details)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    """Where and what, without echoing the input (it may hold a phone number)."""
    return [
        {"field": _location(tuple(e.get("loc", ()))), "message": str(e.get("msg", ""))}
        for e in exc.errors()
    ]


def install(app: FastAPI) -> None:
    """Register the envelope for every kind of error on the app."""

    async def on_session_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SessionError)
        return session_error_response(exc)

    async def on_kubernetes_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        event(
            log, "kubernetes refused a request", logging.ERROR, status=exc.status, reason=exc.reason
        )
        return error_response(
            502,
            "kubernetes_error",
            f"the Kubernetes API answered {exc.status} {exc.reason}".rstrip(),
        )

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiProblem)
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.details)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = validation_details(exc)
        first = details[0] if details else {"field": "request", "message": "invalid"}
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        return error_response(
            422,
            "invalid_input",
            f"{first['field']}: {first['message']}{more}",
            details=details,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        code = HTTP_CODES.get(status, f"http_{status}")
        if status == 404 and exc.detail == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif status == 405:
            message = f"{request.method} is not allowed on this endpoint"
        else:
            message = str(exc.detail)
        return error_response(status, code, message, dict(exc.headers or {}) or None)

    app.add_exception_handler(SessionError, on_session_error)
    app.add_exception_handler(ApiError, on_kubernetes_error)
    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
