"""The BotSession side of the use-cases, as an interface.

sessions.adapters.kubernetes.botsessions implements it against the Kubernetes API server;
tests may use an in-memory implementation. Implementations enforce the same rules as the
CRD's CEL: a phase change must be a pair of the transition table and must carry revision + 1.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sessions.domain.model import (
    HistoryEntry,
    Identity,
    Phase,
    Reason,
    SessionKey,
    SessionNotFound,
    SessionState,
    Version,
)


@dataclass(frozen=True, slots=True)
class BotSessionRecord:
    """What the use-cases need of a BotSession object."""

    key: SessionKey
    name: str
    phase: Phase | None
    reason: Reason | None
    revision: int
    identity: Identity
    created_at: datetime
    ttl_seconds: int | None = None
    heartbeat_timeout_seconds: int | None = None  # spec; None: the configured timeout
    last_seen: datetime | None = None
    expires_at: datetime | None = None
    deleting: bool = False
    resource_version: str = ""
    recent: tuple[HistoryEntry, ...] = ()  # the last few transitions, newest last
    synced_revision: int = 0  # the revision the controller copied to Redis and the database
    uid: str = ""
    generation: int = 0
    observed_generation: int = 0  # the generation the controller last synced
    incarnation: int = 0  # set with the first phase (sessions.domain.model.Version)
    created_by_api: bool = False  # the API gives it its first phase; the operator waits

    @property
    def waiting_since(self) -> datetime | None:
        """When this BotSession's last change was made, if the controller has not synced it
        yet (no phase, a revision past the synced one, or a spec it has not seen); None when
        it is in step or being deleted (the finalizer's own work). A spec change carries no
        time of its own: it counts from the last transition."""
        if self.deleting:
            return None
        if self.phase is None:
            return self.created_at
        if self.synced_revision == self.revision and self.observed_generation == self.generation:
            return None
        return self.recent[-1].at if self.recent else self.created_at

    def ttl(self, default: timedelta) -> timedelta:
        return timedelta(seconds=self.ttl_seconds) if self.ttl_seconds else default

    @property
    def seen(self) -> datetime:
        """When it was last seen, as far as the BotSession knows (it trails Redis)."""
        return self.last_seen or self.created_at

    def state(self, default_ttl: timedelta, last_seen: datetime | None = None) -> SessionState:
        """The session state this BotSession stands for, seen at `last_seen` (default: its
        own lastSeen). Raises SessionNotFound while it has no phase."""
        if self.phase is None:
            raise SessionNotFound(f"session {self.key} has no phase yet")
        seen = last_seen or self.seen
        return SessionState(
            key=self.key,
            phase=self.phase,
            revision=self.revision,
            reason=self.reason,
            last_seen=seen,
            expires_at=seen + self.ttl(default_ttl),
            created_at=self.created_at,
            identity=self.identity,
            incarnation=self.incarnation,
            heartbeat_timeout_seconds=self.heartbeat_timeout_seconds,
        )

    @property
    def version(self) -> Version:
        return Version(self.incarnation, self.revision)


class DeleteOutcome(enum.StrEnum):
    ABSENT = "absent"  # there was nothing to delete
    DELETED = "deleted"  # gone within the wait
    PENDING = "pending"  # deletion requested; finalizers still running after the wait


class BotSessions(Protocol):
    async def get(self, key: SessionKey) -> BotSessionRecord | None:
        """The BotSession of a session, or None."""

    async def create(
        self,
        key: SessionKey,
        identity: Identity,
        ttl_seconds: int | None = None,
        *,
        heartbeat_timeout_seconds: int | None = None,
    ) -> tuple[BotSessionRecord, bool]:
        """Create it (status empty) and return it with True; if it already exists, return
        the existing one with False (so exactly one of concurrent creators says created).
        ttl_seconds and heartbeat_timeout_seconds go into the spec (None: the configured).
        Raises SessionDeleting while an earlier incarnation is still being deleted."""

    async def set_phase(
        self,
        record: BotSessionRecord,
        entry: HistoryEntry,
        last_seen: datetime,
        expires_at: datetime,
    ) -> BotSessionRecord:
        """Compare-and-swap: apply the transition `entry` (revision = record.revision + 1)
        only if the stored revision is still record.revision and the object is not being
        deleted. Raises RevisionConflict when it is not, SessionDeleting when it is being
        deleted, TransitionRefused when the server refuses the transition."""

    async def delete(self, key: SessionKey, wait: timedelta) -> DeleteOutcome:
        """Request deletion and wait up to `wait` for the object to disappear."""

    async def delete_unchanged(self, record: BotSessionRecord) -> bool:
        """Delete exactly this version of the object (preconditions on uid and
        resourceVersion); False when it changed or went meanwhile."""

    async def touch(
        self, record: BotSessionRecord, last_seen: datetime, expires_at: datetime
    ) -> None:
        """Copy lastSeen/expiresAt into the status (no phase change, no compare-and-swap)."""

    async def list_bot(self, bot_id: str) -> list[BotSessionRecord]:
        """Every BotSession of a bot."""
