"""One operator holding N BotSessions (default 100,000): what the servers keep, the operator's
start, restart, heartbeats and sweep at that size, against kopf's floor.

  .venv/bin/python -m bench.scale_benchmark --sessions 100000 --json /tmp/scale.json
  .venv/bin/python -m bench.scale_benchmark --sessions 2000 --idle-seconds 10 \\
      --heartbeat-minutes 1                                           # quick check

Everything is real and started here (stopped at the end), through the same bench/testbed.py
as bench/operator_benchmark.py and bench/restart_benchmark.py: etcd + kube-apiserver
(devstack.controlplane), a private redis-server and PostgreSQL, and the operator as a
subprocess (devstack.operator_process.OperatorProcess, `python -m controller`, the database
PostgreSQL, BOTSESSION_METRICS_PORT a free port, BOTSESSION_CONNECT_TIMEOUT 2h so that the one
session left `connecting` does not time out during the run, every other setting its default).
It reuses operator_benchmark's namespace watch and heartbeat loop and restart_benchmark's
spawn, stop and "all resumed" waits.

0. creation, once, no operator running: N BotSessions (namespace `bench`) created already in
   step, at the API server's pace with `--concurrency` requests in flight. Each is the POST
   the API makes (manifest with created_by="api" and the operator's finalizer) and two status
   PATCHes: the API's first compare-and-swap (`connecting`, Created) and one that carries its
   second (`active`, Connected) together with what the operator's sync writes afterwards
   (conditions, observedGeneration, syncedRevision == revision): the object a report
   `connected` and the operator's sync leave behind, in 3 requests instead of 5. Each session
   is then written to Redis (RedisStore.write) and PostgreSQL (SqlStore.write, with its two
   history rows), per chunk of 1,000, overlapping the next chunk's requests.
1. footprint: kube-apiserver's and etcd's VmRSS, etcd's db size (its metrics
   etcd_mvcc_db_total_size_in_bytes and ..._in_use_in_bytes, and the db file), Redis's
   used_memory, the database's size; one BotSession as GET returns it, in bytes with and
   without metadata.managedFields, and its managedFields entries.
2. first start: the operator spawned; seconds until its botsession_handled_objects_total
   (restart_benchmark.RESUMED_METRICS) reaches N; the BotSession writes a namespace watch saw
   meanwhile (none expected: every object is in step); then, once its CPU is quiet, its RSS
   and CPU over `--idle-seconds` (targets: RSS <= 1 GB, CPU < 5 % of one core).
3. restart: SIGTERM, a fresh process; at its spawn one new BotSession reported `connecting`
   through SessionService.report (the API's path, restart_benchmark.new_botsession). From the
   spawn: seconds until the new one is synced (target <= 10 s) and until all N + 1 are
   handled (the metric); peak RSS and CPU until then, RSS and CPU over `--steady-seconds`
   after; old BotSessions written over the restart (the watch).
4. heartbeats: every session heartbeats every `--heartbeat-period` (30) s for
   `--heartbeat-minutes`, spread evenly (a tick of 0.1 s), in-process: the Lua script
   RedisStore.heartbeat runs, one pipeline per tick (with `--heartbeat-calls`, one
   SessionService.heartbeat call each: operator_benchmark.drive_heartbeats). The rate
   achieved is reported. The watch counts BotSession writes (lastSeen copies apart from any
   other), expected at the budget BOTSESSION_LAST_SEEN_WRITES_PER_SECOND (20/s) whatever N;
   each heartbeat sets the session's heartbeat deadline, 2 h ahead (DEADLINE_MS) so that
   none is lost while the run lasts; the copies begin one drift (60 s) after the first
   heartbeats, so the same is measured over `--after-seconds` after the heartbeats stop,
   while the backlog drains. CPU of the operator, Redis, kube-apiserver, etcd, PostgreSQL
   and this process.
5. sweep (`--skip-sweep` leaves it out): `--due` (10 %) of the sessions made due in Redis as
   bench/sweep_benchmark.py represents an expired session: lastSeen more than a TTL ago,
   expiresAt and the expiry index's score an hour ago (the native key expiry left in the
   future, or Redis would drop the keys itself). The sweep is triggered by deleting the
   operator's mark of its last sweep (<prefix>sweep:last): its housekeeping loop then sweeps
   within one tick (5 s), as on a first start. From the trigger: seconds until nothing due is
   left in the index, until every due BotSession is `inactive` (Expired) and until every one
   is synced (the watch), and the operator's own sweep duration (its histogram); CPU.
6. floor (`--skip-floor` leaves it out): the real operator stopped, kopf with empty handlers
   (bench/empty_operator.py, `kopf run --standalone`) on the same objects: seconds until it
   handled all (a "Creation is processed" log line each; it adds its finalizer and its
   last-handled-configuration annotation), then SIGTERM and a restart: seconds until all are
   resumed ("Resuming is processed" lines), then its RSS and CPU over the same idle window.

CPU is utime + stime from /proc (bench.measure: Meter for the operator's or the floor's
process, with VmRSS sampled every 0.5 s and VmHWM; CpuMeter for the process trees of the
servers, this process, the machine and everything else), as % of one core over a window.
`--json PATH` writes every figure with the machine's facts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Self

import httpx
import sqlalchemy as sa

from bench.measure import (
    CpuMark,
    CpuMeter,
    Mark,
    Meter,
    Window,
    benchmark_main,
    bounded,
    fmt,
    git,
    keep_log,
    loadavg,
    log,
    memory_kb,
    others_busy,
    pid_of,
    ratio,
    versions,
    wait_for,
)
from bench.operator_benchmark import Heartbeats, WriteCounts, WriteWatch, drive_heartbeats
from bench.restart_benchmark import (
    NEW_BOT,
    RESUMED_METRICS,
    Bench,
    Restart,
    in_sync,
    new_botsession,
    real_contender,
    resumed_logged,
    resumed_metric,
    spawn,
    stop,
    until_up,
)
from bench.testbed import (
    IDENTITY,
    NAMESPACE,
    EmptyOperator,
    Stores,
    botsessions_in,
    keys_for,
    servers,
)
from devstack.controlplane import ControlPlane
from devstack.kubectl import kubectl
from devstack.postgres_server import PostgresServer
from devstack.process import ManagedProcess
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.botsessions import (
    KubeBotSessions,
    manifest,
    phase_patch,
    record_of,
    resource_name,
    sync_status_patch,
)
from sessions.adapters.kubernetes.client import (
    ApiError,
    Connection,
    KubeClient,
    load_kubeconfig,
)
from sessions.adapters.kubernetes.crd import FINALIZER, GROUP, PLURAL, VERSION
from sessions.adapters.redis.store import RedisKeys, RedisStore, connect, member_of
from sessions.adapters.sql.migrate import upgrade
from sessions.adapters.sql.store import SqlStore, create_engine
from sessions.domain.model import (
    HistoryEntry,
    Phase,
    Reason,
    SessionKey,
    SessionState,
    format_time,
    to_millis,
    utcnow,
)
from sessions.domain.settings import load_settings
from sessions.usecases.reconcile import conditions
from sessions.usecases.service import SessionService

# the targets
TARGET_RSS_MB = 1024.0
TARGET_IDLE_CPU_PCT = 5.0
TARGET_NEW_SYNCED_S = 10.0
LAST_SEEN_BUDGET = 20.0  # BOTSESSION_LAST_SEEN_WRITES_PER_SECOND's default

CHUNK = 1_000  # sessions created per round (then written to Redis and the database)
REDIS_BATCH = 100  # RedisStore.write calls at once (its pool holds 100 connections)
SQL_CONCURRENCY = 8  # SqlStore.write calls at once (the engine's pool holds 10 + 10)
TICK = 0.1  # seconds between two rounds of heartbeats
DEADLINE_MS = 2 * 3600 * 1000  # each heartbeat's heartbeat deadline: not lost during the run
WATCH_LIST_TIMEOUT = 900.0  # seconds for the watch's first LIST of every BotSession
ACTOR = "api"  # the actor a report's transitions carry
HANDLED = "botsession_handled_objects_total"
SWEEPS = "botsession_sweep_duration_seconds_count"
SWEEP_SECONDS = "botsession_sweep_duration_seconds_sum"
SWEPT_EXPIRED = 'botsession_sweep_removed_total{why="expired"}'
COPIED = "botsession_last_seen_copied_total"
UNSYNCED = "botsession_last_seen_unsynced"

Item = dict[str, Any]


# --- what is measured --------------------------------------------------------------------


@dataclass
class Cost:
    """One stretch of time: the operator's (or the floor's) process, and the CPU (% of one
    core) of every process tree, this benchmark, everything else and the machine."""

    window: Window
    cpu_pct: dict[str, float]


class Costs:
    """A Meter of the process under test and a CpuMeter of it and the servers."""

    def __init__(self, process: ManagedProcess, servers: dict[str, int]) -> None:
        pid = pid_of(process)
        self.meter = Meter(pid, {}).start()
        self.cpus = CpuMeter({"operator": pid, **servers})

    def begin(self, name: str) -> tuple[Mark, CpuMark]:
        return self.meter.begin(name), self.cpus.begin()

    def end(self, marks: tuple[Mark, CpuMark]) -> Cost:
        return Cost(self.meter.end(marks[0]), self.cpus.end(marks[1]))

    async def stop(self) -> None:
        await self.meter.stop()


@dataclass
class Creation:
    sessions: int
    seconds: float  # the first POST until the last session is in Redis and the database
    requests: int  # API-server requests (3 per session, plus retries' extra reads)
    stores_wait_s: float  # Redis and database writes left once the last object stood
    per_second: float
    per_1000_s: float
    cpu_pct: dict[str, float] = field(default_factory=dict)


@dataclass
class Footprint:
    apiserver_rss_mb: float
    etcd_rss_mb: float
    etcd_db_mb: float | None  # etcd_mvcc_db_total_size_in_bytes
    etcd_db_in_use_mb: float | None  # etcd_mvcc_db_total_size_in_use_in_bytes
    etcd_db_file_mb: float | None  # member/snap/db
    object_bytes: int  # one BotSession as GET returns it
    object_bytes_compact: int  # the same re-encoded without whitespace
    object_bytes_without_managed_fields: int  # ... and without metadata.managedFields
    managed_fields_entries: int
    managed_fields: list[str]  # manager (operation, subresource) of each entry
    redis_used_memory_mb: float
    database_mb: float
    sample: str  # the BotSession measured


@dataclass
class FirstStart:
    handled_s: float | None = None  # from the spawn until the metric reached N
    metrics_up_s: float | None = None
    start: Cost | None = None  # from the spawn until then
    quiet_cpu_pct: float | None = None  # the last 5 s of waiting for a quiet CPU
    idle: Cost | None = None
    writes: WriteCounts | None = None  # BotSession writes from the spawn until idle
    idle_writes: WriteCounts | None = None


@dataclass
class RestartRun:
    restart: Restart
    new_name: str = ""
    old_written: int = 0  # old BotSessions with a MODIFIED event over the restart
    writes: WriteCounts | None = None
    start: Cost | None = None  # from the spawn until all resumed and the new one synced
    steady: Cost | None = None


@dataclass
class HeartbeatRun:
    mode: str
    beats: Heartbeats
    target_per_second: float
    achieved_per_second: float
    during: Cost
    writes: WriteCounts
    copies_per_second: float  # lastSeen copies over the whole heartbeat window
    copies_per_second_after_drift: float | None  # from the first drift (60 s) on
    after: Cost | None = None
    after_writes: WriteCounts | None = None
    copies_per_second_after: float | None = None
    copied_metric: float | None = None  # botsession_last_seen_copied_total, both windows
    unsynced_end: float | None = None  # botsession_last_seen_unsynced at the end


@dataclass
class SweepRun:
    due: int
    prepare_s: float
    redis_s: float | None = None  # trigger -> nothing due left in the expiry index
    inactive_s: float | None = None  # trigger -> every due BotSession inactive
    synced_s: float | None = None  # trigger -> ... and synced
    sweep_metric_s: float | None = None  # trigger -> the operator's sweep histogram counted it
    operator_sweep_s: float | None = None  # the histogram's sum: the sweep run's own duration
    swept_expired: float | None = None  # botsession_sweep_removed_total{why="expired"}
    inactive: int = 0
    cost: Cost | None = None
    writes: WriteCounts | None = None


@dataclass
class FloorRun:
    sessions: int
    handled_s: float | None = None  # spawn -> every "Creation is processed" line
    handled_lines: int = 0
    start: Cost | None = None
    stop_s: float = 0.0
    stop_code: int | None = None
    resumed_s: float | None = None  # restart's spawn -> every "Resuming is processed" line
    resumed_lines: int = 0
    restart: Cost | None = None
    idle: Cost | None = None


# --- the namespace watch -----------------------------------------------------------------


class PhaseWatch(WriteWatch):
    """operator_benchmark's WriteWatch, plus which BotSessions turned inactive (and synced)
    since it started and which were written (MODIFIED) in the current phase. Its first LIST
    may take long at this size."""

    def __init__(self, config: Connection, namespace: str) -> None:
        super().__init__(config, namespace)
        self.inactive: set[str] = set()
        self.inactive_synced: set[str] = set()
        self.written: set[str] = set()

    def mark(self, phase: str) -> None:
        super().mark(phase)
        self.written = set()

    def observe(self, kind: str, obj: dict[str, Any]) -> None:
        super().observe(kind, obj)
        name = obj["metadata"]["name"]
        if kind == "MODIFIED":
            self.written.add(name)
        inactive = kind != "DELETED" and (obj.get("status") or {}).get("phase") == "inactive"
        for names, member in (
            (self.inactive, inactive),
            (self.inactive_synced, inactive and in_sync(obj)),
        ):
            if member:
                names.add(name)
            else:
                names.discard(name)

    async def start(self) -> Self:
        self.task = asyncio.create_task(self.run())
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait(
            {self.task, ready}, timeout=WATCH_LIST_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if not ready.done():
            ready.cancel()
            if self.task.done():
                await self.task  # raises why the watch ended
            raise TimeoutError(f"the watch's first LIST took over {WATCH_LIST_TIMEOUT:.0f} s")
        return self


# --- small helpers -----------------------------------------------------------------------


def mb(value: float) -> float:
    return round(value / 1024**2, 1)


async def metrics_of(url: str) -> dict[str, float]:
    """Every sample of a Prometheus text page: name{labels} -> value ({} when it does not
    answer)."""
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(url)).text
    except httpx.HTTPError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


def copies_per_second(writes: WriteCounts, skip_minutes: int = 0) -> float | None:
    """lastSeen copies per second over the phase's whole minutes after the first `skip`."""
    minutes = writes.per_minute[skip_minutes:]
    return round(sum(minutes) / (60 * len(minutes)), 1) if minutes else None


