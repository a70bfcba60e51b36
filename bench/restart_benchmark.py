"""The operator restarted with N BotSessions present (issue 16, item 1), against kopf's floor.

  .venv/bin/python -m bench.restart_benchmark --json /tmp/restart.json      # N = 10,000
  .venv/bin/python -m bench.restart_benchmark --sessions 300                # quick check

Everything is real and started here, as in bench/operator_benchmark.py (through the same
bench/testbed.py): etcd + kube-apiserver, a private redis-server and PostgreSQL, and the
operator as a subprocess (devstack.operator_process.OperatorProcess, `python -m controller`,
the database PostgreSQL, BOTSESSION_METRICS_PORT a free port, every other setting its
default: worker limit 200).

The botsession operator (namespace `bench`):

1. populate: N sessions reported `connected` through sessions.usecases.service.SessionService.report
   (what POST .../report does: the BotSession created by a KubeBotSessions with
   creator="api", its first phase `connecting` and then `connected` written by the API,
   Redis and PostgreSQL written), `--concurrency` reports at a time, no operator running;
2. first start: the operator started, seconds until every BotSession has
   status.syncedRevision == status.revision; then it is left until its CPU is quiet;
3. restart: SIGTERM (seconds until the old process exited), then a fresh process. The clock
   starts when the new process is spawned; right then two new BotSessions are created: one
   the way the API does (SessionService.report `connecting`) and one bare, as `kubectl
   create` would (the operator writes its first phase). Their names sort after every old
   one's: the API server lists in name order and kopf queues the listed objects in that
   order, so they wait behind all the resumes, as one created after the listing would.
   Measured from the spawn:
   (a) seconds until each new one has status.syncedRevision == status.revision (target
       <= 10 s);
   (b) seconds until the operator's metrics endpoint says all were resumed
       (`botsession_resumed_total` >= N or, as the operator now names it,
       `botsession_handled_objects_total` >= N + the 2 new ones: objects handled at least
       once since the start), and until N + the new ones "Resuming is processed" or
       "Creation is processed" lines are in the operator's log (kopf writes one per object
       whose handlers finished: resumed, or created when kopf itself never reached it before
       the SIGTERM because the catch-up synced it);
   (c) the process's CPU seconds and peak RSS (VmHWM) from its spawn until all were
       resumed, and its VmRSS and CPU over the `--steady-seconds` (30) that follow;
   (d) then one old BotSession is deleted: seconds until it is gone (its finalizer ran;
       its Redis hash is checked to be gone too).
   Also counted: old BotSessions whose resourceVersion changed over the restart (a restart
   that needs no work writes none).

The kopf floor (namespace `floor`, `--skip-floor` leaves it out): bench/empty_operator.py
(`kopf run --standalone`, empty resume/create/update/delete handlers, the real operator's kopf
settings and worker limit, its own finalizer and annotation prefix `floor.kopf.dev`). As in
operator_benchmark.py it gets fresh objects of its own in its own namespace, so neither
operator ever sees the other's finalizer: N bare BotSessions, each then given a copy of a
real connected BotSession's status (two status patches, as the CRD's rules want). Then the
same steps: first start (every object carries kopf's last-handled-configuration), SIGTERM,
restart with one new bare BotSession created at the spawn; (a) is "handled" (the annotation
is there), (b) counts the log lines (it has no metrics), (c) and (d) are the same.

CPU is utime + stime from /proc/<pid>/stat, memory VmRSS (sampled every 0.5 s) and VmHWM from
/proc/<pid>/status (bench.measure.Meter). `--json PATH` writes every figure with
the machine's facts (versions of the servers and libraries, nproc, memory, load average at
the start and the end, the git commit and the number of uncommitted files).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.measure import (
    Meter,
    Window,
    benchmark_main,
    bounded,
    fmt,
    git,
    keep_log,
    loadavg,
    log,
    pid_of,
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
from devstack.postgres_server import PostgresServer
from devstack.process import ManagedProcess, free_port
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.botsessions import KubeBotSessions, resource_name
from sessions.adapters.kubernetes.client import ApiError, KubeClient, load_kubeconfig
from sessions.adapters.redis.store import RedisStore, connect
from sessions.adapters.sql.migrate import upgrade
from sessions.adapters.sql.store import SqlStore, create_engine
from sessions.domain.model import ReportedState, SessionKey, StoreUnavailable
from sessions.domain.settings import load_settings
from sessions.usecases.service import SessionService

TARGET_NEW_SYNCED_S = 10.0
# the new BotSessions' bot: their names sort after every old one's ("bench-bot-..."); the API
# server lists in name order and kopf queues the listed objects in that order
NEW_BOT = "zz-restart"
HANDLED_LINES = (b"Resuming is processed", b"Creation is processed")
# the operator's count of resumed objects: botsession_resumed_total counts resumes (reaches N);
# its successor botsession_handled_objects_total counts every object handled at least once
# since the start, the new ones too (reaches N + the new ones)
RESUMED_METRICS = ("botsession_resumed_total", "botsession_handled_objects_total")

Item = dict[str, Any]


# --- what is measured --------------------------------------------------------------------


@dataclass
class Start:
    """The first start: every object handled from nothing."""

    populate_s: float  # creating the N objects (no operator running)
    handled_s: float | None = None  # from the spawn until all N synced / handled
    window: Window | None = None


@dataclass
class Restart:
    stop_s: float = 0.0  # SIGTERM until the old process exited
    stop_code: int | None = None  # its exit code (-9: killed after 60 s)
    new_s: dict[str, float | None] = field(default_factory=dict)  # (a), by how it was created
    metrics_up_s: float | None = None  # the metrics endpoint's first answer
    resumed_s: float | None = None  # (b) botsession_resumed_total >= N
    resumed_metric: str = ""  # which of RESUMED_METRICS the operator exposes
    resumed_count: float | None = None  # its last value read
    resumed_logged_s: float | None = None  # (b) N + the new ones' "... is processed" lines
    resumed_logged: int = 0
    window: Window | None = None  # (c) from the spawn until all resumed
    steady: Window | None = None  # (c) the --steady-seconds after that
    delete_s: float | None = None  # (d)
    delete_cleaned: bool | None = None  # its Redis hash is gone too (real operator)
    rewritten: int | None = None  # old objects whose resourceVersion changed


@dataclass
class Bench:
    args: argparse.Namespace
    plane: ControlPlane
    client: KubeClient
    stores: Stores
    service: SessionService  # its KubeBotSessions has creator="api", as in the API
    env: dict[str, str]  # the operator's, but for the metrics port
    others: dict[str, int]  # the servers' pids, for Meter


Creator = Callable[[SessionKey], Awaitable[object]]


@dataclass
class Contender:
    name: str
    namespace: str
    make: Callable[[], tuple[ManagedProcess, str | None]]  # a new process; its metrics URL
    done: Callable[[Item], bool]  # an object synced (real) or handled (floor)
    creators: dict[str, Creator]  # how the new BotSessions after a restart are created
    in_redis: bool  # check that the deleted one's Redis hash is gone


# --- small helpers -----------------------------------------------------------------------


def in_sync(item: Item) -> bool:
    status = item.get("status") or {}
    revision = int(status.get("revision") or 0)
    return revision >= 1 and int(status.get("syncedRevision") or 0) == revision


def since(started: float) -> float:
    return round(time.monotonic() - started, 1)


class LogCounter:
    """Counts needles in a growing log file, reading only what was appended."""

    def __init__(self, path: Path, needles: tuple[bytes, ...]) -> None:
        self.path, self.needles = path, needles
        self.offset, self.total = 0, 0

    def count(self) -> int:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file:
            file.seek(self.offset)
            chunk = file.read()
            end = chunk.rfind(b"\n") + 1
            self.total += sum(chunk[:end].count(needle) for needle in self.needles)
            self.offset += end
        return self.total


async def scrape(http: httpx.AsyncClient, url: str) -> tuple[str, float] | None:
    """(name, value) of the first of RESUMED_METRICS exposed; ("", 0) when none is; None
    while the endpoint does not answer."""
    try:
        response = await http.get(url)
    except httpx.HTTPError:
        return None
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        name, _, value = line.partition(" ")
        if name in RESUMED_METRICS:
            values[name] = float(value)
    return next(((name, values[name]) for name in RESUMED_METRICS if name in values), ("", 0.0))


async def get_item(client: KubeClient, namespace: str, name: str) -> Item | None:
    try:
        return await botsessions_in(client, namespace).get(name)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def count_done(client: KubeClient, namespace: str, done: Callable[[Item], bool]) -> int:
    items, _ = await list_raw(client, namespace)
    return sum(done(item) for item in items)


async def resource_versions(client: KubeClient, namespace: str) -> dict[str, str]:
    items, _ = await list_raw(client, namespace)
    return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}


async def spawn(process: ManagedProcess) -> tuple[float, asyncio.Task[Any]]:
    """Start the process in a thread (its start() blocks until it logged that it is up);
    return as soon as it is spawned: the monotonic time before the spawn and the start."""
    started = time.monotonic()
    starting = asyncio.create_task(asyncio.to_thread(process.start))
    while process.proc is None:
        if starting.done():
            await starting  # raises why it did not start
        await asyncio.sleep(0.005)
    return started, starting


def stop(process: ManagedProcess) -> tuple[float, int | None]:
    """SIGTERM; the seconds until the process exited and its exit code."""
    started = time.monotonic()
    process.stop(signal.SIGTERM, timeout=60)
    return round(time.monotonic() - started, 1), process.proc.returncode if process.proc else None


# --- the steps ---------------------------------------------------------------------------


async def first_start(bench: Bench, who: Contender, process: ManagedProcess, start: Start) -> None:
    """Start the operator on N objects it never saw; wait until all are synced / handled,
    then until its CPU is quiet."""
    args = bench.args
    n: int = args.sessions
    started, starting = await spawn(process)
    meter = Meter(pid_of(process), bench.others).start()
    mark = meter.begin("first start")
    try:
        await starting

        async def all_done() -> bool:
            return await count_done(bench.client, who.namespace, who.done) >= n

        waited = await wait_for(all_done, args.timeout, max(1.0, n / 2500), f"{who.name}: all")
        start.handled_s = None if waited is None else since(started)
        start.window = meter.end(mark)
        log(f"{who.name}: first start, all {n:,} done after {start.handled_s} s; {start.window}")
        await meter.quiet()
    finally:
        await meter.stop()


async def new_botsession(
    bench: Bench, who: Contender, key: SessionKey, create: Creator, started: float
) -> float | None:
    """Create one BotSession; seconds from `started` until who.done says it is handled."""
    await create(key)
    name = resource_name(key)

    async def done() -> bool:
        with contextlib.suppress(StoreUnavailable):
            item = await get_item(bench.client, who.namespace, name)
            return item is not None and who.done(item)
        return False

    waited = await wait_for(done, bench.args.timeout, 0.1, f"{who.name}: new {key}")
    return None if waited is None else since(started)


async def resumed_metric(
    url: str, counts: dict[str, int], timeout: float, started: float, out: Restart
) -> None:
    """Wait until the operator's counter of resumed objects reaches its count."""
    async with httpx.AsyncClient(timeout=2) as http:

        async def check() -> bool:
            scraped = await scrape(http, url)
            if scraped is None:
                return False
            if out.metrics_up_s is None:
                out.metrics_up_s = since(started)
            out.resumed_metric, out.resumed_count = scraped
            if not out.resumed_metric:
                log(f"  {url} exposes none of {RESUMED_METRICS}")
                return True
            return out.resumed_count >= counts[out.resumed_metric]

        waited = await wait_for(check, timeout, 0.2, " or ".join(RESUMED_METRICS))
    out.resumed_s = None if waited is None or not out.resumed_metric else since(started)


