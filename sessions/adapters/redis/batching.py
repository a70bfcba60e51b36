"""Automatic pipelining of Redis reads, in the manner of ioredis's `enableAutoPipelining`.

Reads issued in the same turn of the event loop (under load: the session-status requests that
arrived together) go to Redis as one non-transactional pipeline: one connection checkout, one
write, one read of all the replies. A read issued alone goes out as a plain command, so at low
load nothing changes but one event-loop turn. Each caller still gets its own reply or its own
exception (a connection error fails every read of its batch, a per-command error only its own).

Only reads go through here: writes stay in their Lua scripts, one atomic call each.
docs/benchmarks.md ("The REST API under load") has what it saves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError


class ReadAborted(RedisConnectionError):
    """The batch carrying this read was cancelled before Redis answered (shutdown)."""


class ReadBatcher:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()  # a task nobody references may vanish
        self.batches = 0
        self.commands = 0

    async def call(self, *command: Any) -> Any:
        """One read command (e.g. "HGETALL", key), answered with redis-py's usual parsing."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._queued.append((command, reply))
        if len(self._queued) == 1:
            # call_soon runs after every callback already ready in this turn: the batch is
            # whatever the other requests of this turn add before then
            loop.call_soon(self._send_queued)
        return await reply

    def _send_queued(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.commands += len(batch)
        try:
            if len(batch) == 1:
                replies = [await self.client.execute_command(*batch[0][0])]  # type: ignore[no-untyped-call]
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    for command, _ in batch:
                        pipe.execute_command(*command)
                    replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # cancelled included: no caller may wait forever
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc if isinstance(exc, Exception) else ReadAborted())
            if not isinstance(exc, Exception):
                raise
            return
        for (_, reply), value in zip(batch, replies, strict=True):
            if reply.done():  # its caller went away (client disconnected)
                continue
            if isinstance(value, Exception):
                reply.set_exception(value)
            else:
                reply.set_result(value)

    async def close(self) -> None:
        """Let the batches already sent finish (before the client closes)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
