"""A hung Redis or database under load (issue 17, item 1): what the API answers while a store
keeps its connections open but answers nothing, with the time budgets and the circuit breaker
of sessions/adapters/guard.py, against a baseline whose budgets never fire.

  .venv/bin/python -m bench.hang_benchmark --json /tmp/hang.json      # 30 s hangs (~4 min)
  .venv/bin/python -m bench.hang_benchmark --quick                    # 5 s hangs (~2 min)

Everything is real and started here (stopped at the end) through bench/testbed.py's `stack`
(as in bench/api_benchmark.py): etcd + kube-apiserver, a private redis-server and a private
PostgreSQL (the API's database, migrated once), one token with the read and report scopes and
no rate limit. The API is a real `python -m api` subprocess (devstack.stack.ApiProcess:
uvicorn, one worker, INFO logging as in production).

Four runs: {Redis, database} hang x {guard, baseline}. `guard` leaves every setting at its
default (BOTSESSION_REDIS_BUDGET=500ms, BOTSESSION_DATABASE_BUDGET=1s); `baseline` sets both
budgets to 3600s so that they never fire, as before the guard (asyncpg's connect and command
timeouts follow the database budget, so they are 3600 s too; redis-py keeps its own socket
timeout and retries, BOTSESSION_REDIS_TIMEOUT 5 s x BOTSESSION_REDIS_RETRIES 5). Everything
else is identical. Each run gets a fresh API process, a fresh namespace and fresh keys:

1. seed: `--sessions` (50) sessions over 5 bots reported `connected` (with an identity)
   through POST .../report; one status read from Redis and one heartbeat are checked;
2. load: `--clients` (20) clients reading GET session-status/{botId}?userId= over the seeded
   sessions, 2 clients reporting new users `connecting`, 2 clients heartbeating the seeded
   sessions, each back to back on its own httpx.AsyncClient (one keep-alive connection, a
   120 s timeout: a slow baseline shows as latency, not as errors);
3. `--warmup` s (2) of load, discarded (a fresh API's first answers are slow), `--before` s
   (5) more, then the store frozen for `--hang-seconds` (30): SIGSTOP of redis-server, or of
   the postmaster and every backend (ManagedProcess.frozen, which sends SIGCONT on leaving,
   also on errors and Ctrl-C), then `--after` s (10) more; requests still open at the end
   are awaited. A request is `during` when it was open at any moment of the freeze (so one
   sent just before it and blocked by it counts), else `before` or `after`; the share of the
   store-down answer (below) counts only the `during` requests both sent and answered while
   the store was frozen (one open at the freeze may have had the store's answer already, one
   answered after the thaw may have it again).

Recorded per request: endpoint, phase, when it was sent (seconds from the freeze), status code
(none for a transport error or timeout), latency, X-Session-Source (status), redisPending and
databasePending (reports), Retry-After (heartbeats); after each run the API's
botsession_api_store_* metrics; CPU per process over the freeze (bench.measure.CpuMeter;
`others` is the machine's busy CPU from /proc/stat minus this benchmark's processes).

The table is the during phase per run and endpoint. Errors are transport errors, timeouts and
any 5xx except a heartbeat's 503 during a Redis hang (the documented answer). Targets (issue
17): a Redis hang: status p99 <= 1.5 s, 0 errors, every answer from the database; reports p99
<= 1.5 s, 0 errors, every one with redisPending; heartbeats p99 <= 1 s, every one 503 with
Retry-After. A database hang: status from Redis, reports with databasePending (the same
bounds), heartbeats 2xx within 1 s. A target is met on the p99 (the max is shown beside
it). Also: seconds from the freeze until the first answer from
the other store (status from the database; a report with databasePending), and from the thaw
until the hung store answered again (a status from Redis; a report written to the database).

`--json PATH` writes every figure and the machine's facts (nproc, memory, CPU, load average
before and after, server and library versions, the git commit), and every request to
PATH's stem + `.requests.csv.gz`. Exit code 2 with `--strict` when a guard run misses a target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.measure import (
    CpuMeter,
    git,
    keep_log,
    library_versions,
    loadavg,
    log,
    memory_total,
    others_busy,
    percentile,
    pid_of,
    timed_run,
    versions,
)
from bench.testbed import (
    Stack,
    client_for,
    heartbeat_path,
    report_path,
    sanity,
    seed,
    stack,
    status_path,
)
from devstack.kubectl import kubectl
from devstack.process import ManagedProcess
from devstack.stack import ApiProcess
from sessions.domain.model import SessionKey

BOTS = 5  # the seeded sessions spread over this many bots
REPORTERS = 2
HEARTBEATERS = 2
SEED_CONCURRENCY = 10
BASELINE = {"BOTSESSION_REDIS_BUDGET": "3600s", "BOTSESSION_DATABASE_BUDGET": "3600s"}
PHASES = ("before", "during", "after")  # and "warmup", left out of every figure
ENDPOINTS = ("status", "report", "heartbeat")
Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Spec:
    """One run: which store hangs, with the guard's budgets or the baseline's."""

    store: str  # redis | database
    variant: str  # guard | baseline

    @property
    def name(self) -> str:
        return f"{self.store}-{self.variant}"

    @property
    def other(self) -> str:
        return "database" if self.store == "redis" else "redis"

    def env(self) -> dict[str, str]:
        return dict(BASELINE) if self.variant == "baseline" else {}


SPECS = tuple(Spec(s, v) for s in ("redis", "database") for v in ("guard", "baseline"))


@dataclass
class Timeline:
    measure_from: float = math.inf  # the end of the warm-up
    freeze_at: float | None = None
    thaw_at: float | None = None
    stopping: bool = False

    def phase(self, sent: float) -> str:
        """The phase of a request sent at `sent` and answered now: `during` if it was open
        at any moment of the freeze."""
        if sent < self.measure_from:
            return "warmup"
        if self.freeze_at is None:
            return "before"
        if self.thaw_at is None or sent < self.thaw_at:
            return "during"
        return "after"


@dataclass(frozen=True)
class Sample:
    """One request."""

    endpoint: str
    phase: str
    sent: float  # time.monotonic()
    latency: float  # seconds
    status: int | None  # None: transport error or timeout
    source: str | None = None  # X-Session-Source
    redis_pending: bool | None = None
    database_pending: bool | None = None
    retry_after: str | None = None
    error: str | None = None

    @property
    def done(self) -> float:
        return self.sent + self.latency


# --- the load --------------------------------------------------------------------------


def answered(endpoint: str, timeline: Timeline, sent: float, response: httpx.Response) -> Sample:
    latency = time.monotonic() - sent
    body: dict[str, Any] = {}
    if endpoint == "report" and response.is_success:
        body = response.json()
    return Sample(
        endpoint,
        timeline.phase(sent),
        sent,
        latency,
        response.status_code,
        source=response.headers.get("X-Session-Source"),
        redis_pending=body.get("redisPending"),
        database_pending=body.get("databasePending"),
        retry_after=response.headers.get("Retry-After"),
    )


async def client_loop(
    url: str, token: str, endpoint: str, send: Send, timeline: Timeline, samples: list[Sample]
) -> None:
    """One client sending `endpoint` requests back to back until the timeline stops."""
    async with client_for(url, token, 1) as client:
        n = 0
        while not timeline.stopping:
            sent = time.monotonic()
            try:
                response = await send(client, n)
            except httpx.HTTPError as exc:
                latency = time.monotonic() - sent
                phase = timeline.phase(sent)
                error = exc.__class__.__name__
                samples.append(Sample(endpoint, phase, sent, latency, None, error=error))
                await asyncio.sleep(0.05)  # a dead API must not make this spin
            else:
                samples.append(answered(endpoint, timeline, sent, response))
            n += 1


def status_sender(keys: Sequence[SessionKey], offset: int) -> Send:
    def send(client: httpx.AsyncClient, n: int) -> Awaitable[httpx.Response]:
        return client.get(status_path(keys[(offset + n) % len(keys)]))

    return send


def heartbeat_sender(keys: Sequence[SessionKey], offset: int) -> Send:
    def send(client: httpx.AsyncClient, n: int) -> Awaitable[httpx.Response]:
        return client.post(heartbeat_path(keys[(offset + n) % len(keys)]))

    return send


def report_sender(bot_id: str, worker: int) -> Send:
    def send(client: httpx.AsyncClient, n: int) -> Awaitable[httpx.Response]:
        key = SessionKey(bot_id, f"new-{worker}-{n:06d}")
        return client.post(report_path(key), json={"state": "connecting"})

    return send


def load_clients(spec: Spec, keys: Sequence[SessionKey], clients: int) -> list[tuple[str, Send]]:
    spread = len(keys)
    out = [("status", status_sender(keys, i * spread // clients)) for i in range(clients)]
    out += [("report", report_sender(f"{spec.name}-new", i)) for i in range(REPORTERS)]
    out += [
        ("heartbeat", heartbeat_sender(keys, i * spread // HEARTBEATERS))
        for i in range(HEARTBEATERS)
    ]
    return out


async def freeze(
    server: ManagedProcess, timeline: Timeline, meter: CpuMeter, seconds: float
) -> dict[str, float]:
    """SIGSTOP the server for `seconds` (SIGCONT on leaving, whatever happens); the CPU of
    every process over the freeze."""
    mark = meter.begin()
    with server.frozen():
        timeline.freeze_at = time.monotonic()
        log(f"  frozen for {seconds:g} s")
        await asyncio.sleep(seconds)
        timeline.thaw_at = time.monotonic()
    log("  thawed")
    return meter.end(mark)


@dataclass
class Measured:
    samples: list[Sample] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)
    cpu_pct: dict[str, float] = field(default_factory=dict)


async def under_hang(
    url: str,
    token: str,
    server: ManagedProcess,
    meter: CpuMeter,
    load: list[tuple[str, Send]],
    args: argparse.Namespace,
) -> Measured:
    """The load before, during and after a freeze of `server`."""
    out = Measured()
    loops = [client_loop(url, token, e, s, out.timeline, out.samples) for e, s in load]
    task = asyncio.ensure_future(asyncio.gather(*loops))
    try:
        await asyncio.sleep(args.warmup)
        out.timeline.measure_from = time.monotonic()
        await asyncio.sleep(args.before)
        out.cpu_pct = await freeze(server, out.timeline, meter, args.hang_seconds)
        await asyncio.sleep(args.after)
        out.timeline.stopping = True
        log("  load stopped; waiting for the requests still open")
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return out


# --- one run ---------------------------------------------------------------------------


async def store_metrics(url: str, token: str) -> dict[str, float]:
    """The API's botsession_api_store_* series."""
    async with client_for(url, token, 1) as client:
        text = (await client.get("/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("botsession_api_store_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def seeded(spec: Spec, count: int) -> list[SessionKey]:
    return [SessionKey(f"{spec.name}-bot-{i % BOTS}", f"u{i:03d}") for i in range(count)]


async def one_run(st: Stack, spec: Spec, args: argparse.Namespace) -> dict[str, Any]:
    namespace = f"hang-{spec.name}"
    kubectl(st.plane.kubeconfig, "create", "namespace", namespace)
    server: ManagedProcess | None = st.redis if spec.store == "redis" else st.postgres
    assert server is not None
    keys = seeded(spec, args.sessions)
    env = {**st.env(args.log_level), **spec.env()}
    workdir = st.workdir / spec.name
    log(f"{spec.name}: API up in namespace {namespace} with {spec.env() or 'the defaults'}")
    with ApiProcess(workdir, st.plane.kubeconfig, namespace, env, st.tokens_file) as api:
        seconds = await seed(api.url, st.token, keys, SEED_CONCURRENCY)
        checks = await sanity(api.url, st.token, keys[0])
        log(f"  seeded {len(keys)} sessions in {seconds:.1f} s; load for {args.before:g} s")
        meter = CpuMeter({"api": pid_of(api), **st.roots()})
        load = load_clients(spec, keys, args.clients)
        measured = await under_hang(api.url, st.token, server, meter, load, args)
        metrics = await store_metrics(api.url, st.token)
        alive = api.running
        keep_log(args.keep_logs, api.log_path, f"api-{spec.name}.log")
    result = summarize_run(spec, measured)
    result.update(
        namespace=namespace,
        env=spec.env(),
        seed_seconds=round(seconds, 2),
        seed_checks={k: v for k, v in checks.items() if k != "body"},
        store_metrics=metrics,
        api_alive_at_the_end=alive,
        cpu_pct_during=measured.cpu_pct,
    )
    log(f"  {spec.name}: {len(measured.samples):,} requests; {result['recovery']}")
    return result


# --- figures ---------------------------------------------------------------------------


def is_error(spec: Spec, sample: Sample) -> bool:
    if sample.status is None:
        return True
    expected = spec.store == "redis" and sample.endpoint == "heartbeat" and sample.status == 503
    return sample.status >= 500 and not expected


def store_down_answer(spec: Spec, endpoint: str) -> tuple[str, Callable[[Sample], bool]]:
    """What the issue wants an endpoint to answer while `spec.store` hangs."""
    if endpoint == "status":
        return f"from {spec.other}", lambda s: s.status == 200 and s.source == spec.other
    if endpoint == "report" and spec.store == "redis":
        return "redisPending", lambda s: bool(s.redis_pending)
    if endpoint == "report":
        return "databasePending", lambda s: bool(s.database_pending)
    if spec.store == "redis":
        return "503 + Retry-After", lambda s: s.status == 503 and s.retry_after is not None
    return "2xx", lambda s: s.status is not None and 200 <= s.status < 300


def bound_s(endpoint: str) -> float:
    return 1.0 if endpoint == "heartbeat" else 1.5


def row(
    spec: Spec, endpoint: str, phase: str, samples: Sequence[Sample], tl: Timeline
) -> dict[str, Any]:
    """One endpoint in one phase. In the during phase the store-down answer's share counts
    the requests both sent and answered while the store was frozen: one open at the freeze
    may have had the store's answer already, one answered after the thaw may have the
    store's answer again."""
    assert tl.freeze_at is not None and tl.thaw_at is not None
    start, end = tl.freeze_at, tl.thaw_at
    mine = [s for s in samples if s.endpoint == endpoint and s.phase == phase]
    ms = [s.latency * 1000 for s in mine]
    label, wanted = store_down_answer(spec, endpoint)
    errors = sum(is_error(spec, s) for s in mine)
    judged = [s for s in mine if phase != "during" or (s.sent >= start and s.done <= end)]
    share = sum(wanted(s) for s in judged) / len(judged) if judged else None
    p99 = round(percentile(ms, 99), 1)
    codes = Counter("transport" if s.status is None else str(s.status) for s in mine)
    return {
        "endpoint": endpoint,
        "phase": phase,
        "requests": len(mine),
        "judged": len(judged),  # the share's denominator
        "answered": sum(s.status is not None for s in mine),
        "errors": errors,
        "codes": dict(sorted(codes.items())),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": p99,
        "max_ms": round(max(ms, default=0.0), 1),
        "store_down_answer": label,
        "share": None if share is None else round(share, 4),
        "bound_s": bound_s(endpoint),
        "met": bool(mine) and errors == 0 and share == 1.0 and p99 <= bound_s(endpoint) * 1000,
    }


def first_after(
    samples: Sequence[Sample], endpoint: str, since: float | None, ok: Callable[[Sample], bool]
) -> float | None:
    """Seconds from `since` until the first answer (by its arrival) that is `ok`."""
    if since is None:
        return None
    times = [
        s.done - since for s in samples if s.endpoint == endpoint and ok(s) and s.done >= since
    ]
    return round(min(times), 2) if times else None


def recovery(spec: Spec, measured: Measured) -> dict[str, float | None]:
    samples, tl = measured.samples, measured.timeline
    if spec.store == "redis":
        return {
            "first_status_from_database_after_freeze_s": first_after(
                samples, "status", tl.freeze_at, lambda s: s.source == "database"
            ),
            "first_status_from_redis_after_thaw_s": first_after(
                samples, "status", tl.thaw_at, lambda s: s.source == "redis"
            ),
            "first_heartbeat_200_after_thaw_s": first_after(
                samples, "heartbeat", tl.thaw_at, lambda s: s.status == 200
            ),
        }
    return {
        "first_report_database_pending_after_freeze_s": first_after(
            samples, "report", tl.freeze_at, lambda s: bool(s.database_pending)
        ),
        "first_report_written_to_database_after_thaw_s": first_after(
            samples, "report", tl.thaw_at, lambda s: s.database_pending is False
        ),
    }


def summarize_run(spec: Spec, measured: Measured) -> dict[str, Any]:
    tl = measured.timeline
    assert tl.freeze_at is not None and tl.thaw_at is not None
    last = max((s.done for s in measured.samples), default=tl.thaw_at)
    return {
        "run": spec.name,
        "store": spec.store,
        "variant": spec.variant,
        "frozen_s": round(tl.thaw_at - tl.freeze_at, 2),
        "last_answer_after_thaw_s": round(last - tl.thaw_at, 2),
        "rows": [row(spec, e, p, measured.samples, tl) for p in PHASES for e in ENDPOINTS],
        "recovery": recovery(spec, measured),
        "samples": measured.samples,  # to the CSV, not the JSON
        "freeze_at": tl.freeze_at,  # time.monotonic(): the CSV's zero
    }


# --- the report ------------------------------------------------------------------------


def fmt_share(r: dict[str, Any]) -> str:
    if r["share"] is None:
        return f"none answered while frozen ({r['store_down_answer']})"
    return f"{100 * r['share']:.1f} % of {r['judged']:,} {r['store_down_answer']}"


def during_table(runs: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| hang | variant | endpoint | requests | answered | errors | codes | p50 ms "
        "| p99 ms | max ms | store-down answer | target | met |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for run in runs:
        for r in run["rows"]:
            if r["phase"] != "during":
                continue
            codes = ", ".join(f"{k}: {v:,}" for k, v in r["codes"].items())
            target = f"p99 <= {r['bound_s']:g} s, 0 errors, all {r['store_down_answer']}"
            lines.append(
                f"| {run['store']} | {run['variant']} | {r['endpoint']} | {r['requests']:,} "
                f"| {r['answered']:,} | {r['errors']:,} | {codes} | {r['p50_ms']:,.1f} "
                f"| {r['p99_ms']:,.1f} | {r['max_ms']:,.1f} "
                f"| {fmt_share(r)} | {target} "
                f"| {'met' if r['met'] else 'MISSED'} |"
            )
    return "\n".join(lines)


def fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| run | requests before / during / after | p99 ms before / after (status) "
        "| other store after the freeze | store back after the thaw | last answer after thaw "
        "| store timeouts / skipped (metrics) | CPU % during: API, redis, postgres, bench, "
        "others, machine |",
        "| --- | --- | --- | --- | --- | ---: | --- | --- |",
    ]
    for run in runs:
        counts = {p: sum(r["requests"] for r in run["rows"] if r["phase"] == p) for p in PHASES}
        p99 = {r["phase"]: r["p99_ms"] for r in run["rows"] if r["endpoint"] == "status"}
        rec = list(run["recovery"].values())
        metrics = run["store_metrics"]
        store = run["store"]
        timeouts = metrics.get(f'botsession_api_store_timeouts_total{{store="{store}"}}', 0.0)
        skipped = metrics.get(f'botsession_api_store_skipped_total{{store="{store}"}}', 0.0)
        cpu = run["cpu_pct_during"]
        cpus = ", ".join(
            f"{cpu.get(n, 0.0):.0f}" for n in ("api", "redis", "postgres", "bench", "others")
        )
        lines.append(
            f"| {run['run']} | {' / '.join(f'{counts[p]:,}' for p in PHASES)} "
            f"| {p99['before']:,.1f} / {p99['after']:,.1f} | {fmt_s(rec[0])} | {fmt_s(rec[1])} "
            f"| {run['last_answer_after_thaw_s']:.2f} s | {timeouts:,.0f} / {skipped:,.0f} "
            f"| {cpus}, {cpu.get('machine', 0.0):.0f} |"
        )
    return "\n".join(lines)


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (
        f"machine: {m['cpu_model']}, {m['nproc']} cores, {memory_total(m)} memory, kernel "
        f"{m['kernel']}; Python {m['python']}, uvicorn {m['uvicorn']}, redis-py {m['redis']}, "
        f"asyncpg {m['asyncpg']}, httpx {m['httpx']}; {m['redis_server']}; {m['postgres']}; "
        f"commit {result['commit']} (+{result['uncommitted_files']} uncommitted files)\n"
        f"load average before: {result['loadavg_before']}; after: {result['loadavg_after']}; "
        f"other processes before the run: {result['others_before_pct']:.0f} % of a core"
    )


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    runs = result["runs"]
    return "\n".join(
        [
            f"During a {args.hang_seconds:g} s hang, {args.clients} status clients, "
            f"{REPORTERS} reporters, {HEARTBEATERS} heartbeaters; "
            "guard = default budgets (Redis 500 ms, database 1 s), baseline = 3600 s.",
            "",
            during_table(runs),
            "",
            runs_table(runs),
            "",
            machine_line(result),
        ]
    )


# --- output files ----------------------------------------------------------------------


CSV_COLUMNS = (
    *("run", "endpoint", "phase", "sent_after_freeze_s", "latency_ms", "status"),
    *("source", "redisPending", "databasePending", "retryAfter", "error"),
)


def write_requests(path: Path, runs: Sequence[dict[str, Any]]) -> None:
    with gzip.open(path, "wt", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for run in runs:
            zero = run["freeze_at"]
            for s in run["samples"]:
                writer.writerow(
                    (
                        *(run["run"], s.endpoint, s.phase, f"{s.sent - zero:.4f}"),
                        *(f"{s.latency * 1000:.2f}", s.status, s.source, s.redis_pending),
                        *(s.database_pending, s.retry_after, s.error),
                    )
                )


def write_json(path: Path, result: dict[str, Any]) -> Path:
    requests = path.with_name(path.stem + ".requests.csv.gz")
    write_requests(requests, result["runs"])
    out = dict(result)
    internal = ("samples", "freeze_at")
    out["runs"] = [{k: v for k, v in r.items() if k not in internal} for r in result["runs"]]
    out["requests_csv"] = str(requests)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return requests


# --- main ------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    dirty = git("status", "--porcelain").splitlines()
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "argv": sys.argv,
        "args": vars(args),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(dirty),
        "loadavg_before": loadavg(),
        "others_before_pct": await others_busy(),
    }
    runs: list[dict[str, Any]] = []
    async with stack(args) as st:
        machine = versions(st.plane)
        machine["redis_server"] = machine.pop("redis")  # "redis" below is redis-py
        result["machine"] = {**machine, **library_versions()}
        for spec in SPECS:
            if args.only and spec.name not in args.only:
                continue
            runs.append(await one_run(st, spec, args))
            await asyncio.sleep(2)  # the old API's connections close
    result["runs"] = runs
    result["loadavg_after"] = loadavg()
    result["finished"] = datetime.now(UTC).isoformat()
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--hang-seconds", type=float, help="how long a store is frozen (30)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load, discarded")
    parser.add_argument(
        "--before", type=float, help="seconds of load after the warm-up, before the freeze (5)"
    )
    parser.add_argument("--after", type=float, help="seconds of load after the thaw (10)")
    parser.add_argument("--clients", type=int, default=20, help="session-status clients")
    parser.add_argument("--sessions", type=int, default=50, help="sessions seeded per run")
    parser.add_argument("--quick", action="store_true", help="5 s hangs, 3 s before, 5 s after")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SPECS], help="these runs")
    parser.add_argument("--log-level", default="INFO", help="BOTSESSION_API_LOG_LEVEL")
    parser.add_argument("--json", help="write every figure here, every request beside it")
    parser.add_argument("--keep-logs", help="copy the API's logs into this directory")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a guard run misses")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, short in (("hang_seconds", 30, 5), ("before", 5, 3), ("after", 10, 5)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.clients < 1 or args.sessions < BOTS:
        parser.error(f"--clients must be positive and --sessions at least {BOTS}")
    args.database = "postgresql"  # what testbed.stack starts
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = timed_run(lambda: run(args))
    print(report(result, args))
    print(f"total: {result['total_seconds']} s")
    if args.json:
        requests = write_json(Path(args.json), result)
        print(f"JSON: {args.json}; every request: {requests}")
    missed = [
        f"{run['run']} {r['endpoint']}"
        for run in result["runs"]
        for r in run["rows"]
        if r["phase"] == "during" and run["variant"] == "guard" and not r["met"]
    ]
    if missed:
        print(f"guard runs missing a target: {', '.join(missed)}", file=sys.stderr)
    return 2 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
