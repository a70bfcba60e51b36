"""The operator at scale: reconcile throughput, memory and CPU at 10,000 BotSessions, heartbeat
load, each against kopf's own floor (an operator with empty handlers).

Everything is real and started here (stopped at the end): etcd + kube-apiserver
(devstack.controlplane), a private redis-server, a private PostgreSQL, and the operator as a
subprocess (`python -m controller`, BOTSESSION_DATABASE_URL pointing at PostgreSQL).

  .venv/bin/python -m bench.operator_benchmark --json /tmp/operator.json      # full size
  .venv/bin/python -m bench.operator_benchmark --sessions 500 --burst 200 \\
      --idle-seconds 20 --heartbeat-minutes 1                                  # quick check

Steps (namespace `bench`, then `floor`):

1. burst: `--burst` BotSessions created at once (KubeBotSessions.create, `--concurrency` at a
   time): seconds until every one is in Redis (contract hash) and in the database (row with
   revision 1), and until its status says synced; the operator's peak RSS.
2. idle: the rest up to `--sessions` created, then every session reported `connected` (as
   the API does on a bot's report), all synced; then the operator's RSS and CPU over
   `--idle-seconds` of nothing happening.
3. heartbeats: every session heartbeats every `--heartbeat-period` s for
   `--heartbeat-minutes`, spread evenly, through an in-process SessionService (Redis only).
   One namespace-wide watch counts the BotSession writes (MODIFIED events) and tells copies of
   lastSeen from anything else; operator CPU and RSS.
4. floor: the real operator stopped, `kopf run --standalone bench/empty_operator.py` on fresh
   objects in another namespace: the same burst, the same number of objects with the same
   status, the same idle window, then the real run's rate of lastSeen writes replayed
   (`--floor-heartbeat-minutes`).

CPU is (utime + stime) from /proc/<pid>/stat over a window, as % of one core; memory is VmRSS
(sampled every 0.5 s) and VmHWM from /proc/<pid>/status (bench.measure.Meter). The servers,
the kopf floor and the BotSession helpers it shares with bench/restart_benchmark.py are in
bench/testbed.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from bench.measure import (
    Meter,
    Window,
    benchmark_main,
    bounded,
    fmt,
    keep_log,
    loadavg,
    log,
    percentile,
    pid_of,
    ratio,
    rnd,
    versions,
    wait_for,
)
from bench.testbed import (
    FLOOR_NAMESPACE,
    IDENTITY,
    NAMESPACE,
    EmptyOperator,
    Stores,
    active_status,
    botsessions_in,
    connected_patches,
    handled_by_floor,
    keys_for,
    list_raw,
    patch_status,
    servers,
)
from devstack.controlplane import ControlPlane
from devstack.kubectl import kubectl
from devstack.operator_process import OperatorProcess
from devstack.process import wait_until
from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.kubernetes.client import Connection, KubeClient, load_kubeconfig
from sessions.adapters.redis.store import RedisStore, connect
from sessions.adapters.sql.migrate import upgrade
from sessions.adapters.sql.store import SqlStore, create_engine
from sessions.domain.model import ReportedState, SessionKey, format_time, parse_time
from sessions.domain.settings import load_settings
from sessions.usecases.service import SessionService

# the targets
TARGET_BURST_S = 60.0
TARGET_IDLE_RSS_MB = 400.0
TARGET_IDLE_CPU_PCT = 5.0


# --- the BotSession writes -------------------------------------------------------------


def digest(obj: dict[str, Any]) -> str:
    """Everything of an object but its lastSeen/expiresAt and bookkeeping metadata."""
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    status = {k: v for k, v in (obj.get("status") or {}).items() if k not in LAST_SEEN_FIELDS}
    text = json.dumps([meta, obj.get("spec"), status], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


LAST_SEEN_FIELDS = ("lastSeen", "expiresAt")


@dataclass
class WriteCounts:
    seconds: float = 0.0
    last_seen: int = 0  # MODIFIED: only lastSeen/expiresAt changed
    other: int = 0  # MODIFIED: anything else changed
    noop: int = 0  # MODIFIED: nothing we look at changed (managedFields only)
    added: int = 0
    deleted: int = 0
    per_minute: list[int] = field(default_factory=list)  # lastSeen copies per whole minute
    sessions_copied: int = 0
    min_gap_s: float | None = None  # shortest wall time between two copies of one session
    min_step_s: float | None = None  # smallest advance of a session's lastSeen by one copy
    other_examples: list[str] = field(default_factory=list)

    @property
    def per_minute_mean(self) -> float:
        return 60 * self.last_seen / self.seconds if self.seconds else 0.0


class WriteWatch:
    """One namespace-wide watch of BotSessions: classifies every event, per phase."""

    def __init__(self, config: Connection, namespace: str) -> None:
        self.config = config
        self.namespace = namespace
        self.state: dict[str, tuple[str, str]] = {}  # name -> (digest, lastSeen)
        self.phase = "setup"
        self.phase_start = time.monotonic()
        self.counts: dict[str, WriteCounts] = defaultdict(WriteCounts)
        self.copies: dict[str, list[float]] = defaultdict(list)
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def mark(self, phase: str) -> None:
        self.close_phase()
        self.phase, self.phase_start = phase, time.monotonic()
        self.copies = defaultdict(list)

    def close_phase(self) -> WriteCounts:
        counts = self.counts[self.phase]
        counts.seconds = round(time.monotonic() - self.phase_start, 1)
        minutes = int(counts.seconds // 60)
        buckets = Counter(
            int((t - self.phase_start) // 60) for ts in self.copies.values() for t in ts
        )
        counts.per_minute = [buckets.get(m, 0) for m in range(minutes)]
        counts.sessions_copied = len(self.copies)
        gaps = [b - a for ts in self.copies.values() for a, b in itertools.pairwise(ts)]
        counts.min_gap_s = round(min(gaps), 1) if gaps else None
        return counts

    def observe(self, kind: str, obj: dict[str, Any]) -> None:
        counts = self.counts[self.phase]
        name = obj["metadata"]["name"]
        seen = (obj.get("status") or {}).get("lastSeen", "")
        if kind == "ADDED":
            counts.added += 1
        elif kind == "DELETED":
            counts.deleted += 1
            self.state.pop(name, None)
            return
        elif kind == "MODIFIED":
            before = self.state.get(name)
            now = digest(obj)
            if before is not None and before[0] == now:
                if before[1] != seen:
                    counts.last_seen += 1
                    self.copies[name].append(time.monotonic())
                    if before[1] and seen:
                        step = (parse_time(seen) - parse_time(before[1])).total_seconds()
                        if counts.min_step_s is None or step < counts.min_step_s:
                            counts.min_step_s = step
                else:
                    counts.noop += 1
            else:
                counts.other += 1
                if len(counts.other_examples) < 3:
                    counts.other_examples.append(name)
            self.state[name] = (now, seen)
            return
        self.state[name] = (digest(obj), seen)

    async def run(self) -> None:
        client = KubeClient(self.config, timeout=60)
        try:
            items, version = await list_raw(client, self.namespace)
            for item in items:
                self.state[item["metadata"]["name"]] = (
                    digest(item),
                    (item.get("status") or {}).get("lastSeen", ""),
                )
            self.ready.set()
            objects = botsessions_in(client, self.namespace)
            while True:
                changes = objects.watch(600, resource_version=version, allow_watch_bookmarks=True)
                async for event in changes:
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"the watch failed: {event['object']}")
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self.observe(event["type"], event["object"])
        finally:
            await client.close()

    async def start(self) -> Self:
        self.task = asyncio.create_task(self.run())
        await asyncio.wait_for(self.ready.wait(), 120)
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# --- the steps -------------------------------------------------------------------------


@dataclass
class Burst:
    sessions: int
    create_s: float  # all POSTs answered
    redis_s: float | None  # every contract hash exists
    database_s: float | None  # every row exists with revision 1
    synced_s: float | None  # every status says syncedRevision 1 (the operator's last step)
    window: Window | None = None
    probe_quiet: Latency | None = None  # another client's GETs before the burst
    probe_burst: Latency | None = None  # ... and during it


@dataclass(frozen=True)
class Latency:
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ms = [s * 1000 for s in seconds]
        return cls(
            len(ms),
            round(percentile(ms, 50), 1),
            round(percentile(ms, 99), 1),
            round(max(ms, default=0.0), 1),
        )


PROBE_KEY = SessionKey("probe-bot", "probe")
PROBE_EVERY = 0.05  # seconds between another client's GETs


async def probe(client: KubeClient, until: asyncio.Event) -> Latency:
    """What another client of the API server sees: one GET of a BotSession (read from etcd)
    every PROBE_EVERY s until `until` is set, its latency each."""
    botsessions = KubeBotSessions(client, NAMESPACE)
    seconds: list[float] = []
    while not until.is_set():
        started = time.monotonic()
        await botsessions.get(PROBE_KEY)
        seconds.append(time.monotonic() - started)
        await asyncio.sleep(PROBE_EVERY)
    return Latency.of(seconds)


async def probed(client: KubeClient, seconds: float) -> Latency:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, done.set)
    return await probe(client, done)


@dataclass
class FloorBurst:
    sessions: int
    create_s: float
    handled_s: float | None  # every object carries kopf's last-handled-configuration
    window: Window | None = None


def synced_at(item: dict[str, Any], revision: int) -> bool:
    return int((item.get("status") or {}).get("syncedRevision") or 0) >= revision


async def wait_synced(
    client: KubeClient, namespace: str, count: int, revision: int, timeout: float
) -> float | None:
    async def check() -> bool:
        items, _ = await list_raw(client, namespace)
        return sum(synced_at(i, revision) for i in items) >= count

    return await wait_for(check, timeout, max(1.0, count / 2500), f"revision {revision} synced")


async def burst_real(
    args: argparse.Namespace, client: KubeClient, stores: Stores, meter: Meter
) -> Burst:
    keys = keys_for(args.burst)
    botsessions = KubeBotSessions(client, NAMESPACE)
    await botsessions.create(PROBE_KEY, IDENTITY)
    # the probe has its own client (connections), as another user of the API server would
    prober = KubeClient(client.connection)
    quiet = await probed(prober, 10.0)
    mark = meter.begin("burst")
    started = time.monotonic()
    burst_over = asyncio.Event()
    probing = asyncio.create_task(probe(prober, burst_over))
    creating = asyncio.create_task(
        bounded(keys, lambda k: botsessions.create(k, IDENTITY), args.concurrency)
    )

    async def all_in_redis() -> bool:
        return await stores.in_redis(keys) == len(keys)

    async def all_rows() -> bool:
        return await stores.rows(1) >= len(keys) + 1  # and the probe's

    async def since_start(check: Callable[[], Awaitable[bool]], what: str) -> float | None:
        waited = await wait_for(check, args.timeout, 0.2, what)
        return None if waited is None else time.monotonic() - started

    redis_s, database_s = await asyncio.gather(
        since_start(all_in_redis, "Redis"), since_start(all_rows, "the database")
    )
    create_s = await creating
    waited = await wait_synced(client, NAMESPACE, len(keys) + 1, 1, args.timeout)
    synced_s = None if waited is None else time.monotonic() - started
    burst_over.set()
    result = Burst(len(keys), round(create_s, 1), rnd(redis_s), rnd(database_s), rnd(synced_s))
    result.window = meter.end(mark)
    result.probe_quiet, result.probe_burst = quiet, await probing
    await prober.close()
    return result


async def fill_real(
    args: argparse.Namespace, client: KubeClient, service: SessionService, stores: Stores
) -> dict[str, float | None]:
    """The rest of the sessions, then all of them connected (revision 2) and synced."""
    botsessions = KubeBotSessions(client, NAMESPACE)
    rest = keys_for(args.sessions, args.burst)
    all_keys = keys_for(args.sessions)
    log(f"creating {len(rest):,} more BotSessions")
    create_s = await bounded(rest, lambda k: botsessions.create(k, IDENTITY), args.concurrency)
    created = await wait_synced(client, NAMESPACE, len(all_keys), 1, args.timeout)
    log(f"  created in {create_s:.0f} s, all synced {created} s later; reporting connected")

    async def connected(key: SessionKey) -> None:
        await service.report(key, ReportedState.CONNECTED)

    report_s = await bounded(all_keys, connected, args.concurrency)
    synced = await wait_synced(client, NAMESPACE, len(all_keys), 2, args.timeout)
    rows = await stores.rows(2)
    log(f"  reported in {report_s:.0f} s, synced {synced} s later; {rows:,} rows at revision 2")
    return {
        "create_rest_s": round(create_s, 1),
        "create_rest_synced_s": rnd(created),
        "report_connected_s": round(report_s, 1),
        "connected_synced_s": rnd(synced),
    }


@dataclass
class Heartbeats:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    late_ticks: int = 0  # ticks whose heartbeats took longer than the tick

    @property
    def per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


async def drive_heartbeats(
    service: SessionService, keys: Sequence[SessionKey], period: float, seconds: float
) -> Heartbeats:
    """Each key heartbeats once per `period`, spread evenly (a tick of 0.1 s)."""
    order = list(keys)
    random.Random(7).shuffle(order)
    tick = 0.1
    per_tick = len(order) * tick / period
    result = Heartbeats()
    loop = asyncio.get_running_loop()
    started = loop.time()
    steps = int(seconds / tick)
    cursor = 0

    async def beat(key: SessionKey) -> bool:
        try:
            await service.heartbeat(key)
        except Exception:
            return False
        return True

    for step in range(steps):
        due = int((step + 1) * per_tick) - int(step * per_tick)
        batch = [order[(cursor + i) % len(order)] for i in range(due)]
        cursor += due
        outcomes = await asyncio.gather(*(beat(k) for k in batch))
        result.sent += sum(outcomes)
        result.failed += len(outcomes) - sum(outcomes)
        next_at = started + (step + 1) * tick
        if loop.time() > next_at:
            result.late_ticks += 1
        else:
            await asyncio.sleep(next_at - loop.time())
    result.seconds = round(loop.time() - started, 1)
    return result


async def replay_touches(
    client: KubeClient, names: Sequence[str], per_minute: float, seconds: float
) -> int:
    """lastSeen merge patches (as KubeBotSessions.touch sends them) at a steady rate."""
    if per_minute <= 0:
        await asyncio.sleep(seconds)
        return 0
    interval = 60.0 / per_minute
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent, index = 0, 0
    semaphore = asyncio.Semaphore(20)
    pending: set[asyncio.Task[None]] = set()

    async def touch(name: str) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        status = {
            "lastSeen": format_time(now),
            "expiresAt": format_time(now + timedelta(hours=24)),
        }
        async with semaphore:
            await patch_status(client, FLOOR_NAMESPACE, name, status)

    while loop.time() - started < seconds:
        task = asyncio.create_task(touch(names[index % len(names)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
        index += 1
        await asyncio.sleep(max(0.0, started + sent * interval - loop.time()))
    await asyncio.gather(*pending, return_exceptions=True)
    return sent


async def floor_handled(client: KubeClient, count: int) -> bool:
    items, _ = await list_raw(client, FLOOR_NAMESPACE)
    return sum(handled_by_floor(i) for i in items) >= count


async def burst_floor(args: argparse.Namespace, client: KubeClient, meter: Meter) -> FloorBurst:
    """The same burst against kopf: seconds until every object is handled."""
    botsessions = KubeBotSessions(client, FLOOR_NAMESPACE)
    keys = keys_for(args.burst)
    mark = meter.begin("burst")
    started = time.monotonic()
    create_s = await bounded(keys, lambda k: botsessions.create(k, IDENTITY), args.concurrency)
    waited = await wait_for(lambda: floor_handled(client, len(keys)), args.timeout, 0.2, "kopf")
    burst = FloorBurst(
        len(keys),
        round(create_s, 1),
        None if waited is None else round(time.monotonic() - started, 1),
    )
    burst.window = meter.end(mark)
    return burst


async def fill_floor(
    args: argparse.Namespace, client: KubeClient, status: dict[str, Any]
) -> list[str]:
    """The rest of the objects, then every one given a real connected BotSession's status;
    the names of all."""
    botsessions = KubeBotSessions(client, FLOOR_NAMESPACE)
    rest = keys_for(args.sessions, args.burst)
    log(f"floor: creating {len(rest):,} more, then giving all a connected status")
    await bounded(rest, lambda k: botsessions.create(k, IDENTITY), args.concurrency)
    await wait_for(lambda: floor_handled(client, args.sessions), args.timeout, 2.0, "kopf")
    items, _ = await list_raw(client, FLOOR_NAMESPACE)
    names = [i["metadata"]["name"] for i in items]
    patches = connected_patches(status)

    async def give_status(name: str) -> None:
        for body in patches:
            await patch_status(client, FLOOR_NAMESPACE, name, body)

    await bounded(names, give_status, args.concurrency)
    return names


async def replay_floor(
    args: argparse.Namespace,
    client: KubeClient,
    names: Sequence[str],
    touches_per_minute: float,
    meter: Meter,
) -> dict[str, Any]:
    """The real run's rate of lastSeen writes replayed against kopf."""
    seconds = args.floor_heartbeat_minutes * 60
    mark = meter.begin("heartbeats")
    out: dict[str, Any] = {}
    out["replayed_touches"] = await replay_touches(client, names, touches_per_minute, seconds)
    out["heartbeats"] = meter.end(mark)
    out["touches_per_minute"] = round(touches_per_minute, 1)
    log(f"floor heartbeat replay: {out['heartbeats']}")
    return out


