"""An in-memory BotSessions (the interface of sessions.botsessions) for use-case tests.

It enforces what the API server enforces: compare-and-swap on the revision, the
transition table (as the CRD's CEL rules do), immutable identity, finalizer-free deletes.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta

from sessions.botsessions import BotSessionRecord, DeleteOutcome
from sessions.model import (
    HistoryEntry,
    Identity,
    RevisionConflict,
    SessionKey,
    StoreUnavailable,
    check_transition,
    utcnow,
)


class InMemoryBotSessions:
    def __init__(self) -> None:
        self.objects: dict[SessionKey, BotSessionRecord] = {}
        self.unavailable = False
        self.pending_deletes: set[SessionKey] = set()  # simulate a finalizer that hangs
        self.writes = 0

    def _check(self) -> None:
        if self.unavailable:
            raise StoreUnavailable("kubernetes", "connection refused", retry_after=1)

    async def get(self, key: SessionKey) -> BotSessionRecord | None:
        self._check()
        return self.objects.get(key)

    async def create(
        self, key: SessionKey, identity: Identity, ttl_seconds: int | None = None
    ) -> BotSessionRecord:
        self._check()
        if key not in self.objects:
            name = hashlib.sha256(str(key).encode()).hexdigest()[:12]
            self.objects[key] = BotSessionRecord(
                key, name, None, None, 0, identity, utcnow().replace(microsecond=0), ttl_seconds
            )
            self.writes += 1
        return self.objects[key]

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

    async def list_bot(self, bot_id: str) -> list[BotSessionRecord]:
        self._check()
        return [r for k, r in sorted(self.objects.items()) if k.bot_id == bot_id]
