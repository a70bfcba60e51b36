"""Stopping background tasks for certain.

redis-py can swallow a cancellation that lands at the wrong moment of a command (the class of
bug in redis/redis-py#2028; reproduced here with redis 8.1 on a plain PING: a few in thirty
cancellations within the first half millisecond of a call). The task then goes on as if
nothing had happened, and whoever awaits it, a shutdown, waits forever. So a task is
cancelled again until it is done.
"""

from __future__ import annotations

import asyncio
from typing import Any

AGAIN_AFTER = 0.05  # seconds before a task still running is cancelled again


async def stop(*tasks: asyncio.Future[Any]) -> None:
    """Cancel the tasks and wait until each is done; their outcomes are dropped."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=AGAIN_AFTER)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as never retrieved