def per_second(writes: WriteCounts) -> float:
    return round(writes.last_seen / writes.seconds, 1) if writes.seconds else 0.0


@contextlib.asynccontextmanager
async def scale_bench(
    args: argparse.Namespace, plane: ControlPlane, redis: RedisServer, postgres: PostgresServer
) -> AsyncIterator[Bench]:
    """The namespace, the clients, the stores and the API's SessionService (created BotSessions
    get the operator's finalizer, as in the API), closed at the end. The stores' budgets are
    long: at this size the benchmark itself keeps the servers busy."""
    kubectl(plane.kubeconfig, "create", "namespace", NAMESPACE)
    database_url = postgres.url("asyncpg")
    settings = load_settings(namespace=NAMESPACE, database_url=database_url, redis_url=redis.url)
    budget = timedelta(seconds=30)
    async with contextlib.AsyncExitStack() as stack:
        client = KubeClient(load_kubeconfig(plane.kubeconfig), timeout=60)
        stack.push_async_callback(client.close)
        store = RedisStore(
            connect(redis.url, retries=2, timeout=timedelta(seconds=10)), budget=budget
        )
        stack.push_async_callback(store.close)
        sql = SqlStore(create_engine(database_url, budget), budget=budget)
        stack.push_async_callback(sql.close)
        await upgrade(sql.engine)
        botsessions = KubeBotSessions(client, NAMESPACE, creator="api", finalizer=FINALIZER)
        others = {
            "kube-apiserver": pid_of(plane.apiserver),
            "etcd": pid_of(plane.etcd),
            "redis": pid_of(redis),
            "postgres": pid_of(postgres),
        }
        env = {
            "BOTSESSION_REDIS_URL": redis.url,
            "BOTSESSION_DATABASE_URL": database_url,
            "BOTSESSION_CONNECT_TIMEOUT": "2h",
        }
        service = SessionService(botsessions, store, sql, settings)
        yield Bench(args, plane, client, Stores(store, sql.engine), service, env, others)


