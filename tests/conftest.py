"""Shared fixtures: real servers started by the test run itself, stopped afterwards."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from devstack.controlplane import ControlPlane
from devstack.kubectl import install_crds, kubectl
from devstack.operator_process import OperatorProcess
from devstack.postgres_server import PostgresServer
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.botsessions import CUSTOM_NAMED, KubeBotSessions
from sessions.adapters.kubernetes.client import KubeClient, load_kubeconfig
from sessions.adapters.kubernetes.informer import BotSessionIndex
from sessions.adapters.redis.store import RedisStore, connect
from sessions.adapters.sql.migrate import upgrade
from sessions.adapters.sql.store import SqlStore, create_engine
from sessions.domain.model import Identity, Phase, Reason, SessionKey, SessionState, utcnow

REPO = Path(__file__).resolve().parents[1]
# the stores' time budget in the tests' own clients: generous, so a loaded CI machine does not
# trip a guard (tests/integration/test_hangs.py exercises the real budgets)
TEST_BUDGET = timedelta(seconds=5)
_skipped: list[str] = []
T = TypeVar("T")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: a skip must never hide a missing server."""
    if os.environ.get("CI") and _skipped and exitstatus == 0:
        session.exitstatus = 1
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(
                f"CI: {len(_skipped)} skipped test(s) count as failures: {_skipped}", red=True
            )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def controlplane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for the whole run, with the BotSession CRD established."""
    with ControlPlane() as plane:
        install_crds(plane.kubeconfig, REPO / "crds")
        yield plane


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    """A store on the session's real redis-server, emptied before each test."""
    store = RedisStore(
        connect(redis_server.url, retries=1, timeout=timedelta(seconds=2)), budget=TEST_BUDGET
    )
    await store.client.flushall()
    try:
        yield store
    finally:
        await store.close()


_db_counter = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh database on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'botsession.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"test_{os.getpid()}_{next(_db_counter)}"
    server.psql(f"CREATE DATABASE {name}")
    return server.url().rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
async def sql_store(database_url: str) -> AsyncIterator[SqlStore]:
    store = SqlStore(create_engine(database_url), budget=TEST_BUDGET)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


def make_state(
    bot: str = "bot-1",
    user: str = "user-1",
    phase: Phase = Phase.ACTIVE,
    revision: int = 1,
    last_seen: datetime | None = None,
    ttl: timedelta = timedelta(hours=24),
    reason: Reason | None = None,
    identity: Identity | None = None,
) -> SessionState:
    seen = last_seen or utcnow().replace(microsecond=0)
    return SessionState(
        key=SessionKey(bot, user),
        phase=phase,
        revision=revision,
        reason=reason,
        last_seen=seen,
        expires_at=seen + ttl,
        created_at=seen,
        identity=identity or Identity("1234567890", "User Name", "session_123"),
    )


@pytest.fixture
def namespace(controlplane: ControlPlane) -> str:
    """A fresh namespace per test (never deleted: there is no namespace controller)."""
    name = f"t{next(_db_counter)}-{os.getpid()}"
    kubectl(controlplane.kubeconfig, "create", "namespace", name)
    return name


@pytest.fixture
async def kube_client(controlplane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_kubeconfig(controlplane.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def kube_botsessions(
    kube_client: KubeClient, namespace: str
) -> AsyncIterator[KubeBotSessions]:
    """As the runtime wires them: with the index of the custom-named ones."""
    aliases = BotSessionIndex(kube_client, namespace, label_selector=CUSTOM_NAMED)
    task = asyncio.create_task(aliases.run())
    await asyncio.wait_for(aliases.filled.wait(), 10)
    try:
        yield KubeBotSessions(kube_client, namespace, aliases=aliases.name_of)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 20, interval: float = 0.2
) -> Awaitable[T]:
    """Await check() until it returns a truthy value (returned) or the timeout passes."""

    async def poll() -> T:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await check()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not true after {timeout} s: last value {value!r}")
            await asyncio.sleep(interval)

    return poll()


@dataclass
class OperatorEnv:
    """A running operator (a real subprocess) with its namespace and stores."""

    namespace: str
    operator: OperatorProcess
    redis: RedisStore
    sql: SqlStore
    botsessions: KubeBotSessions
    database_url: str


@pytest.fixture
async def operator_env(
    controlplane: ControlPlane,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
    kube_botsessions: KubeBotSessions,
) -> AsyncIterator[OperatorEnv]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'operator.sqlite3'}"
    redis = RedisStore(
        connect(redis_server.url, retries=1, timeout=timedelta(seconds=2)), budget=TEST_BUDGET
    )
    await redis.client.flushall()
    operator = OperatorProcess(
        controlplane.kubeconfig,
        namespace,
        {
            "BOTSESSION_REDIS_URL": redis_server.url,
            "BOTSESSION_DATABASE_URL": database_url,
            "BOTSESSION_REDIS_RETRIES": "1",
            "BOTSESSION_METRICS_PORT": "0",
        },
    )
    sql = SqlStore(create_engine(database_url), budget=TEST_BUDGET)
    with operator:
        try:
            yield OperatorEnv(namespace, operator, redis, sql, kube_botsessions, database_url)
        finally:
            await redis.close()
            await sql.close()