async def resumed_logged(
    path: Path, count: int, timeout: float, started: float, out: Restart
) -> None:
    counter = LogCounter(path, HANDLED_LINES)

    async def check() -> bool:
        out.resumed_logged = counter.count()
        return out.resumed_logged >= count

    waited = await wait_for(check, timeout, 0.5, "'Resuming/Creation is processed' lines")
    out.resumed_logged_s = None if waited is None else since(started)


async def resumed(
    bench: Bench,
    who: Contender,
    process: ManagedProcess,
    url: str | None,
    started: float,
    meter: Meter,
) -> Restart:
    """(b) and (c): wait for every resume signal, then close the restart's window."""
    out = Restart()
    mark = meter.begin("restart")
    n, timeout = bench.args.sessions, bench.args.timeout
    counts = dict(zip(RESUMED_METRICS, (n, n + len(who.creators)), strict=True))
    if url is not None:  # the operator: its metric (its sync, a kopf event handler, logs none)
        await resumed_metric(url, counts, timeout, started, out)
    else:  # the kopf floor: kopf's own lines
        await resumed_logged(process.log_path, n + len(who.creators), timeout, started, out)
    out.window = meter.end(mark)
    return out


async def until_up(starting: asyncio.Task[Any]) -> None:
    await starting


async def measure_restart(
    bench: Bench, who: Contender, process: ManagedProcess, url: str | None
) -> Restart:
    """Spawn the new process, create the new BotSessions at once, measure (a) to (c)."""
    keys = {label: SessionKey(NEW_BOT, f"new-{label}") for label in who.creators}
    started, starting = await spawn(process)
    meter = Meter(pid_of(process), bench.others).start()
    try:
        async with asyncio.TaskGroup() as group:
            news = {
                label: group.create_task(new_botsession(bench, who, keys[label], create, started))
                for label, create in who.creators.items()
            }
            restart = group.create_task(resumed(bench, who, process, url, started, meter))
            group.create_task(until_up(starting))
        out = restart.result()
        out.new_s = {label: task.result() for label, task in news.items()}
        log(f"{who.name}: restarted: {out}")
        mark = meter.begin("steady")
        await asyncio.sleep(bench.args.steady_seconds)
        out.steady = meter.end(mark)
    finally:
        await meter.stop()
    return out