# --- 0. creation -------------------------------------------------------------------------


Created = tuple[SessionState, list[HistoryEntry]]


async def create_in_step(bench: Bench, key: SessionKey, requests: list[int]) -> Created:
    """One BotSession as a report `connected` and the operator's sync leave it: POST, the first
    phase, then the second with the sync's fields. Safe to run again after a failure: it goes
    on from what the API server holds."""
    objects = botsessions_in(bench.client, NAMESPACE)
    ttl = bench.service.settings.session_ttl
    body = manifest(key, IDENTITY, NAMESPACE, created_by="api", finalizer=FINALIZER)
    try:
        record = record_of(await objects.create(body))
    except ApiError as exc:
        if exc.status != 409:
            raise
        record = record_of(await objects.get(body["metadata"]["name"]))
        requests[0] += 1
    requests[0] += 1
    now = bench.service.now()
    incarnation = record.incarnation or to_millis(utcnow())
    first = HistoryEntry(key, 1, None, Phase.CONNECTING, Reason.CREATED, ACTOR, now, incarnation)
    second = HistoryEntry(
        key, 2, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED, ACTOR, now, incarnation
    )
    expires = now + record.ttl(ttl)
    if record.phase is None:
        content_type, patch = phase_patch(record, first, now, expires)
        record = record_of(await objects.patch_status(record.name, patch, content_type))
        requests[0] += 1
    if record.revision == 1:
        content_type, ops = phase_patch(record, second, now, expires)
        synced = replace(
            record,
            phase=Phase.ACTIVE,
            reason=Reason.CONNECTED,
            revision=2,
            recent=(*record.recent, second),
        )
        fields = {
            "conditions": conditions(synced, [], now),
            "observedGeneration": record.generation,
            "syncedRevision": 2,
        }
        ops += sync_status_patch(synced, fields)
        record = record_of(await objects.patch_status(record.name, ops, content_type))
        requests[0] += 1
    if not (record.phase is Phase.ACTIVE and record.synced_revision == record.revision == 2):
        raise RuntimeError(f"{record.name} is not active and in step: {record}")
    return record.state(ttl), [first, second]


