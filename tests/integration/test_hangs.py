"""Stores that hang instead of dying: a SIGSTOPped redis-server and a SIGSTOPped PostgreSQL
keep their connections open and answer nothing. Under steady load the API must still answer
every request within its time budgets (session-status from the other store, reports with
the hung store pending, heartbeats 503 with Retry-After), skip the hung store after the
first timeout, and use it again once it answers. The figures for a 30 s hang are in
docs/benchmarks.md (bench/hang_benchmark.py); here the bound is loose, for a loaded CI
machine, but far below what a hang cost before (the whole freeze)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from devstack.controlplane import ControlPlane
from devstack.postgres_server import PostgresServer
from devstack.redis_server import RedisServer
from sessions.domain.model import SessionKey
from sessions.usecases.healing import Healed, audit
from tests.conftest import eventually
from tests.integration.test_api import API_SETTINGS, BOT, IDENTITY, USER, V1, Api, auth, serve

pytestmark = pytest.mark.integration

BOUND = 3.0  # seconds: every answer during a hang (targets: 1.5 s and 1 s, measured in bench/)
HANG = 6.0  # seconds the store is stopped for
# the load is 12 clients back to back on one token each kind: far above the default per-token
# rate limit (500/s) whenever answers are fast, and 429s are not what these tests are about
UNLIMITED = API_SETTINGS.model_copy(update={"rate_limit": 1_000_000.0})


@dataclass
class Answers:
    seen: dict[str, list[tuple[int, float, httpx.Response]]] = field(default_factory=dict)

    def add(self, kind: str, response: httpx.Response, seconds: float) -> None:
        self.seen.setdefault(kind, []).append((response.status_code, seconds, response))

    def slowest(self, kind: str) -> float:
        return max(seconds for _status, seconds, _response in self.seen[kind])

    def statuses(self, kind: str) -> set[int]:
        return {status for status, _seconds, _response in self.seen[kind]}


async def load(
    answers: Answers, kind: str, send: Callable[[int], Awaitable[httpx.Response]], until: float
) -> None:
    """One client sending `kind` requests back to back until the deadline."""
    n = 0
    while time.monotonic() < until:
        started = time.monotonic()
        response = await send(n)
        answers.add(kind, response, time.monotonic() - started)
        n += 1
        # a client on a real connection gives the event loop a turn between requests; in
        # process (httpx's ASGI transport) an answer that needs no I/O, such as a heartbeat's
        # 503 while Redis is skipped, would let this loop starve every other task
        await asyncio.sleep(0)


async def under_load(api: Api, seconds: float) -> Answers:
    answers = Answers()
    until = time.monotonic() + seconds

    def status(_n: int) -> Awaitable[httpx.Response]:
        return api.status(userId=USER)

    def report(n: int) -> Awaitable[httpx.Response]:
        return api.report("connecting", user=f"hang-{n}-{time.monotonic_ns()}")

    def heartbeat(_n: int) -> Awaitable[httpx.Response]:
        return api.client.post(f"{V1}/sessions/{BOT}/{USER}/heartbeat", headers=auth("reporter"))

    await asyncio.gather(
        *(load(answers, "status", status, until) for _ in range(8)),
        *(load(answers, "report", report, until) for _ in range(2)),
        *(load(answers, "heartbeat", heartbeat, until) for _ in range(2)),
    )
    return answers


async def test_a_hung_redis_costs_each_request_at_most_its_budget(
    controlplane: ControlPlane, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('hang') / 'db.sqlite3'}"
    with RedisServer() as redis:
        async with serve(
            controlplane.kubeconfig, namespace, redis.url, database_url, api_settings=UNLIMITED
        ) as api:
            assert (await api.report("connected", **IDENTITY)).status_code == 201
            with redis.frozen():
                answers = await under_load(api, HANG)
            assert answers.statuses("status") == {200}
            sources = {r.headers["X-Session-Source"] for _s, _t, r in answers.seen["status"]}
            assert sources == {"database"}
            assert answers.statuses("report") == {201}
            assert all(r.json()["redisPending"] for _s, _t, r in answers.seen["report"])
            assert answers.statuses("heartbeat") == {503}
            assert {r.headers["Retry-After"] for _s, _t, r in answers.seen["heartbeat"]} == {"1"}
            for kind in ("status", "report", "heartbeat"):
                assert answers.slowest(kind) < BOUND, (kind, answers.slowest(kind))
            # the first request waited for the budget; the guard skipped Redis for the rest
            assert len(answers.seen["status"]) > 8 * HANG  # far more than one per budget
            metrics = (await api.client.get("/metrics", headers=auth("reader"))).text
            assert 'botsession_api_store_timeouts_total{store="redis"}' in metrics
            # once Redis answers again the probe lets requests use it, and the reports made
            # during the hang are healed into it (the operator's audit, run here directly)
            await eventually(lambda: _answered_by(api, "redis"), timeout=10)
            pending = [
                SessionKey(BOT, r.json()["session"]["userId"])
                for _s, _t, r in answers.seen["report"]
            ]
            assert await api.runtime.redis.get(pending[0]) is None
            healed = await _audit_bot(api)
            assert healed.redis >= len(pending)
            assert await api.runtime.redis.get(pending[0]) is not None


async def test_a_hung_database_costs_each_request_at_most_its_budget(
    controlplane: ControlPlane, namespace: str
) -> None:
    with PostgresServer() as postgres, RedisServer() as redis:
        async with serve(
            controlplane.kubeconfig, namespace, redis.url, postgres.url(), api_settings=UNLIMITED
        ) as api:
            assert (await api.report("connected", **IDENTITY)).status_code == 201
            with postgres.frozen():
                answers = await under_load(api, HANG)
            assert answers.statuses("status") == {200}
            sources = {r.headers["X-Session-Source"] for _s, _t, r in answers.seen["status"]}
            assert sources == {"redis"}
            assert answers.statuses("report") == {201}
            written = [
                r.json() for _s, _t, r in answers.seen["report"] if not r.json()["databasePending"]
            ]
            assert written == []
            assert all(not r.json()["redisPending"] for _s, _t, r in answers.seen["report"])
            assert answers.statuses("heartbeat") == {200}
            for kind in ("status", "report", "heartbeat"):
                assert answers.slowest(kind) < BOUND, (kind, answers.slowest(kind))
            metrics = (await api.client.get("/metrics", headers=auth("reader"))).text
            assert 'botsession_api_store_timeouts_total{store="database"}' in metrics
            # afterwards the database is used again, and healed from the BotSessions
            await eventually(lambda: _database_answers(api), timeout=15)
            healed = await _audit_bot(api)
            assert healed.database >= len(answers.seen["report"])


async def _audit_bot(api: Api) -> Healed:
    """The operator's audit, run here directly on the bot's BotSessions."""
    runtime = api.runtime
    records = [r for r in await runtime.botsessions.list_bot(BOT) if r.phase]
    ttl = runtime.settings.session_ttl
    return await audit(runtime.botsessions, runtime.redis, runtime.sql, records, ttl)


async def _answered_by(api: Api, source: str) -> bool:
    response = await api.status(userId=USER)
    return response.status_code == 200 and response.headers["X-Session-Source"] == source


async def _database_answers(api: Api) -> bool:
    return not api.runtime.sql.guard.is_open and await api.runtime.sql.ping()
