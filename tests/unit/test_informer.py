"""The index's retries (sessions.adapters.kubernetes.informer): a watch the API server keeps
refusing is retried with exponential backoff, and anything it delivers resets that."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from sessions.adapters.kubernetes.botsessions import manifest
from sessions.adapters.kubernetes.client import ApiError
from sessions.adapters.kubernetes.informer import BotSessionIndex
from sessions.domain.model import Identity, Phase, SessionKey


class RefusedWatch:
    """Lists fine (empty), refuses every watch (a Role without `watch`) until told not to."""

    def __init__(self) -> None:
        self.watches = 0
        self.refusing = True

    async def list(self, **query: Any) -> dict[str, Any]:
        return {"items": [], "metadata": {"resourceVersion": "1"}}

    def watch(self, timeout: float, **query: Any) -> AsyncIterator[dict[str, Any]]:
        self.watches += 1
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        if self.refusing:
            raise ApiError(403, "Forbidden", "cannot watch botsessions")
        yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "2"}}}
        await asyncio.sleep(3600)


async def test_a_refused_watch_is_retried_with_backoff_and_a_working_one_resets_it() -> None:
    index = BotSessionIndex(cast(Any, None), "default", retry_delay=0.01)
    objects = RefusedWatch()
    index._objects = cast(Any, objects)
    task = asyncio.create_task(index.run())
    try:
        await asyncio.sleep(0.7)  # 0.01 + 0.02 + 0.04 + ... : 7 tries; 70 at a fixed 10 ms
        assert 5 <= objects.watches <= 8, objects.watches
        assert index.filled.is_set()
        objects.refusing = False
        await asyncio.sleep(1.4)  # the next try (at most 1.28 s away) works
        assert index._failures == 0
    finally:
        task.cancel()


def botsession(user: str, **status: Any) -> dict[str, Any]:
    body = manifest(SessionKey("bot-1", user), Identity(), "default")
    body["metadata"] |= {
        "uid": f"uid-{user}",
        "creationTimestamp": "2026-12-01T00:00:00Z",
        "generation": 1,
        "resourceVersion": "1",
    }
    return body | {"status": status}


def in_step(revision: int) -> dict[str, Any]:
    return {
        "phase": "active",
        "reason": "Connected",
        "revision": revision,
        "syncedRevision": revision,
        "observedGeneration": 1,
    }


def test_the_index_keeps_the_unsynced_ones_as_events_come() -> None:
    index = BotSessionIndex(cast(Any, None), "default")
    index._apply({"type": "ADDED", "object": botsession("a", **in_step(2))})
    index._apply({"type": "ADDED", "object": botsession("b")})  # no phase yet
    assert [r.key.user_id for r in index.unsynced()] == ["b"]
    behind = in_step(3) | {"syncedRevision": 2}
    index._apply({"type": "MODIFIED", "object": botsession("a", **behind)})
    assert sorted(r.key.user_id for r in index.unsynced()) == ["a", "b"]
    index._apply({"type": "MODIFIED", "object": botsession("a", **in_step(3))})
    spec_changed = botsession("b", **in_step(1))
    spec_changed["metadata"]["generation"] = 2  # a spec the controller has not seen
    index._apply({"type": "MODIFIED", "object": spec_changed})
    assert [r.key.user_id for r in index.unsynced()] == ["b"]
    assert (index.count(Phase.ACTIVE), index.count(None)) == (2, 0)
    index._apply({"type": "DELETED", "object": spec_changed})
    assert index.unsynced() == [] and len(index) == 1
    assert [r.key.user_id for r in index.in_phase(Phase.ACTIVE)] == ["a"]
    index._apply({"type": "ADDED", "object": botsession("c")})
    index._apply(
        {"type": "MODIFIED", "object": botsession("a", **in_step(4) | {"phase": "inactive"})}
    )
    assert [r.key.user_id for r in index.in_phase(None)] == ["c"]
    assert [r.key.user_id for r in index.in_phase(Phase.INACTIVE)] == ["a"]
    assert index.count(Phase.ACTIVE) == 0
