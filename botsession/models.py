"""What the bots' client sends and gets back: the API's values (docs/api.md) as enums and
its answers as dataclasses. The enums mirror sessions.domain.model (a unit test keeps them
equal) without importing the server. Fields holding personal data (userId, phone number,
display name) are left out of the dataclasses' repr, so logging a result leaks none."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class ReportState(StrEnum):
    """What a bot reports (the report body's `state`)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"  # the session's phase becomes `active`
    FAILED = "failed"
    DISCONNECTED = "disconnected"  # phase `inactive`; with reason LoggedOut for a log-out


class Phase(StrEnum):
    """A session's status as the API answers it."""

    CONNECTING = "connecting"
    ACTIVE = "active"
    INACTIVE = "inactive"
    FAILED = "failed"


class Reason(StrEnum):
    """Why a transition happened. Results carry reasons as plain strings (equal to these),
    so a reason a newer API adds does not break an older client."""

    CREATED = "Created"
    CONNECTED = "Connected"
    CONNECT_FAILED = "ConnectFailed"
    CONNECT_TIMEOUT = "ConnectTimeout"
    DISCONNECTED = "Disconnected"
    LOGGED_OUT = "LoggedOut"
    RESTARTED = "Restarted"
    EXPIRED = "Expired"
    CLEARED = "Cleared"
    RECONNECTING = "Reconnecting"
    RETRYING = "Retrying"
    HEARTBEAT_LOST = "HeartbeatLost"


def parse_time(value: str) -> datetime:
    """The API's times: ISO 8601 UTC to the second with a `Z`."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Session:
    bot_id: str
    user_id: str = field(repr=False)
    status: Phase
    reason: str | None
    revision: int
    last_seen: datetime
    expires_at: datetime
    created_at: datetime
    phone_number: str = field(repr=False)
    display_name: str = field(repr=False)
    session_id: str = field(repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Session:
        return cls(
            bot_id=body["botId"],
            user_id=body["userId"],
            status=Phase(body["status"]),
            reason=body.get("reason"),
            revision=int(body["revision"]),
            last_seen=parse_time(body["lastSeen"]),
            expires_at=parse_time(body["expiresAt"]),
            created_at=parse_time(body["createdAt"]),
            phone_number=body.get("phoneNumber", ""),
            display_name=body.get("displayName", ""),
            session_id=body.get("sessionId", ""),
        )


@dataclass(frozen=True)
class Transition:
    revision: int
    from_phase: Phase | None
    to_phase: Phase
    reason: str
    actor: str
    at: datetime

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Transition:
        return cls(
            revision=int(body["revision"]),
            from_phase=Phase(body["from"]) if body.get("from") else None,
            to_phase=Phase(body["to"]),
            reason=body["reason"],
            actor=body["actor"],
            at=parse_time(body["at"]),
        )


@dataclass(frozen=True)
class ReportResult:
    """The answer to a report (201 when it created the session, else 200)."""

    created: bool
    session: Session
    transitions: list[Transition]  # what this report recorded, oldest first; [] if a repeat
    redis_pending: bool
    database_pending: bool

    @property
    def status(self) -> Phase:
        return self.session.status

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ReportResult:
        return cls(
            created=bool(body["created"]),
            session=Session.from_json(body["session"]),
            transitions=[Transition.from_json(t) for t in body.get("transitions", [])],
            redis_pending=bool(body.get("redisPending", False)),
            database_pending=bool(body.get("databasePending", False)),
        )


@dataclass(frozen=True)
class HeartbeatResult:
    status: Phase
    last_seen: datetime
    expires_at: datetime
    revision: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> HeartbeatResult:
        return cls(
            status=Phase(body["status"]),
            last_seen=parse_time(body["lastSeen"]),
            expires_at=parse_time(body["expiresAt"]),
            revision=int(body["revision"]),
        )


@dataclass(frozen=True)
class SessionStatus:
    """GET session-status (needs a token with the read scope)."""

    status: Phase
    last_seen: datetime
    phone_number: str = field(repr=False)
    display_name: str = field(repr=False)
    session_id: str = field(repr=False)
    source: str | None  # X-Session-Source: redis, database or kubernetes

    @classmethod
    def from_json(cls, body: dict[str, Any], source: str | None = None) -> SessionStatus:
        return cls(
            status=Phase(body["status"]),
            last_seen=parse_time(body["lastSeen"]),
            phone_number=body.get("phoneNumber", ""),
            display_name=body.get("displayName", ""),
            session_id=body.get("sessionId", ""),
            source=source,
        )
