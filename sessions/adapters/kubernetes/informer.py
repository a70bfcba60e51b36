"""Every BotSession of one namespace, slim, kept current by a LIST and a WATCH of its own.

The operator's housekeeping reads it (connect timeouts, the audit, retention, the phase
counts, the orphan count). It is filled by its own list and watch, not by a kopf index: kopf
makes every object's handlers wait until all objects are indexed, and with a worker limit
below the number of objects that wait never ends (docs/architecture.md, "The operator").
It runs on every replica, the standby too, so a standby that takes over has it warm. With
a label selector it keeps a subset: the API keeps the custom-named BotSessions so that
lookups find them without a LIST (sessions.runtime); the operator's full index serves its
lookups the same way.

`filled` is set once the first LIST has been read in full; until then nothing may act on
it. Records are slim: each keeps only its last transition.

The first LIST of 100,000 BotSessions takes over 20 s. So that what changes meanwhile (a
BotSession created during an operator's restart) need not wait for it, a watch from the
collection's current resourceVersion runs beside the first LIST, and `early_unsynced()` has
the BotSessions it saw change that are not in step, until the index is filled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

from sessions.adapters.kubernetes.botsessions import record_of, resource_name
from sessions.adapters.kubernetes.client import ApiError, CustomObjects, KubeClient
from sessions.adapters.kubernetes.crd import GROUP, PLURAL, VERSION
from sessions.adapters.tasks import stop
from sessions.domain.logs import event
from sessions.domain.model import Phase, SessionKey
from sessions.domain.records import BotSessionRecord

log = logging.getLogger(__name__)


MAX_RETRY_DELAY = 30.0  # seconds


class WatchExpired(Exception):
    """The API server no longer has the resourceVersion to watch from (410): list again."""


def slim(item: dict[str, Any]) -> BotSessionRecord:
    record = record_of(item)
    return replace(record, recent=record.recent[-1:])


class BotSessionIndex:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        *,
        page_size: int = 500,
        watch_timeout: float = 270.0,
        retry_delay: float = 1.0,
        label_selector: str | None = None,
    ) -> None:
        self._objects = CustomObjects(client, GROUP, VERSION, namespace, PLURAL)
        self._selector = {"label_selector": label_selector} if label_selector else {}
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._retry_delay = retry_delay
        self._records: dict[str, BotSessionRecord] = {}  # by object name
        # the ones not in step (BotSessionRecord.waiting_since), kept as events come, so that
        # the catch-up's look every second costs what is behind, not what is there
        self._unsynced: dict[str, BotSessionRecord] = {}
        # by phase (None: none yet), for the housekeeping's per-tick looks and counts
        self._by_phase: dict[Phase | None, dict[str, BotSessionRecord]] = {}
        self._aliases: dict[SessionKey, str] = {}  # the names not derived from the key
        self.filled = asyncio.Event()
        self._failures = 0  # in a row, since the watch last delivered anything
        self._early: dict[str, BotSessionRecord] = {}  # changed during the first LIST, by name

    def records(self) -> list[BotSessionRecord]:
        return list(self._records.values())

    def unsynced(self) -> list[BotSessionRecord]:
        """The BotSessions the controller has not synced yet (their waiting_since is set)."""
        return list(self._unsynced.values())

    def early_unsynced(self) -> list[BotSessionRecord]:
        """Until the index is filled: the BotSessions that changed since it began to fill and
        are not in step (empty once filled: then `unsynced` has them all)."""
        return [record for record in self._early.values() if record.waiting_since is not None]

    def in_phase(self, phase: Phase | None) -> list[BotSessionRecord]:
        """The BotSessions in `phase` (None: without a phase yet)."""
        return list(self._by_phase.get(phase, {}).values())

    def count(self, phase: Phase | None) -> int:
        return len(self._by_phase.get(phase, {}))

    def __len__(self) -> int:
        return len(self._records)

    def name_of(self, key: SessionKey) -> str | None:
        """The name of `key`'s BotSession when it is not the derived one and this index
        holds it (the API's and the operator's lookups of hand-made BotSessions)."""
        return self._aliases.get(key)

    def find(self, key: SessionKey) -> BotSessionRecord | None:
        record = self._records.get(self._aliases.get(key) or resource_name(key))
        return record if record is not None and record.key == key else None

    async def run(self) -> None:
        """List, then watch from the list's resourceVersion; list again when the watch
        cannot resume. Errors are logged and retried with exponential backoff (a watch the
        RBAC refuses would otherwise be retried, and logged, every second); anything the
        watch delivers resets it. Cancel the task to stop."""
        while True:
            early: asyncio.Task[None] | None = None
            try:
                started = asyncio.get_running_loop().time()
                if not self.filled.is_set():
                    early = asyncio.create_task(self._watch_early(), name="early changes")
                version = await self._list()
                if not self.filled.is_set():
                    seconds = round(asyncio.get_running_loop().time() - started, 2)
                    event(log, "botsession index filled", objects=len(self), seconds=seconds)
                self.filled.set()
                if early is not None:
                    await stop(early)
                self._early.clear()
                await self._watch(version)
            except WatchExpired:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                delay = min(MAX_RETRY_DELAY, self._retry_delay * 2 ** (self._failures - 1))
                event(
                    log,
                    "botsession index: list/watch failed; retrying",
                    logging.WARNING,
                    error=str(exc),
                    failures=self._failures,
                    retryInSeconds=delay,
                )
                await asyncio.sleep(delay)
            finally:
                if early is not None:
                    await stop(early)

    async def _watch_early(self) -> None:
        """The changes from now on, while the first LIST runs. Best effort: when it fails,
        the changes wait for the LIST, as they did without it."""
        try:
            page = await self._objects.list(limit=1, **self._selector)
            version = str(page.get("metadata", {}).get("resourceVersion", ""))
            changes = self._objects.watch(
                self._watch_timeout, resource_version=version, **self._selector
            )
            async for change in changes:
                kind, item = change.get("type"), change.get("object") or {}
                name = (item.get("metadata") or {}).get("name", "")
                if kind == "DELETED":
                    self._early.pop(name, None)
                elif kind in ("ADDED", "MODIFIED"):
                    with contextlib.suppress(KeyError, ValueError):
                        self._early[name] = slim(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            event(log, "botsession index: early watch ended", logging.DEBUG, error=str(exc))

    async def _list(self) -> str:
        fresh: dict[str, BotSessionRecord] = {}
        aliases: dict[SessionKey, str] = {}
        unsynced: dict[str, BotSessionRecord] = {}
        by_phase: dict[Phase | None, dict[str, BotSessionRecord]] = {}
        query: dict[str, Any] = {"limit": self._page_size, **self._selector}
        while True:
            try:
                page = await self._objects.list(**query)
            except ApiError as exc:
                if exc.status == 410:  # the continue token expired: start over
                    raise WatchExpired from exc
                raise
            for item in page.get("items", []):
                self._put(fresh, aliases, unsynced, by_phase, item)
            meta = page.get("metadata", {})
            if not meta.get("continue"):
                self._records, self._aliases = fresh, aliases
                self._unsynced, self._by_phase = unsynced, by_phase
                return str(meta.get("resourceVersion", ""))
            query["_continue"] = meta["continue"]

    async def _watch(self, version: str) -> None:
        while True:
            changes = self._objects.watch(
                self._watch_timeout,
                resource_version=version,
                allow_watch_bookmarks=True,
                **self._selector,
            )
            async for change in changes:
                version = self._apply(change) or version

    def _apply(self, change: dict[str, Any]) -> str | None:
        """Apply one watch event; returns its resourceVersion."""
        kind, item = change.get("type"), change.get("object") or {}
        if kind == "ERROR":
            if item.get("code") == 410:
                raise WatchExpired(item.get("message", "resourceVersion too old"))
            raise ApiError(int(item.get("code") or 500), item.get("reason", ""), str(item))
        self._failures = 0
        meta = item.get("metadata") or {}
        if kind == "DELETED":
            gone = self._records.pop(meta.get("name", ""), None)
            self._unsynced.pop(meta.get("name", ""), None)
            if gone is not None:
                self._by_phase.get(gone.phase, {}).pop(gone.name, None)
                if self._aliases.get(gone.key) == gone.name:
                    del self._aliases[gone.key]
        elif kind in ("ADDED", "MODIFIED"):
            self._put(self._records, self._aliases, self._unsynced, self._by_phase, item)
        version = meta.get("resourceVersion")
        return str(version) if version else None

    @staticmethod
    def _put(
        into: dict[str, BotSessionRecord],
        aliases: dict[SessionKey, str],
        unsynced: dict[str, BotSessionRecord],
        by_phase: dict[Phase | None, dict[str, BotSessionRecord]],
        item: dict[str, Any],
    ) -> None:
        try:
            record = slim(item)
        except (KeyError, ValueError) as exc:  # not a BotSession this code can read
            event(log, "botsession index: object skipped", logging.WARNING, error=str(exc))
            return
        before = into.get(record.name)
        if before is not None:
            by_phase.get(before.phase, {}).pop(record.name, None)
        into[record.name] = record
        by_phase.setdefault(record.phase, {})[record.name] = record
        if record.waiting_since is None:
            unsynced.pop(record.name, None)
        else:
            unsynced[record.name] = record
        if record.name != resource_name(record.key):
            aliases[record.key] = record.name
