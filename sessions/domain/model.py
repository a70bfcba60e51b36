"""The session domain: phases, the transition table, the session record, domain errors.

This module imports nothing but the standard library. The transition table below is the
single source of truth: the CRD's CEL rules are generated from it
(sessions.adapters.kubernetes.crd) and the tests walk every pair through both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Phase(StrEnum):
    CONNECTING = "connecting"
    ACTIVE = "active"
    INACTIVE = "inactive"
    FAILED = "failed"


class Reason(StrEnum):
    CREATED = "Created"  # first phase of a new session
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
    HEARTBEAT_LOST = "HeartbeatLost"  # heartbeated, then silent past its heartbeat timeout


_END_OF_LIFE = frozenset({Reason.EXPIRED, Reason.CLEARED})

# (from, to) -> the reasons that may accompany that transition. `None` is the empty phase
# of a BotSession nobody has written a status to yet. The requirements' four transitions,
# plus the additions docs/architecture.md explains (first phase, failed->connecting,
# any->inactive when expired or cleared). Anything absent is refused. A "transition" to the
# current phase is not a transition at all (see is_transition).
TRANSITIONS: dict[tuple[Phase | None, Phase], frozenset[Reason]] = {
    (None, Phase.CONNECTING): frozenset({Reason.CREATED}),
    (Phase.CONNECTING, Phase.ACTIVE): frozenset({Reason.CONNECTED}),
    (Phase.CONNECTING, Phase.FAILED): frozenset({Reason.CONNECT_FAILED, Reason.CONNECT_TIMEOUT}),
    (Phase.ACTIVE, Phase.INACTIVE): frozenset(
        {Reason.DISCONNECTED, Reason.LOGGED_OUT, Reason.RESTARTED, Reason.HEARTBEAT_LOST}
        | _END_OF_LIFE
    ),
    (Phase.INACTIVE, Phase.CONNECTING): frozenset({Reason.RECONNECTING}),
    (Phase.FAILED, Phase.CONNECTING): frozenset({Reason.RETRYING}),
    (Phase.CONNECTING, Phase.INACTIVE): _END_OF_LIFE,
    (Phase.FAILED, Phase.INACTIVE): _END_OF_LIFE,
}

# The reason recorded when a caller does not name one.
DEFAULT_REASON: dict[tuple[Phase | None, Phase], Reason] = {
    (None, Phase.CONNECTING): Reason.CREATED,
    (Phase.CONNECTING, Phase.ACTIVE): Reason.CONNECTED,
    (Phase.CONNECTING, Phase.FAILED): Reason.CONNECT_FAILED,
    (Phase.ACTIVE, Phase.INACTIVE): Reason.DISCONNECTED,
    (Phase.INACTIVE, Phase.CONNECTING): Reason.RECONNECTING,
    (Phase.FAILED, Phase.CONNECTING): Reason.RETRYING,
}


def allowed_next(current: Phase | None) -> list[Phase]:
    """The phases a session in `current` may move to, in a stable order."""
    return [to for (frm, to) in TRANSITIONS if frm == current]


def is_transition(current: Phase | None, target: Phase) -> bool:
    return current != target


class SessionError(Exception):
    """Base of every domain error; `code` is the machine-readable error code."""

    code = "session_error"


class InvalidSessionInput(SessionError):
    code = "invalid_input"


class TransitionRefused(SessionError):
    code = "transition_refused"

    def __init__(self, current: Phase | None, target: Phase, reason: Reason | None = None):
        self.current = current
        self.target = target
        self.reason = reason
        self.allowed = allowed_next(current)
        shown = current.value if current else "(none)"
        because = f" with reason {reason.value}" if reason else ""
        allowed = ", ".join(p.value for p in self.allowed) or "nothing"
        super().__init__(
            f"cannot move a session from {shown} to {target.value}{because}; "
            f"allowed next: {allowed}"
        )


class SessionNotFound(SessionError):
    code = "session_not_found"


class SessionInactive(SessionError):
    """A heartbeat for an inactive session: the bot must report `connecting` first."""

    code = "session_inactive"


class SessionDeleting(SessionError):
    """The BotSession is being deleted: it takes no more transitions. Its user may report
    again once it is gone (a new incarnation)."""

    code = "session_deleting"


class NameCollision(SessionError):
    """Two sessions' BotSession names collide (80 bits of a digest: not expected to happen,
    but refused clearly rather than mixing two sessions up)."""

    code = "name_collision"


class RevisionConflict(SessionError):
    """Someone else changed the session first (compare-and-swap lost): re-read and retry."""

    code = "revision_conflict"


class StoreUnavailable(SessionError):
    """A backing store (Redis, the database, the Kubernetes API) cannot be reached."""

    code = "store_unavailable"

    def __init__(self, store: str, detail: str, retry_after: float | None = None):
        self.store = store
        self.retry_after = retry_after
        super().__init__(f"{store} is unavailable: {detail}")


def check_transition(current: Phase | None, target: Phase, reason: Reason | None = None) -> Reason:
    """Validate one transition and return the reason to record (the default if none given).

    Raises TransitionRefused naming the current phase and the allowed next ones.
    """
    reasons = TRANSITIONS.get((current, target))
    if reasons is None:
        raise TransitionRefused(current, target, reason)
    if reason is None:
        default = DEFAULT_REASON.get((current, target))
        if default is None:  # only end-of-life transitions lack a default
            raise TransitionRefused(current, target, reason)
        return default
    if reason not in reasons:
        raise TransitionRefused(current, target, reason)
    return reason


@dataclass(frozen=True)
class Transition:
    from_phase: Phase | None
    to_phase: Phase
    reason: Reason


class ReportedState(StrEnum):
    """What a bot process reports; mapped onto phases by plan_report."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    DISCONNECTED = "disconnected"