async def timed_delete(bench: Bench, who: Contender) -> tuple[float | None, bool | None]:
    """(d) Delete the first old BotSession; seconds until it is gone (its finalizer ran)."""
    key = keys_for(1)[0]
    name = resource_name(key)
    started = time.monotonic()
    await botsessions_in(bench.client, who.namespace).delete(name, {})

    async def gone() -> bool:
        with contextlib.suppress(StoreUnavailable):
            return await get_item(bench.client, who.namespace, name) is None
        return False

    waited = await wait_for(gone, bench.args.timeout, 0.05, f"{who.name}: the deletion")
    seconds = None if waited is None else round(time.monotonic() - started, 2)
    cleaned = await bench.stores.in_redis([key]) == 0 if who.in_redis else None
    return seconds, cleaned


async def run_contender(
    bench: Bench, who: Contender, populate: Callable[[], Awaitable[float]]
) -> dict[str, Any]:
    """Populate, first start, SIGTERM, restart: every figure of one contender."""
    log(f"{who.name}: populating {bench.args.sessions:,} BotSessions")
    start = Start(round(await populate(), 1))
    log(f"{who.name}: populated in {start.populate_s} s; starting the operator")
    with contextlib.ExitStack() as stack:
        first, _ = who.make()
        stack.callback(first.close)
        stack.callback(keep_log, bench.args.keep_logs, first.log_path, f"{who.name}-first.log")
        await first_start(bench, who, first, start)
        before = await resource_versions(bench.client, who.namespace)
        stop_s, stop_code = stop(first)
        log(f"{who.name}: SIGTERM: exited after {stop_s} s with {stop_code}; restarting")
        process, url = who.make()
        stack.callback(process.close)
        stack.callback(keep_log, bench.args.keep_logs, process.log_path, f"{who.name}-restart.log")
        stack.callback(process.stop)
        out = await measure_restart(bench, who, process, url)
        out.stop_s, out.stop_code = stop_s, stop_code
        out.delete_s, out.delete_cleaned = await timed_delete(bench, who)
        after = await resource_versions(bench.client, who.namespace)
        out.rewritten = sum(1 for name, rv in before.items() if after.get(name, rv) != rv)
        log(f"{who.name}: deleted after {out.delete_s} s; {out.rewritten} old objects written")
    return {"first": start, "restart": out}