async def run_floor(
    args: argparse.Namespace,
    plane: ControlPlane,
    client: KubeClient,
    status: dict[str, Any],
    touches_per_minute: float,
    others: dict[str, int],
) -> dict[str, Any]:
    kubectl(plane.kubeconfig, "create", "namespace", FLOOR_NAMESPACE)
    out: dict[str, Any] = {}
    with EmptyOperator(plane.kubeconfig, FLOOR_NAMESPACE) as empty:
        meter = Meter(pid_of(empty), others).start()
        try:
            await asyncio.sleep(2)
            out["start_window"] = meter.end(meter.begin("start"))
            out["burst"] = await burst_floor(args, client, meter)
            log(f"floor burst: {out['burst']}")
            mark = meter.begin("fill")
            names = await fill_floor(args, client, status)
            out["fill_window"] = meter.end(mark)
            await meter.quiet()
            mark = meter.begin("idle")
            await asyncio.sleep(args.idle_seconds)
            out["idle"] = meter.end(mark)
            log(f"floor idle: {out['idle']}")
            out.update(await replay_floor(args, client, names, touches_per_minute, meter))
        finally:
            await meter.stop()
            empty.stop()
            keep_log(args.keep_logs, empty.log_path, "empty-operator.log")
    return out


# --- the whole run ---------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "args": vars(args),
        "loadavg_before": loadavg(),
    }
    async with servers() as (plane, redis_server, postgres):
        result["machine"] = versions(plane)
        others = {
            "kube-apiserver": pid_of(plane.apiserver),
            "etcd": pid_of(plane.etcd),
            "redis": pid_of(redis_server),
        }
        database_url = postgres.url("asyncpg")
        kubectl(plane.kubeconfig, "create", "namespace", NAMESPACE)
        config = load_kubeconfig(plane.kubeconfig)
        client = KubeClient(config, timeout=60)
        settings = load_settings(
            namespace=NAMESPACE, database_url=database_url, redis_url=redis_server.url
        )
        redis = RedisStore(connect(redis_server.url, retries=2, timeout=timedelta(seconds=10)))
        sql = SqlStore(create_engine(database_url))
        await upgrade(sql.engine)
        service = SessionService(KubeBotSessions(client, NAMESPACE), redis, sql, settings)
        stores = Stores(redis, sql.engine)
        env = {
            "BOTSESSION_REDIS_URL": redis_server.url,
            "BOTSESSION_DATABASE_URL": database_url,
            "BOTSESSION_METRICS_PORT": "0",
            "BOTSESSION_CONNECT_TIMEOUT": args.connect_timeout,
        }
        operator = OperatorProcess(plane.kubeconfig, NAMESPACE, env, args=tuple(args.operator_args))
        if args.profile:
            operator = ProfiledOperator(
                plane.kubeconfig, NAMESPACE, env, Path(args.profile), args.operator_args
            )
        try:
            with operator:
                result.update(
                    await run_real(args, plane, client, service, stores, operator, others)
                )
                operator.stop()
                result["operator_log_lines"] = len(operator.output().splitlines())
                keep_log(args.keep_logs, operator.log_path, "operator.log")
            if not args.skip_floor and "heartbeats" in result:
                touches = result["heartbeats"]["writes"].per_minute_mean
                result["floor"] = await run_floor(
                    args, plane, client, result.pop("active_status"), touches, others
                )
        finally:
            await client.close()
            await redis.close()
            await sql.close()
    result["loadavg_after"] = loadavg()
    return result


