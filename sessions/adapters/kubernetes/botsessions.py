"""BotSession objects through the Kubernetes API: the real implementation of
sessions.domain.records.BotSessions.

Names are derived from botId/userId (valid for Kubernetes whatever characters they hold;
the originals stay in spec). A phase change is a compare-and-swap: a JSON patch whose first
operation tests status.revision (or, for the very first phase, a merge patch carrying the
object's resourceVersion). Errors of the API server become domain errors:
unreachable/429/5xx -> StoreUnavailable, 409 or a failed test -> RevisionConflict,
422 from the CEL rules -> TransitionRefused, 404 -> SessionNotFound.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sessions.adapters.kubernetes.client import ApiError, CustomObjects, KubeClient
from sessions.adapters.kubernetes.crd import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sessions.domain.model import (
    HistoryEntry,
    Identity,
    NameCollision,
    Phase,
    Reason,
    RevisionConflict,
    SessionDeleting,
    SessionKey,
    SessionNotFound,
    TransitionRefused,
    format_time,
    parse_time,
)
from sessions.domain.records import BotSessionRecord, DeleteOutcome

BOT_LABEL = f"{GROUP}/bot"
# on BotSessions whose name is not resource_name(key) (made by hand, or named before names
# stopped holding the user id): the operator stamps it, and lookups find them by it
NAME_LABEL = f"{GROUP}/name"
CUSTOM_NAME = "custom"
CUSTOM_NAMED = f"{NAME_LABEL}={CUSTOM_NAME}"
# on BotSessions the API creates: it writes their first phase itself, so the operator
# leaves them phaseless for a grace period instead of racing it (its actor would win)
CREATED_BY = f"{GROUP}/created-by"
RECENT_TRANSITIONS = 10
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


def resource_name(key: SessionKey) -> str:
    """A DNS-1123 name with no user id in it (the API server logs names; user ids are often
    phone numbers): the bot, readable, and 80 bits of a digest of (botId, userId):
    ('Bot_1', '4915112345678@c.us') -> 'bot-1-5f0c2d7a9e41b3c86d20'. A collision (another
    session's object under this name) is detected and refused (NameCollision)."""
    digest = hashlib.sha256(f"{key.bot_id}\0{key.user_id}".encode()).hexdigest()[:20]
    bot = _slug(key.bot_id, 40)
    return f"{bot}-{digest}" if bot else f"bs-{digest}"


def bot_label(bot_id: str) -> str:
    """The label value that selects a bot's BotSessions (botIds may hold @ + =, which labels
    may not: those get a digest instead)."""
    if _LABEL_VALUE.match(bot_id):
        return bot_id
    return "sha-" + hashlib.sha256(bot_id.encode()).hexdigest()[:40]


def kept_labels(name: str, key: SessionKey) -> dict[str, str]:
    """The labels the operator keeps on a BotSession: its bot's, and CUSTOM_NAMED when its
    name is not the derived one (so that lookups find it without a LIST)."""
    labels = {BOT_LABEL: bot_label(key.bot_id)}
    if name != resource_name(key):
        labels[NAME_LABEL] = CUSTOM_NAME
    return labels


def _entry_json(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "revision": entry.revision,
        "from": entry.from_phase.value if entry.from_phase else "",
        "to": entry.to_phase.value,
        "reason": entry.reason.value,
        "actor": entry.actor,
        "at": format_time(entry.at),
    }


def _entry_of(key: SessionKey, item: dict[str, Any], incarnation: int) -> HistoryEntry:
    return HistoryEntry(
        key,
        int(item["revision"]),
        Phase(item["from"]) if item.get("from") else None,
        Phase(item["to"]),
        Reason(item["reason"]),
        item.get("actor", ""),
        parse_time(item["at"]),
        incarnation,
    )


def record_of(body: dict[str, Any]) -> BotSessionRecord:
    """A BotSessionRecord from a BotSession object (as the API server returns it)."""
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    key = SessionKey(spec["botId"], spec["userId"])
    incarnation = int(status.get("incarnation") or 0)
    return BotSessionRecord(
        key=key,
        name=meta["name"],
        phase=Phase(status["phase"]) if status.get("phase") else None,
        reason=Reason(status["reason"]) if status.get("reason") else None,
        revision=int(status.get("revision") or 0),
        identity=Identity(
            spec.get("phoneNumber", ""), spec.get("displayName", ""), spec.get("sessionId", "")
        ),
        created_at=parse_time(meta["creationTimestamp"]),
        ttl_seconds=spec.get("ttlSeconds"),
        heartbeat_timeout_seconds=spec.get("heartbeatTimeoutSeconds"),
        last_seen=parse_time(status["lastSeen"]) if status.get("lastSeen") else None,
        expires_at=parse_time(status["expiresAt"]) if status.get("expiresAt") else None,
        deleting=bool(meta.get("deletionTimestamp")),
        resource_version=meta.get("resourceVersion", ""),
        recent=tuple(
            _entry_of(key, item, incarnation) for item in status.get("recentTransitions") or []
        ),
        synced_revision=int(status.get("syncedRevision") or 0),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        incarnation=incarnation,
        created_by_api=(meta.get("annotations") or {}).get(CREATED_BY) == "api",
    )


def manifest(
    key: SessionKey,
    identity: Identity,
    namespace: str,
    ttl_seconds: int | None = None,
    created_by: str | None = None,
    finalizer: str | None = None,
    *,
    heartbeat_timeout_seconds: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"botId": key.bot_id, "userId": key.user_id}
    if identity.phone_number:
        spec["phoneNumber"] = identity.phone_number
    if identity.display_name:
        spec["displayName"] = identity.display_name
    if identity.session_id:
        spec["sessionId"] = identity.session_id
    if ttl_seconds:
        spec["ttlSeconds"] = ttl_seconds
    if heartbeat_timeout_seconds is not None:
        spec["heartbeatTimeoutSeconds"] = heartbeat_timeout_seconds
    metadata: dict[str, Any] = {
        "name": resource_name(key),
        "namespace": namespace,
        "labels": {
            BOT_LABEL: bot_label(key.bot_id),
            "app.kubernetes.io/managed-by": "botsession-operator",
        },
    }
    if created_by:
        metadata["annotations"] = {CREATED_BY: created_by}
    if finalizer:
        metadata["finalizers"] = [finalizer]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def phase_patch(
    record: BotSessionRecord, entry: HistoryEntry, last_seen: datetime, expires_at: datetime
) -> tuple[str, Any]:
    """(content type, body) of the compare-and-swap status patch for one transition."""
    fields = {
        "phase": entry.to_phase.value,
        "reason": entry.reason.value,
        "revision": entry.revision,
        "lastSeen": format_time(last_seen),
        "expiresAt": format_time(expires_at),
    }
    if record.phase is None:  # first phase: no revision to test yet; a deletion moves the
        # resourceVersion, so the precondition also refuses an object being deleted
        return "application/merge-patch+json", {
            "metadata": {"resourceVersion": record.resource_version},
            "status": {
                **fields,
                "incarnation": entry.incarnation,
                "recentTransitions": [_entry_json(entry)],
            },
        }
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/status/revision", "value": record.revision},
        # an object being deleted takes no more transitions: the finalizer's view of its
        # last revision is final (a `test` for null passes where the field is absent)
        {"op": "test", "path": "/metadata/deletionTimestamp", "value": None},
        *(
            {"op": "add", "path": f"/status/{name}", "value": value}
            for name, value in fields.items()
        ),
    ]
    if record.recent:
        ops.append(
            {"op": "add", "path": "/status/recentTransitions/-", "value": _entry_json(entry)}
        )
        ops += [{"op": "remove", "path": "/status/recentTransitions/0"}] * max(
            0, len(record.recent) + 1 - RECENT_TRANSITIONS
        )
    else:
        ops.append(
            {"op": "add", "path": "/status/recentTransitions", "value": [_entry_json(entry)]}
        )
    return "application/json-patch+json", ops