# --- the contenders ----------------------------------------------------------------------


def real_contender(bench: Bench) -> Contender:
    bare = KubeBotSessions(bench.client, NAMESPACE)

    def make() -> tuple[ManagedProcess, str | None]:
        port = free_port()
        env = {**bench.env, "BOTSESSION_METRICS_PORT": str(port)}
        process = OperatorProcess(bench.plane.kubeconfig, NAMESPACE, env)
        return process, f"http://127.0.0.1:{port}/metrics"

    async def by_api(key: SessionKey) -> None:
        await bench.service.report(key, ReportedState.CONNECTING, identity=IDENTITY)

    async def by_hand(key: SessionKey) -> None:
        await bare.create(key, IDENTITY)

    creators: dict[str, Creator] = {"api": by_api, "bare": by_hand}
    return Contender("operator", NAMESPACE, make, in_sync, creators, in_redis=True)


def floor_contender(bench: Bench) -> Contender:
    bare = KubeBotSessions(bench.client, FLOOR_NAMESPACE)

    def make() -> tuple[ManagedProcess, str | None]:
        return EmptyOperator(bench.plane.kubeconfig, FLOOR_NAMESPACE), None

    async def by_hand(key: SessionKey) -> None:
        await bare.create(key, IDENTITY)

    creators: dict[str, Creator] = {"bare": by_hand}
    return Contender("floor", FLOOR_NAMESPACE, make, handled_by_floor, creators, in_redis=False)


