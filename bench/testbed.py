"""What the benchmarks run against, shared by them (imported, never run).

- The servers, started on free loopback ports through devstack/ and stopped at the end:
  `servers()` (etcd + kube-apiserver with the CRD, redis-server, PostgreSQL) for the
  operator's benchmarks; `stack()` (the same, or SQLite instead of PostgreSQL, plus the
  namespace `bench`, the migrated database and a tokens file with one token) for the API's.
- The BotSessions: their names (`keys_for`), listing them as the API server sends them
  (`list_raw`), status patches, and what Redis and the database hold of them (`Stores`).
- kopf's floor: bench/empty_operator.py under `kopf run --standalone` (`EmptyOperator`).
- The API's calls that seed sessions and check them (`seed`, `sanity`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.measure import REPO, bounded, log, pid_of
from devstack.controlplane import ControlPlane
from devstack.kubectl import install_crds, kubectl
from devstack.postgres_server import PostgresServer
from devstack.process import ManagedProcess, wait_until
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.client import CustomObjects, KubeClient
from sessions.adapters.kubernetes.crd import GROUP, PLURAL, VERSION
from sessions.adapters.redis.store import RedisStore, hash_key
from sessions.adapters.sql.migrate import upgrade
from sessions.adapters.sql.store import create_engine
from sessions.domain.model import Identity, SessionKey, format_time

EMPTY_OPERATOR = Path(__file__).resolve().parent / "empty_operator.py"
CRDS = REPO / "crds" / "botsessions.yaml"
NAMESPACE, FLOOR_NAMESPACE = "bench", "floor"
BOTS = 100
IDENTITY = Identity("4915112345678", "Bench User", "session_bench")
V1 = "/v1/whatsapp"


def keys_for(count: int, start: int = 0) -> list[SessionKey]:
    return [SessionKey(f"bench-bot-{i % BOTS:03d}", f"u{i:06d}") for i in range(start, count)]


# --- the servers ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[tuple[ControlPlane, RedisServer, PostgresServer]]:
    with contextlib.ExitStack() as stack:
        log("starting etcd + kube-apiserver, redis-server, PostgreSQL")
        plane = stack.enter_context(ControlPlane())
        redis_server = stack.enter_context(RedisServer())
        postgres = stack.enter_context(PostgresServer())
        install_crds(plane.kubeconfig, CRDS)
        yield plane, redis_server, postgres


@dataclass
class Stack:
    """The API benchmarks' servers, database and token."""

    plane: ControlPlane
    redis: RedisServer
    postgres: PostgresServer | None
    database_url: str
    workdir: Path
    token: str
    tokens_file: Path

    def roots(self) -> dict[str, int]:
        out = {
            "kube-apiserver": pid_of(self.plane.apiserver),
            "etcd": pid_of(self.plane.etcd),
            "redis": pid_of(self.redis),
        }
        if self.postgres is not None:
            out["postgres"] = pid_of(self.postgres)
        return out

    def env(self, log_level: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSESSION_")}
        return {
            **env,
            "KUBECONFIG": str(self.plane.kubeconfig),
            "BOTSESSION_NAMESPACE": NAMESPACE,
            "BOTSESSION_REDIS_URL": self.redis.url,
            "BOTSESSION_DATABASE_URL": self.database_url,
            "BOTSESSION_API_TOKENS_FILE": str(self.tokens_file),
            "BOTSESSION_API_LOG_LEVEL": log_level,
            "BOTSESSION_METRICS_PORT": "0",
            "BOTSESSION_CONNECT_TIMEOUT": "30m",  # no session times out during the run
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
        }


def write_tokens(workdir: Path) -> tuple[str, Path]:
    """One token with the read and report scopes and no rate limit, in a tokens file."""
    token = secrets.token_urlsafe(32)
    tokens_file = workdir / "tokens.json"
    tokens_file.write_text(
        json.dumps(
            [
                {
                    "name": "bench",
                    "token": token,
                    "scopes": ["read", "report"],
                    "rateLimit": "off",
                }
            ]
        )
    )
    tokens_file.chmod(0o600)
    return token, tokens_file


@contextlib.asynccontextmanager
async def stack(args: argparse.Namespace) -> AsyncIterator[Stack]:
    """The servers (`args.database`: postgresql or sqlite), the namespace, the migrated
    database and the token."""
    workdir = Path(tempfile.mkdtemp(prefix="botsession-api-bench-"))
    with contextlib.ExitStack() as exits:
        exits.callback(shutil.rmtree, workdir, True)
        log(f"starting etcd + kube-apiserver, redis-server, {args.database}")
        plane = exits.enter_context(ControlPlane())
        redis_server = exits.enter_context(RedisServer())
        postgres: PostgresServer | None = None
        if args.database == "postgresql":
            postgres = exits.enter_context(PostgresServer())
            database_url = postgres.url("asyncpg")
        else:
            database_url = f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}"
        install_crds(plane.kubeconfig, CRDS)
        kubectl(plane.kubeconfig, "create", "namespace", NAMESPACE)
        engine = create_engine(database_url)
        try:
            await upgrade(engine)  # once, here: the API must not race itself with --workers
        finally:
            await engine.dispose()
        token, tokens_file = write_tokens(workdir)
        yield Stack(plane, redis_server, postgres, database_url, workdir, token, tokens_file)