def sync_status_patch(record: BotSessionRecord, fields: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch of the sync's own status fields (syncedRevision, conditions) that
    applies only while the stored revision is still the one synced: a handler working from
    a stale body (an operator handing over to its successor) cannot set an older
    syncedRevision over a newer one."""
    return [
        {"op": "test", "path": "/status/revision", "value": record.revision},
        *(
            {"op": "add", "path": f"/status/{name}", "value": value}
            for name, value in fields.items()
        ),
    ]


class KubeBotSessions:
    """BotSessions in one namespace. `creator` ("api" in the API) marks the objects this
    instance creates as ones whose first phase it writes itself (CREATED_BY). `finalizer`
    (the operator's, in the API) is given to them at their creation: kopf adding it later
    is one more write per session, and it raced the API's first-phase compare-and-swap (a
    409 for one of the two). `aliases` names the custom-named BotSession of a key, if there
    is one (an index held in memory: sessions.runtime)."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        poll_interval: float = 0.1,
        creator: str | None = None,
        finalizer: str | None = None,
        aliases: Callable[[SessionKey], str | None] | None = None,
    ) -> None:
        self.objects = CustomObjects(client, GROUP, VERSION, namespace, PLURAL)
        self.namespace = namespace
        self.poll_interval = poll_interval
        self.creator = creator
        self.finalizer = finalizer
        self.aliases = aliases

    async def _get_named(self, name: str) -> BotSessionRecord | None:
        try:
            return record_of(await self.objects.get(name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def get(self, key: SessionKey) -> BotSessionRecord | None:
        """By the derived name: one GET, and a miss costs no more (never a LIST: onboarding N
        users of a bot would cost O(N^2), and heartbeats for made-up user ids would become
        LISTs against etcd). A BotSession made by hand under another name, or created before
        names stopped holding the user id, is found by its alias once the operator has
        labelled it (CUSTOM_NAMED). (Never a GET by the old name: that URL would put the
        user id of every new session into the API server's log.)"""
        record = await self._get_named(resource_name(key))
        if record is not None and record.key == key:
            return record
        alias = self.aliases(key) if self.aliases is not None else None
        if alias is None:
            return None
        record = await self._get_named(alias)
        return record if record is not None and record.key == key else None

    async def create(
        self,
        key: SessionKey,
        identity: Identity,
        ttl_seconds: int | None = None,
        *,
        heartbeat_timeout_seconds: int | None = None,
    ) -> tuple[BotSessionRecord, bool]:
        body = manifest(
            key,
            identity,
            self.namespace,
            ttl_seconds,
            self.creator,
            self.finalizer,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        )
        try:
            return record_of(await self.objects.create(body)), True
        except ApiError as exc:
            if exc.status != 409:
                raise
        existing = await self.get(key)
        if existing is None:
            named = await self._get_named(body["metadata"]["name"])
            if named is not None and named.key != key:
                raise NameCollision(f"the name of session {key} is taken by another session")
        if existing is None or existing.deleting:
            raise SessionDeleting(f"session {key} is being deleted; report again shortly")
        return existing, False

    async def set_phase(
        self,
        record: BotSessionRecord,
        entry: HistoryEntry,
        last_seen: datetime,
        expires_at: datetime,
    ) -> BotSessionRecord:
        content_type, body = phase_patch(record, entry, last_seen, expires_at)
        try:
            return record_of(await self.objects.patch_status(record.name, body, content_type))
        except ApiError as exc:
            raise await self._patch_error(exc, record, entry) from exc

    async def set_sync_status(self, record: BotSessionRecord, fields: dict[str, Any]) -> bool:
        """Write the sync's status fields for `record`'s revision; False when the object
        moved on to another revision or went (its own update event syncs that one)."""
        try:
            await self.objects.patch_status(
                record.name, sync_status_patch(record, fields), "application/json-patch+json"
            )
        except ApiError as exc:
            if exc.status in (404, 409, 422):
                return False
            raise
        return True

    async def _patch_error(
        self, exc: ApiError, record: BotSessionRecord, entry: HistoryEntry
    ) -> Exception:
        if exc.status == 404:
            return SessionNotFound(f"session {record.key} does not exist")
        if exc.status == 409:
            return RevisionConflict(f"session {record.key} changed meanwhile")
        if exc.status == 422:
            # A failed JSON-patch `test` and a CEL refusal are both 422 Invalid: tell them
            # apart by whether the stored revision moved on or a deletion began.
            current = await self.get(record.key)
            if current is None:
                return SessionNotFound(f"session {record.key} does not exist")
            if current.deleting:
                return SessionDeleting(f"session {record.key} is being deleted")
            if current.revision != record.revision:
                return RevisionConflict(f"session {record.key} changed meanwhile")
            return TransitionRefused(record.phase, entry.to_phase, entry.reason)
        return exc

    async def delete(self, key: SessionKey, wait: timedelta) -> DeleteOutcome:
        record = await self.get(key)
        if record is None:
            return DeleteOutcome.ABSENT
        try:
            await self.objects.delete(record.name, {"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status == 404:
                return DeleteOutcome.DELETED
            raise
        deadline = asyncio.get_running_loop().time() + wait.total_seconds()
        while True:
            if await self._get_named(record.name) is None:
                return DeleteOutcome.DELETED
            if asyncio.get_running_loop().time() >= deadline:
                return DeleteOutcome.PENDING
            await asyncio.sleep(self.poll_interval)

    async def delete_unchanged(self, record: BotSessionRecord) -> bool:
        """DELETE with preconditions: the API server refuses (409) when the object's uid or
        resourceVersion is no longer the one the caller decided on."""
        body = {
            "propagationPolicy": "Background",
            "preconditions": {"uid": record.uid, "resourceVersion": record.resource_version},
        }
        try:
            await self.objects.delete(record.name, body)
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def touch(
        self, record: BotSessionRecord, last_seen: datetime, expires_at: datetime
    ) -> None:
        """Copy lastSeen/expiresAt into the status (no phase change, so no compare-and-swap:
        a coarse copy that the next one corrects)."""
        body = {
            "status": {"lastSeen": format_time(last_seen), "expiresAt": format_time(expires_at)}
        }
        try:
            await self.objects.patch_status(record.name, body, "application/merge-patch+json")
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def list_bot(self, bot_id: str) -> list[BotSessionRecord]:
        return [
            r
            for r in await self.list_all(f"{BOT_LABEL}={bot_label(bot_id)}")
            if r.key.bot_id == bot_id
        ]

    async def list_all(self, label_selector: str | None = None) -> list[BotSessionRecord]:
        records: list[BotSessionRecord] = []
        query: dict[str, Any] = {"limit": 500}
        if label_selector:
            query["label_selector"] = label_selector
        while True:
            page = await self.objects.list(**query)
            records.extend(record_of(item) for item in page.get("items", []))
            token = page.get("metadata", {}).get("continue")
            if not token:
                return records
            query["_continue"] = token
