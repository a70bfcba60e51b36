"""A lease in Redis: one holder at a time across replicas (SET NX PX + token check)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

import redis.asyncio as aioredis

from sessions.adapters.tasks import stop
from sessions.domain.model import StoreUnavailable

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


T = TypeVar("T")


class LeaseLost(Exception):
    """The lease went to another holder, or could not be renewed for its whole TTL, while
    work ran under it: the work was cancelled."""


class RedisLease:
    def __init__(self, client: aioredis.Redis, key: str, ttl: timedelta, holder: str = "") -> None:
        """`key`: the lease's Redis key (sessions.adapters.redis.store.RedisKeys.lease)."""
        self.client = client
        self.key = key
        self.ttl = ttl
        self.token = f"{holder}:{secrets.token_hex(8)}"
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)

    async def acquire(self) -> bool:
        try:
            return bool(
                await self.client.set(
                    self.key, self.token, nx=True, px=int(self.ttl.total_seconds() * 1000)
                )
            )
        except Exception as exc:
            raise StoreUnavailable("redis", f"lease {self.key}: {exc}") from exc

    async def holder(self) -> str | None:
        """Who holds the lease now (the `holder` it was taken with), None when it is free."""
        try:
            token = await self.client.get(self.key)
        except Exception as exc:
            raise StoreUnavailable("redis", f"lease {self.key}: {exc}") from exc
        if token is None:
            return None
        text = token.decode() if isinstance(token, bytes) else str(token)
        return text.rsplit(":", 1)[0]

    async def hold(self) -> bool:
        """Keep the lease (renew it) or take it if free; False while another replica has it."""
        return await self.renew() or await self.acquire()

    async def release(self) -> None:
        with contextlib.suppress(Exception):  # the lease expires by itself anyway
            await self._release(keys=[self.key], args=[self.token])

    async def kept_during(self, work: Awaitable[T], every: timedelta) -> T:
        """`work`'s result, the lease renewed every `every` while it runs, so that a pass
        longer than the TTL does not let another replica take over in its middle. When a
        renewal finds the lease taken, or renewals fail (Redis unreachable) for a whole TTL,
        the work is cancelled and LeaseLost raised."""
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=every.total_seconds())
                if done:
                    return task.result()
                try:
                    if not await self.renew():
                        raise LeaseLost(f"{self.key} is held by another replica")
                    renewed_at = loop.time()
                except StoreUnavailable as exc:
                    if loop.time() - renewed_at >= self.ttl.total_seconds():
                        raise LeaseLost(f"{self.key} could not be renewed: {exc}") from exc
        finally:
            await stop(task)

    async def renew(self) -> bool:
        """Extend the lease if this holder has it; False when it does not."""
        try:
            ttl_ms = int(self.ttl.total_seconds() * 1000)
            return bool(await self._renew(keys=[self.key], args=[self.token, ttl_ms]))
        except Exception as exc:
            raise StoreUnavailable("redis", f"lease {self.key}: {exc}") from exc