_REPORTED_PHASE = {
    ReportedState.CONNECTING: Phase.CONNECTING,
    ReportedState.CONNECTED: Phase.ACTIVE,
    ReportedState.FAILED: Phase.FAILED,
    ReportedState.DISCONNECTED: Phase.INACTIVE,
}


def plan_report(
    current: Phase | None, reported: ReportedState, reason: Reason | None = None
) -> list[Transition]:
    """The transitions a bot's report causes, in order; [] when it repeats the current phase.

    - a first report of `connected` (or `failed`) records the implied first phase too;
    - a bot that restarts reports `connecting` on an `active` session: active->inactive
      (Restarted), then inactive->connecting;
    - anything the table refuses raises TransitionRefused.
    """
    target = _REPORTED_PHASE[reported]
    if current == target:
        return []
    steps: list[Transition] = []
    phase = current
    if phase is None and target is not Phase.CONNECTING:
        steps.append(Transition(None, Phase.CONNECTING, Reason.CREATED))
        phase = Phase.CONNECTING
    elif phase is Phase.ACTIVE and target is Phase.CONNECTING:
        steps.append(Transition(Phase.ACTIVE, Phase.INACTIVE, Reason.RESTARTED))
        phase = Phase.INACTIVE
    # the reporter's reason applies to the step it asked for, the last one
    steps.append(Transition(phase, target, check_transition(phase, target, reason)))
    return steps


# --- identity ---------------------------------------------------------------------------

_ID = re.compile(r"^[A-Za-z0-9._@+=\-]{1,128}$")
_PHONE = re.compile(r"^[0-9]{5,20}$")


def validate_id(name: str, value: str) -> str:
    """botId and userId: 1-128 characters of letters, digits and . _ @ + = -

    No ':' so that the contract keys `session:<botId>:<userId>` split unambiguously.
    """
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidSessionInput(
            f"{name} must be 1-128 characters of letters, digits and . _ @ + = - (got {value!r})"
        )
    return value


def validate_phone(value: str) -> str:
    if not _PHONE.fullmatch(value):
        raise InvalidSessionInput("phoneNumber must be 5-20 digits")
    return value


def mask_phone(phone: str | None) -> str | None:
    """Keep the last 3 digits only, for logs: 1234567890 -> *******890."""
    if not phone:
        return phone
    return "*" * max(len(phone) - 3, 0) + phone[-3:]


@dataclass(frozen=True, order=True, slots=True)
class SessionKey:
    bot_id: str
    user_id: str

    def __post_init__(self) -> None:
        validate_id("botId", self.bot_id)
        validate_id("userId", self.user_id)

    def __str__(self) -> str:
        return f"{self.bot_id}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Identity:
    """What a session is: set on the first report, copied everywhere."""

    phone_number: str = ""
    display_name: str = ""
    session_id: str = ""

    def __post_init__(self) -> None:
        if self.phone_number:
            validate_phone(self.phone_number)
        if len(self.display_name) > 256:
            raise InvalidSessionInput("displayName must be at most 256 characters")
        if len(self.session_id) > 256:
            raise InvalidSessionInput("sessionId must be at most 256 characters")


@dataclass(frozen=True, order=True)
class Version:
    """Which write of a session is newer: the incarnation first, then the revision.

    A BotSession deleted and created again for the same (botId, userId) is a new
    incarnation whose revisions start again at 1; its incarnation (the epoch milliseconds
    of its first phase) is larger than any earlier one's, so the stores take its writes.
    BotSessions from before incarnations existed have incarnation 0.
    """

    incarnation: int
    revision: int

    def __str__(self) -> str:
        return f"{self.incarnation}:{self.revision}"


@dataclass(frozen=True)
class SessionState:
    """One session's state as the stores hold it."""

    key: SessionKey
    phase: Phase
    revision: int
    reason: Reason | None
    last_seen: datetime
    expires_at: datetime
    created_at: datetime
    identity: Identity = field(default_factory=Identity)
    incarnation: int = 0
    # this session's own heartbeat timeout (0: none); None: the configured one
    heartbeat_timeout_seconds: int | None = None

    @property
    def version(self) -> Version:
        return Version(self.incarnation, self.revision)

    def with_phase(
        self, transition: Transition, revision: int, now: datetime, ttl: timedelta
    ) -> SessionState:
        return replace(
            self,
            phase=transition.to_phase,
            reason=transition.reason,
            revision=revision,
            last_seen=now,
            expires_at=now + ttl,
        )


# --- time -------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with a Z, to the second, as the contract shows: 2025-01-01T00:00:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def to_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recorded transition; (key, incarnation, revision) identifies it."""

    key: SessionKey
    revision: int
    from_phase: Phase | None
    to_phase: Phase
    reason: Reason
    actor: str
    at: datetime
    incarnation: int = 0

    @property
    def version(self) -> Version:
        return Version(self.incarnation, self.revision)
