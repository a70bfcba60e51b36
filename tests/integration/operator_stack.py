"""A real stack for operator tests: a private redis-server, a SQLite file shared by the test
and the operator, the test's own SessionService on the session's control plane, and
operators started as real subprocesses with short intervals (so days fit in seconds)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from devstack.controlplane import ControlPlane
from devstack.kubectl import kubectl
from devstack.operator_process import OperatorProcess
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.kubernetes.client import KubeClient, load_kubeconfig
from sessions.adapters.redis.store import RedisStore, connect
from sessions.adapters.sql.migrate import upgrade
from sessions.adapters.sql.store import SqlStore, create_engine
from sessions.domain.model import Identity, Phase, Reason, SessionKey
from sessions.domain.settings import load_settings
from sessions.usecases.service import SessionService
from tests.conftest import TEST_BUDGET

IDENTITY = Identity("4915112345678", "Jane", "session_123")


@dataclass
class Stack:
    plane: ControlPlane
    namespace: str
    redis_server: RedisServer
    database_url: str
    service: SessionService
    botsessions: KubeBotSessions
    env: dict[str, str]

    def operator(self, *args: str, **env: str) -> OperatorProcess:
        return OperatorProcess(
            self.plane.kubeconfig, self.namespace, {**self.env, **env}, args=args
        )

    @property
    def redis(self) -> RedisStore:
        return self.service.redis

    @property
    def sql(self) -> SqlStore:
        return self.service.sql


@asynccontextmanager
async def open_stack(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """A private Redis, a SQLite file shared by the test and the operator, and the env that
    an operator started from this stack gets (short intervals, so days fit in seconds)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'botsession.sqlite3'}"
    env = {
        "BOTSESSION_DATABASE_URL": database_url,
        "BOTSESSION_REDIS_RETRIES": "1",
        "BOTSESSION_REDIS_TIMEOUT": "2s",
        "BOTSESSION_RESYNC_INTERVAL": "1s",
        "BOTSESSION_CLEANUP_INTERVAL": "1h",
        "BOTSESSION_METRICS_PORT": "0",
    }
    with RedisServer() as redis_server:
        env["BOTSESSION_REDIS_URL"] = redis_server.url
        settings = load_settings(
            namespace=namespace, database_url=database_url, redis_url=redis_server.url
        )
        kube = KubeClient(load_kubeconfig(controlplane.kubeconfig))
        botsessions = KubeBotSessions(kube, namespace, poll_interval=0.05)
        redis = RedisStore(
            connect(redis_server.url, retries=2, timeout=timedelta(seconds=2)), budget=TEST_BUDGET
        )
        sql = SqlStore(create_engine(database_url), budget=TEST_BUDGET)
        await upgrade(sql.engine)
        service = SessionService(botsessions, redis, sql, settings)
        try:
            yield Stack(
                controlplane, namespace, redis_server, database_url, service, botsessions, env
            )
        finally:
            await redis.close()
            await sql.close()
            await kube.close()


def with_ttl(stack: Stack, **overrides: str) -> SessionService:
    """The test's own service, with the same short settings the operator runs with."""
    settings = load_settings(
        namespace=stack.namespace,
        database_url=stack.database_url,
        redis_url=stack.redis_server.url,
        **overrides,
    )
    return SessionService(stack.botsessions, stack.redis, stack.sql, settings)


def events(stack: Stack) -> list[dict[str, str]]:
    out = kubectl(stack.plane.kubeconfig, "get", "events", "-n", stack.namespace, "-o", "json")
    return [
        {
            "type": e["type"],
            "reason": e["reason"],
            "object": e["involvedObject"]["name"],
            "message": e["message"],
        }
        for e in json.loads(out.stdout)["items"]
    ]


async def record_is(stack: Stack, key: SessionKey, phase: Phase, reason: Reason) -> bool:
    record = await stack.botsessions.get(key)
    return record is not None and (record.phase, record.reason) == (phase, reason)


async def synced_everywhere(stack: Stack, keys: list[SessionKey]) -> bool:
    for key in keys:
        record = await stack.botsessions.get(key)
        if record is None or record.synced_revision != record.revision:
            return False
    return True


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def async_true(value: bool) -> bool:
    return value