async def write_stores(bench: Bench, created: Sequence[Created]) -> None:
    """Redis (RedisStore.write, REDIS_BATCH at once) and the database (SqlStore.write with the
    history rows, SQL_CONCURRENCY at once), as the API writes them after a report. They are
    in step: what the operator's sync would have forgotten in Redis's sync-wanted set is."""
    store, sql = bench.stores.redis, bench.service.sql
    ttl = bench.service.settings.session_ttl
    for start in range(0, len(created), REDIS_BATCH):
        batch = created[start : start + REDIS_BATCH]
        await asyncio.gather(*(store.write(state, ttl) for state, _ in batch))
        await store.client.hdel(store.keys.sync_wanted, *(member_of(s.key) for s, _ in batch))

    async def row(item: Created) -> None:
        await sql.write(*item)

    await bounded(created, row, SQL_CONCURRENCY)


async def create_all(bench: Bench) -> Creation:
    n, concurrency = bench.args.sessions, bench.args.concurrency
    keys = keys_for(n)
    requests = [0]
    cpus = CpuMeter(bench.others)
    mark = cpus.begin()
    started = time.monotonic()
    writing: asyncio.Task[None] | None = None
    for start in range(0, n, CHUNK):
        chunk = keys[start : start + CHUNK]
        created: list[Created] = []

        async def one(key: SessionKey, into: list[Created] = created) -> None:
            into.append(await create_in_step(bench, key, requests))

        await bounded(chunk, one, concurrency)
        if writing is not None:
            await writing
        writing = asyncio.create_task(write_stores(bench, created))
        done, elapsed = start + len(chunk), time.monotonic() - started
        log(
            f"  created {done:,} / {n:,} in {elapsed:.0f} s ({done / elapsed:,.0f}/s, "
            f"{1000 * elapsed / done:.1f} s per 1,000)"
        )
    objects_done = time.monotonic()
    if writing is not None:
        await writing
    seconds = time.monotonic() - started
    in_redis = await bench.stores.redis.live_count()
    rows = await bench.stores.rows(2)
    if in_redis != n or rows != n:
        raise RuntimeError(f"{in_redis:,} sessions in Redis and {rows:,} rows, expected {n:,}")
    return Creation(
        n,
        round(seconds, 1),
        requests[0],
        round(time.monotonic() - objects_done, 1),
        round(n / seconds, 1),
        round(1000 * seconds / n, 1),
        cpus.end(mark),
    )


# --- 1. footprint ------------------------------------------------------------------------


async def etcd_sizes(plane: ControlPlane) -> dict[str, float]:
    values = await metrics_of(plane.etcd.url + "/metrics")
    return {
        name: values[name]
        for name in (
            "etcd_mvcc_db_total_size_in_bytes",
            "etcd_mvcc_db_total_size_in_use_in_bytes",
        )
        if name in values
    }


