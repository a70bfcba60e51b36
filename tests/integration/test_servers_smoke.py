"""The servers the tests start are real: a redis-server and a PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest
import redis.asyncio as aioredis

from devstack.postgres_server import PostgresServer
from devstack.process import DevstackError
from devstack.redis_server import RedisServer

pytestmark = pytest.mark.integration


async def test_redis_is_a_real_server(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        info = await client.info("server")
        assert info["redis_mode"] == "standalone"
        assert int(info["tcp_port"]) == redis_server.port
        assert int(info["process_id"]) == redis_server.proc.pid  # type: ignore[union-attr]
    finally:
        await client.aclose()


async def test_postgres_is_a_real_server(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        version = await conn.fetchval("SELECT version()")
        port = await conn.fetchval("SELECT current_setting('port')")
        assert version.startswith("PostgreSQL ")
        assert int(port) == postgres_server.port
    finally:
        await conn.close()


def test_a_taken_port_is_reported_clearly(redis_server: RedisServer) -> None:
    with pytest.raises(DevstackError, match="already in use"):
        RedisServer(port=redis_server.port).start()


def test_stopped_servers_leave_nothing_running() -> None:
    server = RedisServer()
    with server:
        pid = server.proc.pid  # type: ignore[union-attr]
        workdir = server.workdir
    assert server.proc is not None and server.proc.returncode is not None
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_redis_restart_keeps_the_port(redis_server: RedisServer) -> None:
    server = RedisServer()
    with server:
        port = server.port
        server.stop()
        server.start()
        client = aioredis.from_url(server.url)
        try:
            assert await asyncio.wait_for(client.ping(), 5)
            assert server.port == port
        finally:
            await client.aclose()