# --- the BotSessions -----------------------------------------------------------------------


def botsessions_in(client: KubeClient, namespace: str) -> CustomObjects:
    return CustomObjects(client, GROUP, VERSION, namespace, PLURAL)


async def list_raw(client: KubeClient, namespace: str) -> tuple[list[dict[str, Any]], str]:
    """Every BotSession of the namespace as the API server sends it, and the list's
    resourceVersion."""
    items: list[dict[str, Any]] = []
    query: dict[str, Any] = {"limit": 500}
    while True:
        page = await botsessions_in(client, namespace).list(**query)
        items.extend(page.get("items", []))
        token = page.get("metadata", {}).get("continue")
        if not token:
            return items, page["metadata"]["resourceVersion"]
        query["_continue"] = token


async def patch_status(
    client: KubeClient, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """A merge patch of a BotSession's status (as KubeBotSessions sends them)."""
    await botsessions_in(client, namespace).patch_status(
        name, {"status": status}, "application/merge-patch+json"
    )


def active_status(sample: dict[str, Any]) -> dict[str, Any]:
    """The status of a real connected BotSession, to give the floor's objects the same size."""
    status = dict(sample.get("status") or {})
    status.pop("lastSeen", None)
    return status


def connected_patches(status: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two status patches that give a bare BotSession `status` (from active_status), as
    the CRD's rules want: first phase connecting, then the rest, lastSeen now."""
    now = format_time(datetime.now(UTC).replace(microsecond=0))
    first = {"phase": "connecting", "reason": "Created", "revision": 1}
    return first, {**status, "lastSeen": now}


def handled_by_floor(item: dict[str, Any]) -> bool:
    annotations = item["metadata"].get("annotations") or {}
    return "floor.kopf.dev/last-handled-configuration" in annotations


@dataclass
class Stores:
    """What Redis and the database hold of the sessions."""

    redis: RedisStore
    engine: AsyncEngine

    async def in_redis(self, keys: Sequence[SessionKey]) -> int:
        pipe = self.redis.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(hash_key(key))
        return sum(await pipe.execute())

    async def rows(self, revision: int) -> int:
        async with self.engine.connect() as c:
            query = sa.text("SELECT count(*) FROM sessions WHERE revision >= :r")
            return int((await c.execute(query, {"r": revision})).scalar_one())


# --- kopf's floor --------------------------------------------------------------------------


class EmptyOperator(ManagedProcess):
    """bench/empty_operator.py under `kopf run --standalone`."""

    name = "empty-operator"

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        super().__init__()
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def start(self) -> Self:
        kopf = str(Path(sys.executable).parent / "kopf")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        self._spawn(
            [kopf, "run", "--standalone", "--namespace", self.namespace, str(EMPTY_OPERATOR)],
            env=env,
        )
        wait_until(
            lambda: "Initial authentication has finished" in self.output(),
            60,
            "the empty operator",
            self.proc,
            self.log_path,
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- the API's calls -----------------------------------------------------------------------


def identity(i: int) -> dict[str, str]:
    return {
        "phoneNumber": f"4915{i:09d}",
        "displayName": f"Bench User {i:06d}",
        "sessionId": f"session_{i:06d}",
    }


def report_path(key: SessionKey) -> str:
    return f"{V1}/sessions/{key.bot_id}/{key.user_id}/report"


def status_path(key: SessionKey) -> str:
    return f"{V1}/session-status/{key.bot_id}?userId={key.user_id}"


def heartbeat_path(key: SessionKey) -> str:
    return f"{V1}/sessions/{key.bot_id}/{key.user_id}/heartbeat"


def client_for(url: str, token: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(120),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def seed(url: str, token: str, keys: Sequence[SessionKey], concurrency: int) -> float:
    """Report every key connected (with an identity) through the API; the seconds it took."""
    async with client_for(url, token, concurrency) as client:

        async def connect(item: tuple[int, SessionKey]) -> None:
            i, key = item
            body = {"state": "connected", **identity(i)}
            answer = await client.post(report_path(key), json=body)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"seeding {key}: {answer.status_code} {answer.text}")

        return await bounded(list(enumerate(keys)), connect, concurrency)


async def sanity(url: str, token: str, key: SessionKey) -> dict[str, Any]:
    """What the measured requests get: a real session from Redis, a heartbeat that works."""
    async with client_for(url, token, 2) as client:
        status = await client.get(status_path(key))
        beat = await client.post(heartbeat_path(key))
    checks = {
        "status_code": status.status_code,
        "source": status.headers.get("X-Session-Source"),
        "body": status.json(),
        "body_bytes": len(status.content),
        "heartbeat_code": beat.status_code,
    }
    if status.status_code != 200 or checks["source"] != "redis" or beat.status_code != 200:
        raise RuntimeError(f"the seeded sessions do not answer as expected: {checks}")
    return checks