async def populate_real(bench: Bench) -> float:
    """N sessions reported connected through the API's use-case (no operator running)."""

    async def report(key: SessionKey) -> None:
        await bench.service.report(key, ReportedState.CONNECTED, identity=IDENTITY)

    return await bounded(keys_for(bench.args.sessions), report, bench.args.concurrency)


async def populate_floor(bench: Bench, status: Item) -> float:
    """N bare BotSessions, each given a real connected one's status (two patches)."""
    bare = KubeBotSessions(bench.client, FLOOR_NAMESPACE)
    bodies = connected_patches(status)

    async def one(key: SessionKey) -> None:
        record, _ = await bare.create(key, IDENTITY)
        for body in bodies:
            await patch_status(bench.client, FLOOR_NAMESPACE, record.name, body)

    return await bounded(keys_for(bench.args.sessions), one, bench.args.concurrency)


# --- the whole run -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_of(
    args: argparse.Namespace, plane: ControlPlane, redis: RedisServer, postgres: PostgresServer
) -> AsyncIterator[Bench]:
    """The clients, stores and the API's SessionService, closed at the end."""
    for namespace in (NAMESPACE, FLOOR_NAMESPACE):
        kubectl(plane.kubeconfig, "create", "namespace", namespace)
    database_url = postgres.url("asyncpg")
    settings = load_settings(namespace=NAMESPACE, database_url=database_url, redis_url=redis.url)
    async with contextlib.AsyncExitStack() as stack:
        client = KubeClient(load_kubeconfig(plane.kubeconfig), timeout=60)
        stack.push_async_callback(client.close)
        store = RedisStore(connect(redis.url, retries=2, timeout=timedelta(seconds=10)))
        stack.push_async_callback(store.close)
        sql = SqlStore(create_engine(database_url))
        stack.push_async_callback(sql.close)
        await upgrade(sql.engine)
        botsessions = KubeBotSessions(client, NAMESPACE, creator="api")
        others = {
            "kube-apiserver": pid_of(plane.apiserver),
            "etcd": pid_of(plane.etcd),
            "redis": pid_of(redis),
            "postgres": pid_of(postgres),
        }
        env = {"BOTSESSION_REDIS_URL": redis.url, "BOTSESSION_DATABASE_URL": database_url}
        service = SessionService(botsessions, store, sql, settings)
        yield Bench(args, plane, client, Stores(store, sql.engine), service, env, others)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    dirty = git("status", "--porcelain").splitlines()
    result: dict[str, Any] = {
        "args": vars(args),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(dirty),
        "loadavg_before": loadavg(),
    }
    async with servers() as (plane, redis, postgres), bench_of(args, plane, redis, postgres) as b:
        result["machine"] = versions(plane)
        result["operator"] = await run_contender(b, real_contender(b), lambda: populate_real(b))
        if not args.skip_floor:
            sample = await get_item(b.client, NAMESPACE, resource_name(keys_for(2)[1]))
            status = active_status(sample or {})
            floor = floor_contender(b)
            result["floor"] = await run_contender(b, floor, lambda: populate_floor(b, status))
    result["loadavg_after"] = loadavg()
    return result


# --- the report --------------------------------------------------------------------------

Row = tuple[str, str, str, str]


def met(value: float | None, target: float) -> str:
    if value is None:
        return "- **never**"
    return f"{value:,.1f}" + ("" if value <= target else " **missed**")


def exited(restart: Restart) -> str:
    return f"{fmt(restart.stop_s)} (exit {restart.stop_code})"


def fmt_count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def deleted(restart: Restart) -> str:
    if restart.delete_s is None:
        return "- **never**"
    text = f"{restart.delete_s:.2f}"
    if restart.delete_cleaned is not None:
        text += " (Redis hash gone)" if restart.delete_cleaned else " (**Redis hash left**)"
    return text


def window_rows(ours: Restart, floor: Restart | None, steady: float) -> list[Row]:
    def of(pick: Callable[[Restart], float | None]) -> tuple[str, str]:
        return fmt(pick(ours)), fmt(pick(floor)) if floor else "-"

    def cpu(r: Restart) -> float | None:
        return r.window.cpu_seconds if r.window else None

    def hwm(r: Restart) -> float | None:
        return r.window.hwm_mb if r.window else None

    def rss(r: Restart) -> float | None:
        return r.steady.rss_mb_end if r.steady else None

    def steady_cpu(r: Restart) -> float | None:
        return r.steady.cpu_pct if r.steady else None

    return [
        ("(c) CPU from the spawn until all resumed (CPU seconds)", "", *of(cpu)),
        ("(c) peak RSS until all resumed (MB, VmHWM)", "", *of(hwm)),
        (f"(c) RSS {steady:.0f} s after all resumed (MB, VmRSS)", "", *of(rss)),
        (f"(c) CPU over those {steady:.0f} s (% of one core)", "", *of(steady_cpu)),
    ]


