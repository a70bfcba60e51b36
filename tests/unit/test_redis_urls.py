from __future__ import annotations

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool

from sessions.adapters.redis.store import connect, key_of_member, member_of
from sessions.domain.model import SessionKey

pytestmark = pytest.mark.unit


def test_sentinel_url_names_hosts_service_and_db() -> None:
    client = connect("redis+sentinel://:s3cret@s1:26379,s2/main/2")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "main"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "s3cret"
    hosts = [
        (c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
        for c in pool.sentinel_manager.sentinels
    ]
    assert hosts == [("s1", 26379), ("s2", 26379)]


def test_sentinel_url_without_service_is_refused() -> None:
    with pytest.raises(ValueError, match="service name"):
        connect("redis+sentinel://s1:26379")


def test_index_members_round_trip() -> None:
    key = SessionKey("bot.1", "4915112345678@c.us")
    assert key_of_member(member_of(key)) == key
