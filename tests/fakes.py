"""An in-memory BotSessions (the interface of sessions.domain.records) for use-case tests.

It enforces what the API server enforces: compare-and-swap on the revision, the
transition table (as the CRD's CEL rules do), immutable identity, finalizer-free deletes.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sessions.domain.model import (
    HistoryEntry,
    Identity,
    RevisionConflict,
    SessionDeleting,
    SessionKey,
    StoreUnavailable,
    check_transition,
    utcnow,
)
from sessions.domain.records import BotSessionRecord, DeleteOutcome


class InMemoryBotSessions:
    def __init__(self) -> None:
        self.objects: dict[SessionKey, BotSessionRecord] = {}
        self.unavailable = False
        self.pending_deletes: set[SessionKey] = set()  # simulate a finalizer that hangs
        self.writes = 0
        self.uids = 0

    def _check(self) -> None:
        if self.unavailable:
            raise StoreUnavailable("kubernetes", "connection refused", retry_after=1)

    async def get(self, key: SessionKey) -> BotSessionRecord | None:
        self._check()
        return self.objects.get(key)

    async def create(
        self,
        key: SessionKey,
        identity: Identity,
        ttl_seconds: int | None = None,
        *,
        heartbeat_timeout_seconds: int | None = None,
    ) -> tuple[BotSessionRecord, bool]:
        self._check()
        existing = self.objects.get(key)
        if existing is not None:
            if existing.deleting:
                raise SessionDeleting(f"{key} is being deleted")
            return existing, False
        name = hashlib.sha256(str(key).encode()).hexdigest()[:12]
        self.uids += 1
        self.objects[key] = BotSessionRecord(
            key,
            name,
            None,
            None,
            0,
            identity,
            utcnow().replace(microsecond=0),
            ttl_seconds,
            heartbeat_timeout_seconds,
            uid=f"uid-{self.uids}",
            resource_version=str(self.writes + 1),
            created_by_api=True,
        )
        self.writes += 1
        return self.objects[key], True

    async def set_phase(
        self,
        record: BotSessionRecord,
        entry: HistoryEntry,
        last_seen: datetime,
        expires_at: datetime,
    ) -> BotSessionRecord:
        self._check()
        stored = self.objects.get(record.key)
        if stored is None or stored.revision != record.revision:
            raise RevisionConflict(f"{record.key} changed")
        if stored.deleting:
            raise SessionDeleting(f"{record.key} is being deleted")
        if entry.from_phase != stored.phase or entry.revision != stored.revision + 1:
            raise RevisionConflict(f"{record.key} changed")
        check_transition(stored.phase, entry.to_phase, entry.reason)
        updated = replace(
            stored,
            phase=entry.to_phase,
            reason=entry.reason,
            revision=entry.revision,
            last_seen=last_seen,
            expires_at=expires_at,
            recent=(*stored.recent, entry)[-10:],
            resource_version=str(self.writes + 1),
            incarnation=stored.incarnation or entry.incarnation,
        )
        self.objects[record.key] = updated
        self.writes += 1
        return updated

    async def delete(self, key: SessionKey, wait: timedelta) -> DeleteOutcome:
        self._check()
        if key not in self.objects:
            return DeleteOutcome.ABSENT
        if key in self.pending_deletes:
            self.objects[key] = replace(self.objects[key], deleting=True)
            return DeleteOutcome.PENDING
        del self.objects[key]
        return DeleteOutcome.DELETED

    async def delete_unchanged(self, record: BotSessionRecord) -> bool:
        self._check()
        stored = self.objects.get(record.key)
        if stored is None or (stored.uid, stored.resource_version) != (
            record.uid,
            record.resource_version,
        ):
            return False
        del self.objects[record.key]
        return True

    async def touch(
        self, record: BotSessionRecord, last_seen: datetime, expires_at: datetime
    ) -> None:
        self._check()
        stored = self.objects.get(record.key)
        if stored is not None:
            self.writes += 1
            self.objects[record.key] = replace(
                stored,
                last_seen=last_seen,
                expires_at=expires_at,
                resource_version=str(self.writes),
            )

    async def list_bot(self, bot_id: str) -> list[BotSessionRecord]:
        self._check()
        return [r for k, r in sorted(self.objects.items()) if k.bot_id == bot_id]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2031, 5, 17, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