def start_rows(n: int, ours: Start, floor: Start | None) -> list[Row]:
    def hwm(s: Start | None) -> str:
        return fmt(s.window.hwm_mb) if s and s.window else "-"

    return [
        (
            f"{n:,} BotSessions created with a connected status, no operator running (s)",
            "",
            f"{fmt(ours.populate_s)} (SessionService.report)",
            f"{fmt(floor.populate_s)} (create + 2 status patches)" if floor else "-",
        ),
        (
            "first start: all synced (operator) / handled (floor), from the spawn (s)",
            "",
            fmt(ours.handled_s),
            fmt(floor.handled_s) if floor else "-",
        ),
        ("first start: peak RSS (MB, VmHWM)", "", hwm(ours), hwm(floor)),
    ]


def restart_rows(n: int, ours: Restart, floor: Restart | None) -> list[Row]:
    target = f"<= {TARGET_NEW_SYNCED_S:.0f}"
    floor_new = met(floor.new_s.get("bare"), TARGET_NEW_SYNCED_S) if floor else "-"
    return [
        (
            "SIGTERM: the old process exited after (s)",
            "",
            exited(ours),
            exited(floor) if floor else "-",
        ),
        (
            "(a) new BotSession reported through the API at the spawn: synced after (s)",
            target,
            met(ours.new_s.get("api"), TARGET_NEW_SYNCED_S),
            "n/a (no API)",
        ),
        (
            "(a) new BotSession created bare at the spawn: synced / handled after (s)",
            target,
            met(ours.new_s.get("bare"), TARGET_NEW_SYNCED_S),
            floor_new,
        ),
        (
            f"(b) {ours.resumed_metric or 'the resumed counter'} reached {n:,}"
            f"{'' if ours.resumed_metric == RESUMED_METRICS[0] else ' + the new ones'} (s)",
            "",
            f"{fmt(ours.resumed_s)} (last read {fmt(ours.resumed_count)}; metrics up at "
            f"{fmt(ours.metrics_up_s)})",
            "n/a (no metrics)",
        ),
        (
            f"(b) {n:,} + the new ones 'Resuming/Creation is processed' lines logged (s)",
            "",
            f"{fmt(ours.resumed_logged_s)} ({ours.resumed_logged:,} lines)",
            f"{fmt(floor.resumed_logged_s)} ({floor.resumed_logged:,} lines)" if floor else "-",
        ),
    ]


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    n = args.sessions
    ours, floor = result["operator"], result.get("floor")
    rows = [
        *start_rows(n, ours["first"], floor["first"] if floor else None),
        *restart_rows(n, ours["restart"], floor["restart"] if floor else None),
        *window_rows(ours["restart"], floor["restart"] if floor else None, args.steady_seconds),
        (
            "(d) an old BotSession deleted after the restart: gone after (s)",
            "",
            deleted(ours["restart"]),
            deleted(floor["restart"]) if floor else "-",
        ),
        (
            "old BotSessions written (resourceVersion changed) over the restart",
            "",
            fmt_count(ours["restart"].rewritten),
            fmt_count(floor["restart"].rewritten) if floor else "-",
        ),
    ]
    lines = [
        "| measure | target | botsession operator | kopf floor (empty handlers) |",
        "| --- | --- | ---: | ---: |",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--sessions", type=int, default=10_000, help="BotSessions present")
    parser.add_argument("--concurrency", type=int, default=50, help="API requests at a time")
    parser.add_argument("--steady-seconds", type=float, default=30, help="after all resumed")
    parser.add_argument("--timeout", type=float, default=1800, help="per wait, seconds")
    parser.add_argument("--skip-floor", action="store_true", help="no kopf floor")
    parser.add_argument("--json", help="write every figure and the machine's facts here")
    parser.add_argument("--keep-logs", help="copy the operators' logs into this directory")
    args = parser.parse_args(argv)
    if args.sessions < 2:
        parser.error("--sessions must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(parse_args(argv), run, table)


if __name__ == "__main__":
    raise SystemExit(main())