class ProfiledOperator(OperatorProcess):
    """The operator under pyinstrument (`python -m pyinstrument -m controller ...`)."""

    def __init__(
        self, kubeconfig: Path, namespace: str, env: dict[str, str], out: Path, extra: list[str]
    ) -> None:
        super().__init__(kubeconfig, namespace, env, args=tuple(extra))
        self.out = out

    def start(self) -> Self:
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        env["PYTHONUNBUFFERED"] = "1"
        # the renderer follows the suffix: .txt, .html, .pyisession (render it later with
        # `pyinstrument --load FILE --show-all`), .pstats ...
        argv = [sys.executable, "-m", "pyinstrument", "-o", str(self.out)]
        self._spawn([*argv, "-m", "controller", "--namespace", self.namespace, *self.args], env=env)
        wait_until(
            lambda: "startup" in self.output() or "Starting the main handler" in self.output(),
            60,
            "the profiled operator",
            self.proc,
            self.log_path,
        )
        return self

    def stop(self, sig: int = 2, timeout: float = 120) -> None:  # SIGINT: pyinstrument writes
        super().stop(sig, timeout)


async def run_real(
    args: argparse.Namespace,
    plane: ControlPlane,
    client: KubeClient,
    service: SessionService,
    stores: Stores,
    operator: OperatorProcess,
    others: dict[str, int],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    meter = Meter(pid_of(operator), others).start()
    watch: WriteWatch | None = None
    try:
        await asyncio.sleep(2)
        out["start_window"] = meter.end(meter.begin("start"))
        log(f"operator up, RSS {out['start_window'].rss_mb_end} MB; burst of {args.burst:,}")
        burst = await burst_real(args, client, stores, meter)
        out["burst"] = burst
        log(f"burst: {burst}")
        if args.burst_only:
            return out
        mark = meter.begin("fill")
        out["fill"] = await fill_real(args, client, service, stores)
        out["fill_window"] = meter.end(mark)
        log("waiting for the operator to get quiet")
        await meter.quiet()
        watch = await WriteWatch(load_kubeconfig(plane.kubeconfig), NAMESPACE).start()
        watch.mark("idle")
        mark = meter.begin("idle")
        await asyncio.sleep(args.idle_seconds)
        out["idle"] = meter.end(mark)
        out["idle_writes"] = watch.close_phase()
        log(f"idle: {out['idle']}; writes {out['idle_writes']}")

        keys = keys_for(args.sessions)
        watch.mark("heartbeats")
        mark = meter.begin("heartbeats")
        beats = await drive_heartbeats(
            service, keys, args.heartbeat_period, args.heartbeat_minutes * 60
        )
        window = meter.end(mark)
        writes = watch.close_phase()
        out["heartbeats"] = {
            "window": window,
            "heartbeats": beats,
            "heartbeats_per_second": round(beats.per_second, 1),
            "writes": writes,
        }
        log(f"heartbeats: {beats}, {window}; writes {writes}")
        items, _ = await list_raw(client, NAMESPACE)
        out["active_status"] = active_status(items[0])
    finally:
        if watch is not None:
            await watch.stop()
        await meter.stop()
    return out


# --- the report ------------------------------------------------------------------------


Row = tuple[str, str, str, str, str]


def met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def compared(label: str, ours: float | None, floor: float | None) -> Row:
    """A table row without a target: our figure, the floor's, and their ratio."""
    return (label, "", fmt(ours), fmt(floor), ratio(ours, floor))


def burst_rows(burst: Burst, fburst: FloorBurst | None) -> list[Row]:
    slowest = (
        None
        if burst.redis_s is None or burst.database_s is None
        else max(burst.redis_s, burst.database_s)
    )
    floor_s = fburst.handled_s if fburst else None
    rows: list[Row] = [
        (
            f"burst of {burst.sessions:,}: all in Redis and the database (s)",
            f"<= {TARGET_BURST_S:.0f}",
            f"{fmt(slowest)} (Redis {fmt(burst.redis_s)}, DB {fmt(burst.database_s)})",
            fmt(floor_s) + " (all handled)",
            f"{ratio(slowest, floor_s)} "
            f"{met(None if slowest is None else slowest <= TARGET_BURST_S)}",
        ),
        compared("burst: all statuses synced (s)", burst.synced_s, floor_s),
        (
            "burst: POSTs answered (s)",
            "",
            fmt(burst.create_s),
            fmt(fburst.create_s if fburst else None),
            "",
        ),
    ]
    for label, latency in (("before", burst.probe_quiet), ("during", burst.probe_burst)):
        if latency is not None:
            rows.append(
                (
                    f"another client's GET of a BotSession {label} the burst: p50 / p99 / max "
                    f"(ms, {latency.requests} requests)",
                    "",
                    f"{latency.p50_ms} / {latency.p99_ms} / {latency.max_ms}",
                    "",
                    "",
                )
            )
    bw, fbw = burst.window, fburst.window if fburst else None
    if bw is not None:
        rows.append(compared("burst: peak RSS (MB, VmHWM)", bw.hwm_mb, fbw.hwm_mb if fbw else None))
        rows.append(
            compared(
                "burst: operator CPU (% of one core)", bw.cpu_pct, fbw.cpu_pct if fbw else None
            )
        )
    return rows


def idle_rows(idle: Window, fidle: Window | None, writes: WriteCounts, sessions: int) -> list[Row]:
    n = f"{sessions:,}"
    written = writes.last_seen + writes.other
    return [
        (
            f"{n} idle: RSS (MB)",
            f"<= {TARGET_IDLE_RSS_MB:.0f}",
            fmt(idle.rss_mb_end),
            fmt(fidle.rss_mb_end if fidle else None),
            f"{ratio(idle.rss_mb_end, fidle.rss_mb_end if fidle else None)} "
            f"{met(idle.rss_mb_end <= TARGET_IDLE_RSS_MB)}",
        ),
        compared(
            f"{n} idle: peak RSS so far (MB, VmHWM)",
            idle.hwm_mb,
            fidle.hwm_mb if fidle else None,
        ),
        (
            f"{n} idle: CPU over {idle.seconds:.0f} s (% of one core)",
            f"< {TARGET_IDLE_CPU_PCT:.0f}",
            fmt(idle.cpu_pct),
            fmt(fidle.cpu_pct if fidle else None),
            f"{ratio(idle.cpu_pct, fidle.cpu_pct if fidle else None)} "
            f"{met(idle.cpu_pct < TARGET_IDLE_CPU_PCT)}",
        ),
        (f"{n} idle: BotSession writes", "0", f"{written}", "", met(written == 0)),
    ]


def heartbeat_write_rows(
    hb: dict[str, Any], floor: dict[str, Any], args: argparse.Namespace
) -> list[Row]:
    """The lastSeen copies the heartbeats caused, against one per session per drift."""
    writes: WriteCounts = hb["writes"]
    drift_bound = args.sessions * 60 / args.drift_seconds
    smallest_ok = None if writes.min_step_s is None else writes.min_step_s > args.drift_seconds
    return [
        (
            f"heartbeats ({hb['heartbeats_per_second']:,.0f}/s): lastSeen copies per minute",
            f"<= {drift_bound:,.0f} (one per session per drift)",
            f"{writes.per_minute_mean:,.0f} (per minute: {writes.per_minute})",
            f"{floor.get('touches_per_minute', 0):,.0f} replayed" if floor else "",
            met(writes.per_minute_mean <= drift_bound and writes.other == 0),
        ),
        ("heartbeats: other BotSession writes", "0", str(writes.other), "", met(writes.other == 0)),
        (
            "heartbeats: smallest advance of a session's lastSeen by one copy (s)",
            f"> {args.drift_seconds:.0f} (the drift)",
            fmt(writes.min_step_s),
            "",
            met(smallest_ok),
        ),
        (
            "heartbeats: shortest wall time between two copies of one session (s)",
            "",
            fmt(writes.min_gap_s),
            "",
            "",
        ),
    ]


def heartbeat_cost_rows(window: Window, fhb: Window | None) -> list[Row]:
    """The operator's CPU and memory under the heartbeats, against the floor's replay."""
    return [
        compared(
            f"heartbeats: operator CPU over {window.seconds:.0f} s (% of one core)",
            window.cpu_pct,
            fhb.cpu_pct if fhb else None,
        ),
        (
            "heartbeats: operator RSS at the end / peak so far (MB)",
            "",
            f"{fmt(window.rss_mb_end)} / {fmt(window.hwm_mb)}",
            f"{fmt(fhb.rss_mb_end)} / {fmt(fhb.hwm_mb)}" if fhb else "",
            ratio(window.rss_mb_end, fhb.rss_mb_end if fhb else None),
        ),
    ]


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    floor = result.get("floor", {})
    rows = burst_rows(result["burst"], floor.get("burst"))
    idle: Window | None = result.get("idle")
    if idle is not None:
        rows += idle_rows(idle, floor.get("idle"), result["idle_writes"], args.sessions)
    hb = result.get("heartbeats")
    if hb is not None:
        rows += heartbeat_write_rows(hb, floor, args)
        rows += heartbeat_cost_rows(hb["window"], floor.get("heartbeats"))
    lines = [
        "| measure | target | botsession operator | kopf floor (empty handlers) | ratio / met |",
        "| --- | --- | ---: | ---: | --- |",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--sessions", type=int, default=10_000, help="idle/heartbeat sessions")
    parser.add_argument("--burst", type=int, default=1_000, help="sessions created at once")
    parser.add_argument("--idle-seconds", type=float, default=180)
    parser.add_argument("--heartbeat-minutes", type=float, default=5)
    parser.add_argument("--heartbeat-period", type=float, default=30, help="seconds")
    parser.add_argument(
        "--floor-heartbeat-minutes",
        type=float,
        default=None,
        help="the floor's replay of lastSeen writes (default: --heartbeat-minutes)",
    )
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--burst-only", action="store_true", help="step 1 only (for profiling)")
    parser.add_argument("--concurrency", type=int, default=50, help="API requests at a time")
    parser.add_argument(
        "--connect-timeout",
        default="30m",
        help="BOTSESSION_CONNECT_TIMEOUT of the operator: long enough that no session times "
        "out while the benchmark is still creating the rest (default 30m)",
    )
    parser.add_argument("--drift-seconds", type=float, default=60, help="for the bound only")
    parser.add_argument("--timeout", type=float, default=900, help="per wait, seconds")
    parser.add_argument("--profile", help="run the operator under pyinstrument, write here")
    parser.add_argument("--operator-args", nargs="*", default=[])
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--keep-logs", help="copy the operators' logs into this directory")
    args = parser.parse_args(argv)
    if args.floor_heartbeat_minutes is None:
        args.floor_heartbeat_minutes = args.heartbeat_minutes
    if args.burst > args.sessions:
        parser.error("--burst must not exceed --sessions")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(parse_args(argv), run, table)


if __name__ == "__main__":
    raise SystemExit(main())
