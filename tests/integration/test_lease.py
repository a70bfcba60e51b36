"""The housekeeping lease against a real redis-server: one holder at a time, kept through a
pass longer than its TTL, and a pass cancelled when the lease is taken from it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from sessions.adapters.redis.lease import LeaseLost, RedisLease
from sessions.adapters.redis.store import RedisStore

pytestmark = pytest.mark.integration

TTL = timedelta(milliseconds=500)
EVERY = timedelta(milliseconds=100)


@dataclass
class Replicas:
    mine: RedisLease
    other: RedisLease


@pytest.fixture
async def leases(redis_store: RedisStore) -> Replicas:
    """Two replicas' leases on one name; `mine` holds it."""
    replicas = Replicas(
        redis_store.lease("housekeeping", TTL, "mine"),
        redis_store.lease("housekeeping", TTL, "other"),
    )
    assert await replicas.mine.hold()
    return replicas


async def test_a_pass_longer_than_the_ttl_keeps_the_lease_to_its_end(leases: Replicas) -> None:
    mine, other = leases.mine, leases.other
    attempts: list[bool] = []

    async def long_pass() -> str:
        for _ in range(15):  # 1.5 s: three TTLs
            await asyncio.sleep(0.1)
            attempts.append(await other.hold())
        return "done"

    assert await mine.kept_during(long_pass(), EVERY) == "done"
    assert attempts == [False] * 15
    assert await mine.hold()


async def test_a_pass_is_cancelled_when_another_replica_takes_the_lease(
    redis_store: RedisStore, leases: Replicas
) -> None:
    mine, other = leases.mine, leases.other
    finished: list[str] = []

    async def long_pass() -> None:
        await asyncio.sleep(5)
        finished.append("the pass ran to its end")

    async def take_over() -> None:
        await asyncio.sleep(0.25)
        await redis_store.client.delete(redis_store.keys.lease("housekeeping"))
        assert await other.hold()

    started = asyncio.get_running_loop().time()
    with pytest.raises(LeaseLost, match="another replica"):
        await asyncio.gather(mine.kept_during(long_pass(), EVERY), take_over())
    assert asyncio.get_running_loop().time() - started < 1.0
    await asyncio.sleep(0.1)
    assert finished == []
    assert not await mine.hold()


async def test_the_holder_is_read_back_as_it_was_given(redis_store: RedisStore) -> None:
    lease = redis_store.lease("housekeeping", TTL, "shard-a/op-0")
    assert await lease.holder() is None
    assert await lease.hold()
    assert await lease.holder() == "shard-a/op-0"
    await lease.release()
    assert await lease.holder() is None
