"""A lease in Redis: one holder at a time across replicas (SET NX PX + token check)."""

from __future__ import annotations

import contextlib
import secrets
from datetime import timedelta

import redis.asyncio as aioredis

from sessions.domain.model import StoreUnavailable

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


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

    async def hold(self) -> bool:
        """Keep the lease (renew it) or take it if free; False while another replica has it."""
        try:
            ttl_ms = int(self.ttl.total_seconds() * 1000)
            if await self._renew(keys=[self.key], args=[self.token, ttl_ms]):
                return True
        except Exception as exc:
            raise StoreUnavailable("redis", f"lease {self.key}: {exc}") from exc
        return await self.acquire()

    async def release(self) -> None:
        with contextlib.suppress(Exception):  # the lease expires by itself anyway
            await self._release(keys=[self.key], args=[self.token])
