"""The API's error envelope (`{"success": false, "error": {"code", "message", ...}}`, see
docs/api.md "Errors") as typed exceptions, and the Retry-After header as seconds.

Every exception's message has the session's userId replaced by its fingerprint (the API's
messages may name the session), so logging one leaks no userId."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from botsession.models import Phase
from botsession.privacy import redact

# Retry-After values beyond this are taken as this (a broken proxy must not park a bot)
MAX_RETRY_AFTER = 3600.0


class BotSessionError(Exception):
    """An error answer of the API (`status`, `code`, `message`, the envelope's other fields in
    `details`), or, with `status` None, no answer at all (ApiUnreachable)."""

    retryable = False  # the client retries these by itself (bounded) before raising them

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status or 'no answer'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after  # seconds, from Retry-After


class ApiUnreachable(BotSessionError):
    """No answer: the connection failed or timed out (e.g. the API is restarting)."""

    retryable = True


class RateLimited(BotSessionError):
    """429 rate_limited: the token is over its rate limit; see `retry_after`."""

    retryable = True


class Unavailable(BotSessionError):
    """503: a store is unavailable (`store`), or the API is overloaded; see `retry_after`."""

    retryable = True

    @property
    def store(self) -> str | None:
        store = self.details.get("store")
        return store if isinstance(store, str) else None


class Unauthorized(BotSessionError):
    """401: no token, or an unknown one."""


class Forbidden(BotSessionError):
    """403: the token lacks the endpoint's scope (`details["required"]`)."""


class InvalidInput(BotSessionError):
    """422 invalid_input: a bad id or body value (`details["details"]`: field and rule)."""


class SessionNotFound(BotSessionError):
    """404 session_not_found: no such session (never reported, or cleared)."""


class TransitionRefused(BotSessionError):
    """409 transition_refused: the transition table refuses the report."""

    @property
    def current(self) -> Phase | None:
        return _phase(self.details.get("current"))

    @property
    def requested(self) -> Phase | None:
        return _phase(self.details.get("requested"))

    @property
    def allowed(self) -> list[Phase]:
        values = self.details.get("allowed") or []
        return [Phase(v) for v in values if v in Phase.__members__.values()]


class SessionInactive(BotSessionError):
    """409 session_inactive: a heartbeat of an inactive (or swept) session, e.g. after the
    operator found its heartbeats lost: report `connecting`, then `connected`, again."""


class SessionDeleting(BotSessionError):
    """409 session_deleting: its BotSession is being deleted; report again after
    `retry_after` (that report starts a new incarnation)."""

    retryable = True


class RevisionConflict(BotSessionError):
    """409 revision_conflict: the session kept changing under the request; retry."""

    retryable = True


# the envelope's code picks the exception; without a known code, the status does
BY_CODE: dict[str, type[BotSessionError]] = {
    "rate_limited": RateLimited,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "invalid_input": InvalidInput,
    "session_not_found": SessionNotFound,
    "transition_refused": TransitionRefused,
    "session_inactive": SessionInactive,
    "session_deleting": SessionDeleting,
    "revision_conflict": RevisionConflict,
}
BY_STATUS: dict[int, type[BotSessionError]] = {
    401: Unauthorized,
    403: Forbidden,
    422: InvalidInput,
    429: RateLimited,
    503: Unavailable,
    # a proxy or load balancer in front of a restarting API
    502: Unavailable,
    504: Unavailable,
}


def _phase(value: object) -> Phase | None:
    return Phase(value) if isinstance(value, str) and value in Phase.__members__.values() else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After (RFC 9110) in seconds: delay-seconds or an HTTP-date; None when absent or
    unreadable. Never negative, at most MAX_RETRY_AFTER."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def error_from_response(
    status: int, body: bytes, retry_after: str | None = None, user_id: str = ""
) -> BotSessionError:
    """The exception for an error answer: the envelope's code picks the class (else the
    status); a body that is not the envelope (a proxy's page) gives `http_<status>`."""
    code, message, details = f"http_{status}", f"HTTP {status}", {}
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        envelope = None
    error = envelope.get("error") if isinstance(envelope, dict) else None
    if isinstance(error, dict):
        fields = dict(error)
        code = str(fields.pop("code", code))
        message = str(fields.pop("message", message))
        details = fields
    kind = BY_CODE.get(code) or BY_STATUS.get(status) or BotSessionError
    return kind(status, code, redact(message, user_id), details, parse_retry_after(retry_after))
