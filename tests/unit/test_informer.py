"""The index's retries (sessions.adapters.kubernetes.informer): a watch the API server keeps
refusing is retried with exponential backoff, and anything it delivers resets that."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from sessions.adapters.kubernetes.client import ApiError
from sessions.adapters.kubernetes.informer import BotSessionIndex


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