async def footprint(bench: Bench) -> Footprint:
    plane = bench.plane
    sizes = await etcd_sizes(plane)
    db_file = plane.workdir / "etcd-data" / "member" / "snap" / "db"
    name = resource_name(keys_for(bench.args.sessions)[bench.args.sessions // 2])
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{name}"
    raw = await asyncio.to_thread(plane.apiserver.get, path)
    obj = json.loads(raw)
    managed = obj["metadata"].get("managedFields") or []

    def compact(value: Item) -> int:
        return len(json.dumps(value, separators=(",", ":")).encode())

    with_fields = compact(obj)
    obj["metadata"].pop("managedFields", None)
    info = await bench.stores.redis.client.info("memory")
    async with bench.stores.engine.connect() as connection:
        query = sa.text("SELECT pg_database_size(current_database())")
        database = int((await connection.execute(query)).scalar_one())
    etcd_db = sizes.get("etcd_mvcc_db_total_size_in_bytes")
    in_use = sizes.get("etcd_mvcc_db_total_size_in_use_in_bytes")
    return Footprint(
        apiserver_rss_mb=round(memory_kb(pid_of(plane.apiserver))[0] / 1024, 1),
        etcd_rss_mb=round(memory_kb(pid_of(plane.etcd))[0] / 1024, 1),
        etcd_db_mb=None if etcd_db is None else mb(etcd_db),
        etcd_db_in_use_mb=None if in_use is None else mb(in_use),
        etcd_db_file_mb=mb(db_file.stat().st_size) if db_file.exists() else None,
        object_bytes=len(raw.encode()),
        object_bytes_compact=with_fields,
        object_bytes_without_managed_fields=compact(obj),
        managed_fields_entries=len(managed),
        managed_fields=[
            f"{m.get('manager')} ({m.get('operation')}"
            + (f", {m['subresource']})" if m.get("subresource") else ")")
            for m in managed
        ],
        redis_used_memory_mb=mb(int(info["used_memory"])),
        database_mb=mb(database),
        sample=name,
    )


# --- 2. and 3. the operator's start and restart ------------------------------------------


async def first_start(
    bench: Bench, process: ManagedProcess, url: str, watch: PhaseWatch
) -> FirstStart:
    n = bench.args.sessions
    out = FirstStart()
    watch.mark("first start")
    started, starting = await spawn(process)
    costs = Costs(process, bench.others)
    try:
        marks = costs.begin("first start")
        await starting
        handled = Restart()
        counts = dict.fromkeys(RESUMED_METRICS, n)
        await resumed_metric(url, counts, bench.args.timeout, started, handled)
        out.handled_s, out.metrics_up_s = handled.resumed_s, handled.metrics_up_s
        out.start = costs.end(marks)
        log(f"first start: all {n:,} handled after {out.handled_s} s; {out.start}")
        out.quiet_cpu_pct = round(await costs.meter.quiet(), 1)
        out.writes = watch.close_phase()
        watch.mark("idle")
        marks = costs.begin("idle")
        await asyncio.sleep(bench.args.idle_seconds)
        out.idle = costs.end(marks)
        out.idle_writes = watch.close_phase()
        log(f"idle: {out.idle}; writes {out.writes} / {out.idle_writes}")
    finally:
        await costs.stop()
    return out


async def restart(
    bench: Bench, old: ManagedProcess, process: ManagedProcess, url: str, watch: PhaseWatch
) -> tuple[RestartRun, Costs]:
    """SIGTERM, a fresh process and one new BotSession through the API at its spawn. Returns
    the process's Costs, still sampling (the caller stops it)."""
    n, args = bench.args.sessions, bench.args
    who = real_contender(bench)
    key = SessionKey(NEW_BOT, "new-api")
    out = RestartRun(Restart(), new_name=resource_name(key))
    watch.mark("restart")
    out.restart.stop_s, out.restart.stop_code = stop(old)
    log(f"SIGTERM: exited after {out.restart.stop_s} s ({out.restart.stop_code}); restarting")
    started, starting = await spawn(process)
    costs = Costs(process, bench.others)
    try:
        marks = costs.begin("restart")
        counts = dict(zip(RESUMED_METRICS, (n, n + 1), strict=True))
        async with asyncio.TaskGroup() as group:
            new = group.create_task(new_botsession(bench, who, key, who.creators["api"], started))
            group.create_task(resumed_metric(url, counts, args.timeout, started, out.restart))
            group.create_task(until_up(starting))
        out.restart.new_s = {"api": new.result()}
        out.start = costs.end(marks)
        out.restart.window = out.start.window
        out.writes = watch.close_phase()
        out.old_written = len(watch.written - {out.new_name})
        log(f"restart: {out.restart}; old objects written {out.old_written}")
        watch.mark("steady")
        marks = costs.begin("steady")
        await asyncio.sleep(args.steady_seconds)
        out.steady = costs.end(marks)
        out.restart.steady = out.steady.window
        log(f"steady: {out.steady}")
    except BaseException:
        await costs.stop()
        raise
    return out, costs


# --- 4. heartbeats -----------------------------------------------------------------------


async def pipelined_heartbeats(
    store: RedisStore, keys: Sequence[SessionKey], period: float, seconds: float
) -> Heartbeats:
    """Each key heartbeats once per `period`, spread evenly: per tick of TICK s one pipeline
    of the Lua script RedisStore.heartbeat runs (its registered script, its arguments)."""
    members = [member_of(key) for key in keys]
    random.Random(7).shuffle(members)
    per_tick = len(members) * TICK / period
    result = Heartbeats()
    loop = asyncio.get_running_loop()
    started, cursor = loop.time(), 0
    for step in range(int(seconds / TICK)):
        due = int((step + 1) * per_tick) - int(step * per_tick)
        now_ms = to_millis(utcnow().replace(microsecond=0))  # whole seconds, as now() gives
        async with store.client.pipeline(transaction=False) as pipe:
            for i in range(due):
                member = members[(cursor + i) % len(members)]
                await store._heartbeat(args=[member, now_ms, DEADLINE_MS, "1"], client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        cursor += due
        beats = sum(1 for reply in replies if isinstance(reply, list))
        result.sent += beats
        result.failed += len(replies) - beats
        next_at = started + (step + 1) * TICK
        if loop.time() > next_at:
            result.late_ticks += 1
        else:
            await asyncio.sleep(next_at - loop.time())
    result.seconds = round(loop.time() - started, 1)
    return result


async def heartbeats(bench: Bench, costs: Costs, url: str, watch: PhaseWatch) -> HeartbeatRun:
    args = bench.args
    keys = keys_for(args.sessions)
    seconds = args.heartbeat_minutes * 60
    copied_before = (await metrics_of(url)).get(COPIED)
    watch.mark("heartbeats")
    marks = costs.begin("heartbeats")
    if args.heartbeat_calls:
        beats = await drive_heartbeats(bench.service, keys, args.heartbeat_period, seconds)
    else:
        beats = await pipelined_heartbeats(bench.stores.redis, keys, args.heartbeat_period, seconds)
    during = costs.end(marks)
    writes = watch.close_phase()
    drift_minutes = round(bench.service.settings.last_seen_drift.total_seconds() / 60)
    out = HeartbeatRun(
        mode="calls" if args.heartbeat_calls else "pipelined",
        beats=beats,
        target_per_second=round(len(keys) / args.heartbeat_period, 1),
        achieved_per_second=round(beats.per_second, 1),
        during=during,
        writes=writes,
        copies_per_second=per_second(writes),
        copies_per_second_after_drift=copies_per_second(writes, drift_minutes),
    )
    log(f"heartbeats: {beats} ({out.achieved_per_second}/s); {during}; writes {writes}")
    if args.after_seconds > 0:
        watch.mark("after heartbeats")
        marks = costs.begin("after heartbeats")
        await asyncio.sleep(args.after_seconds)
        out.after = costs.end(marks)
        out.after_writes = watch.close_phase()
        out.copies_per_second_after = per_second(out.after_writes)
        log(f"after the heartbeats: {out.after}; writes {out.after_writes}")
    values = await metrics_of(url)
    if copied_before is not None and COPIED in values:
        out.copied_metric = values[COPIED] - copied_before
    out.unsynced_end = values.get(UNSYNCED)
    return out


# --- 5. the sweep ------------------------------------------------------------------------


async def make_due(store: RedisStore, keys: Sequence[SessionKey]) -> None:
    """Expired as bench/sweep_benchmark.py writes them: lastSeen more than a TTL ago, expiresAt
    and the index's score an hour ago; the native expiry stays in the future."""
    now = utcnow().replace(microsecond=0)
    expires = now - timedelta(hours=1)
    seen = expires - timedelta(hours=24)
    seen_text, expires_text = format_time(seen), format_time(expires)
    seen_ms, expires_ms = to_millis(seen), to_millis(expires)
    for start in range(0, len(keys), 5_000):
        async with store.client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 5_000]:
                pipe.hset(
                    RedisKeys.hash(key), mapping={"lastSeen": seen_text, "expiresAt": expires_text}
                )
                pipe.set(RedisKeys.expiry(key), expires_text, keepttl=True)
                pipe.zadd(store.keys.expiry_index, {member_of(key): expires_ms})
                pipe.zadd(store.keys.bot_index(key.bot_id), {key.user_id: seen_ms})
            await pipe.execute()


async def sweep(bench: Bench, costs: Costs, url: str, watch: PhaseWatch) -> SweepRun:
    args, store = bench.args, bench.stores.redis
    step = max(1, round(1 / args.due))
    due = keys_for(args.sessions)[::step]
    started = time.monotonic()
    await make_due(store, due)
    out = SweepRun(len(due), round(time.monotonic() - started, 1))
    before = await metrics_of(url)
    log(f"sweep: {len(due):,} sessions made due in {out.prepare_s} s; triggering the sweep")
    watch.mark("sweep")
    marks = costs.begin("sweep")
    started = time.monotonic()
    now_ms = to_millis(utcnow())
    await store.client.delete(store.keys.sweep_mark)

    async def index_empty() -> bool:
        return int(await store.client.zcount(store.keys.expiry_index, "-inf", now_ms)) == 0

    async def all_inactive() -> bool:
        return len(watch.inactive) >= len(due)

    async def all_synced() -> bool:
        return len(watch.inactive_synced) >= len(due)

    async def swept() -> bool:
        return (await metrics_of(url)).get(SWEEPS, 0.0) > before.get(SWEEPS, 0.0)

    async def since(
        check: Callable[[], Awaitable[bool]], interval: float, what: str
    ) -> float | None:
        waited = await wait_for(check, args.timeout, interval, what)
        return None if waited is None else round(time.monotonic() - started, 1)

    out.redis_s, out.inactive_s, out.synced_s, out.sweep_metric_s = await asyncio.gather(
        since(index_empty, 0.1, "the due sessions gone from the index"),
        since(all_inactive, 0.2, "every due BotSession inactive"),
        since(all_synced, 0.2, "every due BotSession synced"),
        since(swept, 0.5, "the operator's sweep metric"),
    )
    out.cost = costs.end(marks)
    out.writes = watch.close_phase()
    out.inactive = len(watch.inactive)
    after = await metrics_of(url)
    if SWEEP_SECONDS in after:
        out.operator_sweep_s = round(after[SWEEP_SECONDS] - before.get(SWEEP_SECONDS, 0.0), 1)
    if SWEPT_EXPIRED in after:
        out.swept_expired = after[SWEPT_EXPIRED] - before.get(SWEPT_EXPIRED, 0.0)
    log(f"sweep: {out}")
    return out


# --- the real operator, 2. to 5. ---------------------------------------------------------


async def run_operator(bench: Bench, result: dict[str, Any]) -> None:
    args = bench.args
    who = real_contender(bench)
    log("starting the namespace watch (its LIST of every BotSession)")
    watch = await PhaseWatch(load_kubeconfig(bench.plane.kubeconfig), NAMESPACE).start()
    try:
        with contextlib.ExitStack() as stack:
            first, url = who.make()
            assert url is not None
            stack.callback(first.close)
            stack.callback(keep_log, args.keep_logs, first.log_path, "operator-first.log")
            result["first_start"] = await first_start(bench, first, url, watch)
            process, url = who.make()
            assert url is not None
            stack.callback(process.close)
            stack.callback(keep_log, args.keep_logs, process.log_path, "operator-restart.log")
            stack.callback(process.stop)
            result["restart"], costs = await restart(bench, first, process, url, watch)
            try:
                result["heartbeats"] = await heartbeats(bench, costs, url, watch)
                if not args.skip_sweep:
                    result["sweep"] = await sweep(bench, costs, url, watch)
            finally:
                await costs.stop()
            process.stop()
            result["operator_log_lines"] = len(process.log_path.read_bytes().splitlines())
    finally:
        await watch.stop()


# --- 6. the floor ------------------------------------------------------------------------


async def floor_start(
    bench: Bench, process: EmptyOperator, count: int, name: str
) -> tuple[Restart, Cost]:
    """Spawn kopf's floor; wait for a "... is processed" line per object."""
    started, starting = await spawn(process)
    costs = Costs(process, bench.others)
    try:
        marks = costs.begin(name)
        await starting
        out = Restart()
        await resumed_logged(process.log_path, count, bench.args.timeout, started, out)
        cost = costs.end(marks)
    finally:
        await costs.stop()
    return out, cost


async def run_floor(bench: Bench) -> FloorRun:
    args = bench.args
    count = args.sessions + 1  # and the one created at the restart
    out = FloorRun(count)
    kubeconfig = bench.plane.kubeconfig
    with contextlib.ExitStack() as stack:
        first = EmptyOperator(kubeconfig, NAMESPACE)
        stack.callback(first.close)
        stack.callback(keep_log, args.keep_logs, first.log_path, "floor-first.log")
        handled, out.start = await floor_start(bench, first, count, "floor first start")
        out.handled_s, out.handled_lines = handled.resumed_logged_s, handled.resumed_logged
        log(f"floor: all {count:,} handled after {out.handled_s} s; {out.start}")
        out.stop_s, out.stop_code = stop(first)
        again = EmptyOperator(kubeconfig, NAMESPACE)
        stack.callback(again.close)
        stack.callback(keep_log, args.keep_logs, again.log_path, "floor-restart.log")
        stack.callback(again.stop)
        resumed, out.restart = await floor_start(bench, again, count, "floor restart")
        out.resumed_s, out.resumed_lines = resumed.resumed_logged_s, resumed.resumed_logged
        log(f"floor: restarted, all resumed after {out.resumed_s} s; {out.restart}")
        costs = Costs(again, bench.others)
        try:
            await costs.meter.quiet()
            marks = costs.begin("floor idle")
            await asyncio.sleep(args.idle_seconds)
            out.idle = costs.end(marks)
        finally:
            await costs.stop()
        log(f"floor idle: {out.idle}")
    return out


# --- the whole run -----------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    dirty = git("status", "--porcelain").splitlines()
    result: dict[str, Any] = {
        "args": vars(args),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(dirty),
        "loadavg_before": loadavg(),
    }
    result["others_before_pct"] = await others_busy()
    async with (
        servers() as (plane, redis, postgres),
        scale_bench(args, plane, redis, postgres) as bench,
    ):
        result["machine"] = versions(plane)
        log(f"creating {args.sessions:,} BotSessions in step, {args.concurrency} at a time")
        creation = await create_all(bench)
        result["creation"] = creation
        log(
            f"creation: {creation.sessions:,} in {creation.seconds} s "
            f"({creation.per_second:,.0f}/s, {creation.per_1000_s:.1f} s per 1,000); "
            f"CPU {creation.cpu_pct}"
        )
        result["footprint"] = await footprint(bench)
        log(f"footprint: {result['footprint']}")
        await run_operator(bench, result)
        if not args.skip_floor:
            result["floor"] = await run_floor(bench)
    result["loadavg_after"] = loadavg()
    return result


# --- the report --------------------------------------------------------------------------

Row = tuple[str, str, str, str]


def met(value: float | None, ok: bool) -> str:
    if value is None:
        return "- **never**"
    return fmt(value) + ("" if ok else " **missed**")


def servers_cpu(cost: Cost | dict[str, float] | None) -> str:
    """The CPU (% of one core) of each process tree over a window."""
    if cost is None:
        return "-"
    pct = cost.cpu_pct if isinstance(cost, Cost) else cost
    names = ("operator", "redis", "kube-apiserver", "etcd", "postgres", "bench", "others")
    return ", ".join(f"{name} {fmt(pct[name])}" for name in names if name in pct)


def creation_rows(creation: Creation, fp: Footprint) -> list[Row]:
    n = f"{creation.sessions:,}"
    return [
        (
            f"{n} BotSessions created in step (POST + 2 status PATCHes each) and written to "
            "Redis and PostgreSQL (s)",
            "",
            f"{fmt(creation.seconds)} ({creation.per_second:,.0f}/s, "
            f"{creation.per_1000_s:.1f} s per 1,000)",
            "",
        ),
        ("creation: CPU (% of one core)", "", servers_cpu(creation.cpu_pct), ""),
        (f"{n} held: kube-apiserver RSS (MB)", "", fmt(fp.apiserver_rss_mb), ""),
        (f"{n} held: etcd RSS (MB)", "", fmt(fp.etcd_rss_mb), ""),
        (
            f"{n} held: etcd db size, total / in use / file (MB)",
            "",
            f"{fmt(fp.etcd_db_mb)} / {fmt(fp.etcd_db_in_use_mb)} / {fmt(fp.etcd_db_file_mb)}",
            "",
        ),
        (
            "one BotSession as GET returns it / without managedFields (bytes)",
            "",
            f"{fp.object_bytes:,} / {fp.object_bytes_without_managed_fields:,} "
            f"({fp.managed_fields_entries} managedFields entries)",
            "",
        ),
        (
            f"{n} held: Redis used_memory / PostgreSQL database (MB)",
            "",
            f"{fmt(fp.redis_used_memory_mb)} / {fmt(fp.database_mb)}",
            "",
        ),
    ]


def start_rows(n: int, first: FirstStart, floor: FloorRun | None) -> list[Row]:
    idle, fidle = first.idle, floor.idle if floor else None
    rss = idle.window.rss_mb_end if idle else None
    idle_cpu = idle.window.cpu_pct if idle else None
    writes = first.writes
    written = writes.last_seen + writes.other + writes.noop if writes else None
    return [
        (
            f"first start: all {n:,} handled ({HANDLED}), from the spawn (s)",
            "",
            fmt(first.handled_s),
            f"{fmt(floor.handled_s)} (first start: 'Creation is processed' lines, each "
            f"object written twice); {fmt(floor.resumed_s)} (restart: 'Resuming' lines)"
            if floor
            else "-",
        ),
        (
            "first start: peak RSS (MB, VmHWM)",
            "",
            fmt(first.start.window.hwm_mb) if first.start else "-",
            f"{fmt(floor.start.window.hwm_mb)} / {fmt(floor.restart.window.hwm_mb)}"
            if floor and floor.start and floor.restart
            else "-",
        ),
        (
            "first start: BotSession writes from the spawn until idle",
            "0",
            "-" if written is None else f"{written:,}",
            "",
        ),
        (
            f"idle: RSS (MB) over {fmt(idle.window.seconds if idle else None, 0)} s",
            f"<= {TARGET_RSS_MB:.0f}",
            met(rss, rss is not None and rss <= TARGET_RSS_MB),
            f"{fmt(fidle.window.rss_mb_end)} ({ratio(rss, fidle.window.rss_mb_end)})"
            if fidle
            else "-",
        ),
        (
            "idle: CPU (% of one core)",
            f"< {TARGET_IDLE_CPU_PCT:.0f}",
            met(idle_cpu, idle_cpu is not None and idle_cpu < TARGET_IDLE_CPU_PCT),
            fmt(fidle.window.cpu_pct) if fidle else "-",
        ),
        ("idle: CPU of every process (% of one core)", "", servers_cpu(idle), servers_cpu(fidle)),
    ]


def restart_rows(n: int, run: RestartRun) -> list[Row]:
    r = run.restart
    new_s = r.new_s.get("api")
    start, steady = run.start, run.steady
    steady_s = steady.window.seconds if steady else None
    return [
        ("restart: SIGTERM, the old process exited after (s)", "", fmt(r.stop_s), ""),
        (
            "restart: a BotSession reported through the API at the spawn, synced after (s)",
            f"<= {TARGET_NEW_SYNCED_S:.0f}",
            met(new_s, new_s is not None and new_s <= TARGET_NEW_SYNCED_S),
            "",
        ),
        (
            f"restart: {r.resumed_metric or 'the handled counter'} reached {n:,} + 1 (s)",
            "",
            f"{fmt(r.resumed_s)} (metrics up at {fmt(r.metrics_up_s)})",
            "",
        ),
        (
            "restart: CPU seconds / peak RSS (MB) until then",
            "",
            f"{fmt(start.window.cpu_seconds)} / {fmt(start.window.hwm_mb)}" if start else "-",
            "",
        ),
        ("restart: old BotSessions written", "0", f"{run.old_written:,}", ""),
        (
            f"restart: RSS (MB) / CPU (%) over the {fmt(steady_s, 0)} s after",
            "",
            f"{fmt(steady.window.rss_mb_end)} / {fmt(steady.window.cpu_pct)}" if steady else "-",
            "",
        ),
    ]


def heartbeat_rows(hb: HeartbeatRun) -> list[Row]:
    w, after = hb.writes, hb.after_writes
    return [
        (
            f"heartbeats ({hb.mode}): achieved / wanted per second",
            f"{hb.target_per_second:,.0f}",
            f"{hb.achieved_per_second:,.0f} ({hb.beats.failed} failed, "
            f"{hb.beats.late_ticks} late ticks)",
            "",
        ),
        (
            f"heartbeats: lastSeen copies per second over {fmt(w.seconds, 0)} s / from the "
            "second minute on (the copies begin one drift, 60 s, after the first heartbeats)",
            f"<= {LAST_SEEN_BUDGET:.0f}",
            f"{fmt(hb.copies_per_second)} / {fmt(hb.copies_per_second_after_drift)} "
            f"(per minute: {w.per_minute})",
            "",
        ),
        ("heartbeats: other BotSession writes", "0", f"{w.other:,}", ""),
        ("heartbeats: CPU of every process (% of one core)", "", servers_cpu(hb.during), ""),
        (
            f"after the heartbeats, {fmt(after.seconds if after else None, 0)} s: lastSeen "
            "copies per second / other writes",
            f"<= {LAST_SEEN_BUDGET:.0f}",
            f"{fmt(hb.copies_per_second_after)} / {after.other:,}" if after else "-",
            "",
        ),
        ("after the heartbeats: CPU (% of one core)", "", servers_cpu(hb.after), ""),
        (
            "lastSeen copies counted by the operator / sessions still to copy at the end",
            "",
            f"{fmt(hb.copied_metric, 0)} / {fmt(hb.unsynced_end, 0)}",
            "",
        ),
    ]


def sweep_rows(sw: SweepRun) -> list[Row]:
    other = sw.writes.other if sw.writes else None
    return [
        (
            f"sweep of {sw.due:,} due: gone from the index / all inactive / all synced, from "
            "the trigger (s)",
            "",
            f"{fmt(sw.redis_s)} / {fmt(sw.inactive_s)} / {fmt(sw.synced_s)}",
            "",
        ),
        (
            "sweep: the operator's sweep run (its histogram: counted after / its duration, s)",
            "",
            f"{fmt(sw.sweep_metric_s)} / {fmt(sw.operator_sweep_s)} "
            f"({fmt(sw.swept_expired, 0)} expired)",
            "",
        ),
        (
            "sweep: BotSession writes other than lastSeen copies (per due session)",
            "",
            "-" if other is None else f"{other:,} ({other / max(1, sw.due):.1f})",
            "",
        ),
        ("sweep: CPU of every process (% of one core)", "", servers_cpu(sw.cost), ""),
    ]


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    n = args.sessions
    floor: FloorRun | None = result.get("floor")
    rows = creation_rows(result["creation"], result["footprint"])
    if "first_start" in result:
        rows += start_rows(n, result["first_start"], floor)
    if "restart" in result:
        rows += restart_rows(n, result["restart"])
    if "heartbeats" in result:
        rows += heartbeat_rows(result["heartbeats"])
    if "sweep" in result:
        rows += sweep_rows(result["sweep"])
    lines = [
        "| measure | target | botsession operator | kopf floor (empty handlers) |",
        "| --- | --- | ---: | ---: |",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--sessions", type=int, default=100_000, help="BotSessions held")
    parser.add_argument("--concurrency", type=int, default=32, help="API requests in flight")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--steady-seconds", type=float, default=30, help="after the restart")
    parser.add_argument("--heartbeat-minutes", type=float, default=3)
    parser.add_argument("--heartbeat-period", type=float, default=30, help="seconds")
    parser.add_argument(
        "--heartbeat-calls",
        action="store_true",
        help="one SessionService.heartbeat call per heartbeat instead of pipelines",
    )
    parser.add_argument(
        "--after-seconds",
        type=float,
        default=60,
        help="lastSeen copies watched after the heartbeats stop (0: not)",
    )
    parser.add_argument("--due", type=float, default=0.10, help="fraction swept")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600, help="per wait, seconds")
    parser.add_argument("--json", help="write every figure and the machine's facts here")
    parser.add_argument("--keep-logs", help="copy the operators' logs into this directory")
    args = parser.parse_args(argv)
    if args.sessions < 10:
        parser.error("--sessions must be at least 10")
    if not 0 < args.due <= 1:
        parser.error("--due must be in (0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(parse_args(argv), run, table)


if __name__ == "__main__":
    raise SystemExit(main())
