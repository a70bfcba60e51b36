"""The REST API under load: session-status against a bare FastAPI endpoint, heartbeats and
reports per second, and a reconnect storm, driven by wrk (Debian package `wrk`).

Everything is real and started here (stopped at the end): etcd + kube-apiserver
(devstack.controlplane), a private redis-server, a private PostgreSQL (or SQLite with
`--database sqlite`), and each contender as a subprocess `python -m bench.bare_app {bare,api}`:
uvicorn with the same settings for both (`--workers`, `--loop`, `--http`, no access log, the
API's JSON logging at `--log-level` for both), one contender running at a time.

  .venv/bin/python bench/api_benchmark.py --json /tmp/api-bench.json     # full (~4 min)
  .venv/bin/python bench/api_benchmark.py --duration 5 --warmup 2 \\
      --sessions 100 --storm 50                                         # quick check

Steps (namespace `bench`, one token with the read and report scopes):

1. seed: the API started, `--sessions` sessions over `--bots` bots reported `connected` with an
   identity through the API (POST .../report: creates the BotSession, first phase and
   connected), plus the report warm-up's own sessions; the API stopped.
2. bare: `GET /bare` (a constant JSON of a session-status answer's size) with wrk,
   `--warmup` s discarded, then `--duration` s measured; the bare app stopped.
3. the API started again, the same warm-up and duration for each of:
   a. `GET /v1/whatsapp/session-status/{botId}?userId=` cycling over the seeded sessions
      (Redis only);
   b. `GET /v1/whatsapp/session-status/{botId}` cycling over the bots (the bot's most recent
      session, the requirements' form; one script call in Redis); a and b are each held to
      the issue's targets, >= 70 % of the bare throughput and p99 <= 20 ms;
   c. `POST .../heartbeat` cycling over the seeded sessions (Redis only);
   d. `POST .../report` cycling every session through disconnected -> connecting -> connected,
      so every request is one real transition (GET + status PATCH through kube-apiserver,
      Redis, a row and a history row in the database); each wrk thread owns its own sessions
      so a session's reports stay in order. The warm-up runs on other sessions. Transitions
      are counted from the database's history rows.
4. storm: `--storm` new bots (one session each) report `connecting` then `connected`, all at
   once, each on a new connection of its own (a minimal HTTP/1.1 client on asyncio streams:
   httpx's pool costs more CPU than the API at 500 connections): seconds until every answer,
   seconds until session-status shows every one `active`, per-request latency; then the same
   bots again (a reconnect: connecting on an active session is active -> inactive ->
   connecting).

The API sets a new session's first phase itself (sessions.service: report), so the operator
is not needed for any of this; `--operator` runs it beside the API in step 3 as in production.

CPU is (utime + stime) from /proc/<pid>/stat of each server's process tree over each measured
window, as % of one core (the machine's total from /proc/stat, wrk's from its rusage). Exit
code 1 when a run had non-2xx answers or socket errors (they fail the targets too), 2 with
`--strict` when a target is missed, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import resource
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: bench/ is sys.path[0], not the repo
    sys.path.insert(0, str(REPO))

from bench.operator_benchmark import (  # noqa: E402
    CLK_TCK,
    bounded,
    cpu_seconds,
    loadavg,
    log,
    memory_kb,
    pid_of,
    versions,
)
from devstack.controlplane import ControlPlane  # noqa: E402
from devstack.kubectl import install_crds, kubectl  # noqa: E402
from devstack.operator_process import OperatorProcess  # noqa: E402
from devstack.postgres_server import PostgresServer  # noqa: E402
from devstack.process import DevstackError, ManagedProcess, free_port, wait_until  # noqa: E402
from devstack.redis_server import RedisServer  # noqa: E402
from sessions.migrate import upgrade  # noqa: E402
from sessions.model import SessionKey  # noqa: E402
from sessions.sql_store import create_engine  # noqa: E402

NAMESPACE = "bench"
V1 = "/v1/whatsapp"
REPORT_CYCLE = ("disconnected", "connecting", "connected")  # one transition each, from active
WRK_MARK = "WRK-JSON "

# the targets
TARGET_RATIO = 0.70
TARGET_P99_MS = 20.0


# --- /proc -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    comm: str
    ppid: int
    cpu: float  # utime + stime + cutime + cstime (its reaped children too), seconds


def processes() -> dict[int, Proc]:
    """Every process now, from /proc/<pid>/stat."""
    out: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks = sum(int(v) for v in fields[11:15])
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                out[int(entry.name)] = Proc(comm, int(fields[1]), ticks / CLK_TCK)
    return out


def tree(pid: int, procs: dict[int, Proc]) -> set[int]:
    """The process and all its descendants (uvicorn workers, PostgreSQL backends)."""
    children: dict[int, list[int]] = {}
    for child, proc in procs.items():
        children.setdefault(proc.ppid, []).append(child)
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current in procs and current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return found


def tree_cpu(pid: int, procs: dict[int, Proc]) -> float:
    """CPU of a process tree: with cutime/cstime, the end value minus the start value is
    right even when children (PostgreSQL backends) come and go within the window."""
    return sum(procs[member].cpu for member in tree(pid, procs))


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine, all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK  # all but idle and iowait


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMark:
    start: float
    procs: dict[int, Proc]
    machine_busy: float
    children: float
    own: float


class CpuMeter:
    """CPU of named process trees over a window, and of wrk, this process, everything else on
    the machine (`others`: processes outside this benchmark, e.g. someone else's tests) and
    the machine as a whole (/proc/stat, so kernel work no process is charged for too)."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = dict(roots)

    def rss_mb(self, name: str) -> tuple[float, float]:
        """(VmRSS, VmHWM) of a named process tree, in MB (summed over its processes)."""
        rss = hwm = 0
        for member in tree(self.roots[name], processes()):
            with contextlib.suppress(OSError):
                now, peak = memory_kb(member)
                rss, hwm = rss + now, hwm + peak
        return round(rss / 1024, 1), round(hwm / 1024, 1)

    def begin(self) -> CpuMark:
        return CpuMark(
            time.monotonic(), processes(), machine_cpu(), children_cpu(), time.process_time()
        )

    def end(self, mark: CpuMark) -> dict[str, float]:
        """% of one core per name, plus `wrk`, `bench`, `others` and `machine`."""
        procs, busy = processes(), machine_cpu()
        seconds = time.monotonic() - mark.start

        def pct(used: float) -> float:
            return round(100 * used / seconds, 1)

        out = {
            name: pct(tree_cpu(pid, procs) - tree_cpu(pid, mark.procs))
            for name, pid in self.roots.items()
        }
        out["wrk"] = pct(children_cpu() - mark.children)
        out["bench"] = pct(time.process_time() - mark.own)
        ours = tree(os.getpid(), procs) | tree(os.getpid(), mark.procs)
        foreign = [
            procs[p].cpu - mark.procs[p].cpu if p in mark.procs else procs[p].cpu
            for p in procs
            if p not in ours
        ]
        out["others"] = pct(sum(foreign))
        out["machine"] = pct(busy - mark.machine_busy)
        return out

    def top_others(self, mark: CpuMark, count: int = 3) -> list[str]:
        """The busiest processes outside this benchmark since `mark` (for the log)."""
        procs, seconds = processes(), time.monotonic() - mark.start
        ours = tree(os.getpid(), procs)
        used = {
            p: procs[p].cpu - (mark.procs[p].cpu if p in mark.procs else 0.0)
            for p in procs
            if p not in ours
        }
        top = sorted(used, key=used.__getitem__, reverse=True)[:count]
        return [f"{procs[p].comm}[{p}] {100 * used[p] / seconds:.0f} %" for p in top]


# --- wrk -------------------------------------------------------------------------------

LUA = string.Template(
    """-- $name: generated by bench/api_benchmark.py
local method = "$method"
local threads = $threads
local auth = "Bearer $token"
local paths = {
$paths
}
local bodies = {
$bodies
}
local counter = 0

-- each thread gets its own id, and with it its own share of the paths: a session is only
-- ever requested by one thread, in order
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

-- request k of a thread: its path k % n, with body (k // n) % #bodies (bodies cycle per round)
function init(args)
  local headers = { ["Authorization"] = auth }
  if #bodies > 0 then headers["Content-Type"] = "application/json" end
  local mine = {}
  for i = 1, #paths do
    if (i - 1) % threads == id then mine[#mine + 1] = paths[i] end
  end
  prepared = {}
  for r = 1, math.max(#bodies, 1) do
    for j = 1, #mine do
      prepared[#prepared + 1] = wrk.format(method, mine[j], headers, bodies[r])
    end
  end
  sent = 0
end

function request()
  local r = prepared[sent % #prepared + 1]
  sent = sent + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '$mark{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""
)


@dataclass(frozen=True)
class Load:
    """What one wrk run requests."""

    name: str
    method: str
    paths: tuple[str, ...]
    bodies: tuple[str, ...] = ()

    def script(self, token: str, threads: int) -> str:
        if len(self.paths) < threads:
            raise ValueError(f"{self.name}: {len(self.paths)} paths for {threads} threads")
        return LUA.substitute(
            name=self.name,
            method=self.method,
            threads=threads,
            token=token,
            paths=",\n".join(f'  "{p}"' for p in self.paths),
            bodies=",\n".join(f"  '{b}'" for b in self.bodies),
            mark=WRK_MARK,
        )


@dataclass
class Run:
    """One measured run: wrk's figures (or the storm's), and CPU over its window."""

    name: str
    requests: int
    seconds: float
    rps: float
    latency_ms: dict[str, float]  # p50, p90, p99, p99.9, max, mean
    non_2xx: int
    socket_errors: dict[str, int]
    cpu_pct: dict[str, float] = field(default_factory=dict)  # % of one core
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def cpu_ms_per_request(self) -> dict[str, float]:
        if not self.requests:
            return {}
        return {
            name: round(pct / 100 * self.seconds * 1000 / self.requests, 3)
            for name, pct in self.cpu_pct.items()
        }


def parse_wrk(name: str, stdout: str) -> Run:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(WRK_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary for {name}:\n{stdout}")
    raw = json.loads(line[len(WRK_MARK) :])
    seconds = raw["duration_us"] / 1e6

    def ms(key: str) -> float:
        return round(float(raw[key]) / 1000, 2)

    return Run(
        name=name,
        requests=raw["requests"],
        seconds=round(seconds, 2),
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        latency_ms={
            "p50": ms("p50_us"),
            "p90": ms("p90_us"),
            "p99": ms("p99_us"),
            "p99.9": ms("p999_us"),
            "max": ms("max_us"),
            "mean": ms("mean_us"),
        },
        non_2xx=raw["status"],
        socket_errors={k: raw[k] for k in ("connect", "read", "write", "timeout")},
        extra={"bytes": raw["bytes"]},
    )


class Wrk:
    """wrk -t -c -d --latency with a generated Lua script, against one base URL."""

    def __init__(self, args: argparse.Namespace, token: str, workdir: Path) -> None:
        self.binary = shutil.which("wrk")
        if self.binary is None:
            raise DevstackError("wrk was not found: apt-get install wrk (scripts/bootstrap.sh)")
        self.args = args
        self.token = token
        self.workdir = workdir

    def version(self) -> str:
        assert self.binary is not None
        out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]

    async def once(self, url: str, load: Load, seconds: float) -> tuple[str, str]:
        assert self.binary is not None
        script = self.workdir / f"{load.name}.lua"
        script.write_text(load.script(self.token, self.args.threads))
        argv = [
            self.binary,
            f"-t{self.args.threads}",
            f"-c{self.args.connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            f"--timeout={self.args.wrk_timeout}s",
            "-s",
            str(script),
            url,
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()}")
        return out.decode(), err.decode()

    async def warm(self, url: str, load: Load) -> None:
        """A warm-up run, discarded."""
        if self.args.warmup > 0:
            await self.once(url, load, self.args.warmup)

    async def measure(self, url: str, load: Load, meter: CpuMeter, warm: bool = True) -> Run:
        """The warm-up on the same load (unless warm=False), then the measured run."""
        if warm:
            await self.warm(url, load)
        mark = meter.begin()
        out, _ = await self.once(url, load, self.args.duration)
        cpu = meter.end(mark)
        run = parse_wrk(load.name, out)
        run.cpu_pct = cpu
        run.extra["others_top"] = meter.top_others(mark)
        run.extra["server_rss_mb"], run.extra["server_hwm_mb"] = meter.rss_mb("server")
        run.extra["wrk_output"] = out
        log(
            f"  {load.name}: {run.rps:,.0f} req/s, p99 {run.latency_ms['p99']} ms, "
            f"non-2xx {run.non_2xx}, socket errors {sum(run.socket_errors.values())}; CPU {cpu}"
        )
        return run


# --- the servers -----------------------------------------------------------------------


class AppServer(ManagedProcess):
    """`python -m bench.bare_app {bare,api}`: a contender under uvicorn."""

    name = "app"

    def __init__(
        self,
        app: str,
        args: argparse.Namespace,
        env: dict[str, str],
        profile: Path | None = None,
    ) -> None:
        super().__init__()
        self.log_path = self.workdir / f"{app}.log"
        self.app = app
        self.args = args
        self.env = env
        self.profile = profile  # run under pyinstrument, write here (the suffix picks the format)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        argv = [sys.executable, "-m"]
        if self.profile is not None:
            argv += ["pyinstrument", "-o", str(self.profile), "-m"]
        argv += ["bench.bare_app", self.app, "--port", str(self.port)]
        argv += ["--workers", str(self.args.workers)]
        argv += ["--loop", self.args.loop, "--http", self.args.http]
        self._spawn(argv, env=self.env)
        path = "/bare" if self.app == "bare" else "/readyz"

        def ready() -> bool:
            return httpx.get(self.url + path, timeout=2).status_code == 200

        wait_until(ready, 90, f"the {self.app} app", self.proc, self.log_path)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.profile is not None:  # SIGINT: uvicorn shuts down, pyinstrument writes
            sig, timeout = signal.SIGINT, 300
        super().stop(sig, timeout)


@dataclass
class Stack:
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


@contextlib.asynccontextmanager
async def stack(args: argparse.Namespace) -> AsyncIterator[Stack]:
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
        install_crds(plane.kubeconfig, REPO / "crds" / "botsessions.yaml")
        kubectl(plane.kubeconfig, "create", "namespace", NAMESPACE)
        engine = create_engine(database_url)
        try:
            await upgrade(engine)  # once, here: the API must not race itself with --workers
        finally:
            await engine.dispose()
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
        yield Stack(plane, redis_server, postgres, database_url, workdir, token, tokens_file)


@contextlib.contextmanager
def serving(
    app: str, args: argparse.Namespace, env: dict[str, str], profile: Path | None = None
) -> Iterator[AppServer]:
    server = AppServer(app, args, env, profile)
    with server:
        log(f"{app} app up at {server.url}")
        yield server
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            server.stop()
            shutil.copy(server.log_path, Path(args.keep_logs) / f"{app}-{time.time():.0f}.log")


async def wait_quiet(pid: int, limit: float = 180, threshold_pct: float = 5.0) -> float:
    """Wait until the process's CPU over 5 s is under the threshold (the operator's start)."""
    deadline = time.monotonic() + limit
    pct = 100.0
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(5)
        pct = 100 * (cpu_seconds(pid) - before) / 5
        if pct < threshold_pct:
            break
    return pct


# --- the sessions ----------------------------------------------------------------------


def bot_name(n: int, prefix: str = "bench") -> str:
    return f"{prefix}-bot-{n:03d}"


def seeded_keys(count: int, bots: int, prefix: str = "bench") -> list[SessionKey]:
    return [SessionKey(bot_name(i % bots, prefix), f"u{i:06d}") for i in range(count)]


def storm_keys(count: int) -> list[SessionKey]:
    return [SessionKey(f"storm-bot-{i:04d}", "u0") for i in range(count)]


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
        beat = await client.post(f"{V1}/sessions/{key.bot_id}/{key.user_id}/heartbeat")
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


async def history_rows(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM session_history")
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


# --- the loads -------------------------------------------------------------------------


def status_load(keys: Sequence[SessionKey]) -> Load:
    return Load("session-status", "GET", tuple(status_path(k) for k in keys))


def bot_status_load(bots: int) -> Load:
    paths = tuple(f"{V1}/session-status/{bot_name(b)}" for b in range(bots))
    return Load("session-status-bot", "GET", paths)


def heartbeat_load(keys: Sequence[SessionKey]) -> Load:
    paths = tuple(f"{V1}/sessions/{k.bot_id}/{k.user_id}/heartbeat" for k in keys)
    return Load("heartbeat", "POST", paths)


def report_load(keys: Sequence[SessionKey], name: str = "report") -> Load:
    bodies = tuple(json.dumps({"state": s}) for s in REPORT_CYCLE)
    return Load(name, "POST", tuple(report_path(k) for k in keys), bodies)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class RawConnection:
    """One keep-alive HTTP/1.1 connection with the least client-side work: the storm's 500
    bots at once would make httpx's pool the bottleneck (it was: 60 % of a core, 65 req/s)."""

    def __init__(self, url: str, token: str) -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        self.head = f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Self:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\n{self.head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


@dataclass
class StormTally:
    latencies: list[float] = field(default_factory=list)  # per request, without connecting
    connects: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport: int = 0

    def latency_ms(self) -> dict[str, float]:
        ms = [v * 1000 for v in self.latencies]
        out = {f"p{p:g}": round(percentile(ms, p), 2) for p in (50, 90, 99, 99.9)}
        out["max"] = round(max(ms, default=0.0), 2)
        out["mean"] = round(sum(ms) / len(ms), 2) if ms else 0.0
        return out


async def storm_bot(url: str, token: str, i: int, key: SessionKey, tally: StormTally) -> None:
    """A bot (re)starting: a new connection, connecting, then connected."""
    bodies = [{"state": "connecting"}, {"state": "connected", **identity(i)}]
    started = time.perf_counter()
    conn = RawConnection(url, token)
    try:
        await conn.open()
        tally.connects.append(time.perf_counter() - started)
        for body in bodies:
            started = time.perf_counter()
            status, _ = await conn.request("POST", report_path(key), json.dumps(body).encode())
            tally.latencies.append(time.perf_counter() - started)
            tally.statuses[status] += 1
            if not 200 <= status < 300:
                return
    except (OSError, asyncio.IncompleteReadError, ValueError):
        tally.transport += 1
    finally:
        await conn.close()


async def storm(
    name: str, url: str, token: str, keys: Sequence[SessionKey], meter: CpuMeter
) -> Run:
    """Every bot reports connecting then connected, all at once, each on its own new
    connection; then session-status is polled until every session is active."""
    tally = StormTally()
    mark = meter.begin()
    await asyncio.gather(*(storm_bot(url, token, i, k, tally) for i, k in enumerate(keys)))
    answered = time.monotonic() - mark.start
    cpu = meter.end(mark)
    others_top = meter.top_others(mark)
    rss, hwm = meter.rss_mb("server")
    active_s, polls = await all_active(url, token, keys, mark.start)
    requests = len(tally.latencies) + tally.transport
    run = Run(
        name=name,
        requests=requests,
        seconds=round(answered, 2),
        rps=round(requests / answered, 1),
        latency_ms=tally.latency_ms(),
        non_2xx=sum(n for code, n in tally.statuses.items() if not 200 <= code < 300),
        socket_errors={"transport": tally.transport},
        cpu_pct=cpu,
        extra={
            "bots": len(keys),
            "all_answered_s": round(answered, 2),
            "all_active_s": None if active_s is None else round(active_s, 2),
            "status_polls": polls,
            "connect_ms_p50": round(percentile([c * 1000 for c in tally.connects], 50), 2),
            "connect_ms_max": round(max(tally.connects, default=0.0) * 1000, 2),
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
            "others_top": others_top,
            "server_rss_mb": rss,
            "server_hwm_mb": hwm,
        },
    )
    log(f"  {name}: {run.extra}, p99 {run.latency_ms['p99']} ms; CPU {cpu}")
    return run


async def not_active(url: str, token: str, keys: Sequence[SessionKey]) -> list[SessionKey]:
    """The keys whose session-status is not `active` (one pass, 32 connections)."""
    queue = list(keys)
    found: list[SessionKey] = []

    async def worker() -> None:
        conn = await RawConnection(url, token).open()
        try:
            while queue:
                key = queue.pop()
                status, body = await conn.request("GET", status_path(key))
                if status != 200 or json.loads(body).get("status") != "active":
                    found.append(key)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(min(32, len(queue)))))
    return found


async def all_active(
    url: str, token: str, keys: Sequence[SessionKey], started: float, timeout: float = 120
) -> tuple[float | None, int]:
    """Seconds from `started` until session-status says active for every key (None after
    the timeout), and how many polling passes that took."""
    pending = list(keys)
    passes = 0
    while pending and time.monotonic() - started < timeout:
        passes += 1
        pending = await not_active(url, token, pending)
        if pending:
            await asyncio.sleep(0.1)
    return (None if pending else time.monotonic() - started), passes


async def others_busy(seconds: float = 3.0) -> float:
    """CPU of everything else on the machine before the run (% of one core), logged."""
    meter = CpuMeter({})
    mark = meter.begin()
    await asyncio.sleep(seconds)
    pct = meter.end(mark)["others"]
    top = ", ".join(meter.top_others(mark))
    log(f"before the run, other processes use {pct:.0f} % of a core ({top})")
    return pct


# --- the steps -------------------------------------------------------------------------


async def step_seed(args: argparse.Namespace, st: Stack, env: dict[str, str]) -> dict[str, Any]:
    keys = seeded_keys(args.sessions, args.bots)
    warm = seeded_keys(args.warm_sessions, args.bots, prefix="warm")
    with serving("api", args, env) as api:
        log(f"seeding {len(keys):,} sessions over {args.bots} bots, {len(warm):,} for warm-ups")
        seconds = await seed(api.url, st.token, keys + warm, args.connections)
        checks = await sanity(api.url, st.token, keys[0])
    rate = (len(keys) + len(warm)) / seconds
    log(f"  seeded in {seconds:.1f} s ({rate:.0f} sessions/s); {checks}")
    return {
        "sessions": len(keys),
        "warm_sessions": len(warm),
        "bots": args.bots,
        "seconds": round(seconds, 1),
        "sessions_per_second": round(rate, 1),
        "checks": checks,
    }


async def step_bare(args: argparse.Namespace, st: Stack, wrk: Wrk) -> Run:
    paths = tuple("/bare" for _ in range(args.threads))
    with serving("bare", args, st.env(args.log_level)) as bare:
        meter = CpuMeter({"server": pid_of(bare), **st.roots()})
        return await wrk.measure(bare.url, Load("bare", "GET", paths), meter)


async def step_profile(
    args: argparse.Namespace, st: Stack, wrk: Wrk, env: dict[str, str]
) -> dict[str, Any]:
    """session-status once more, with the API under pyinstrument (slower: not compared)."""
    keys = seeded_keys(args.sessions, args.bots)
    profile = Path(args.profile)  # made absolute by parse_args
    with serving("api", args, env, profile) as api:
        meter = CpuMeter({"server": pid_of(api), **st.roots()})
        run = await wrk.measure(api.url, status_load(keys), meter)
    log(f"  the profile is in {profile}")
    return {"path": str(profile), "run": asdict(run)}


async def step_api(args: argparse.Namespace, st: Stack, wrk: Wrk, env: dict[str, str]) -> list[Run]:
    keys = seeded_keys(args.sessions, args.bots)
    warm = seeded_keys(args.warm_sessions, args.bots, prefix="warm")
    runs: list[Run] = []
    with contextlib.ExitStack() as exits:
        roots = st.roots()
        if args.operator:
            operator = exits.enter_context(OperatorProcess(st.plane.kubeconfig, NAMESPACE, env))
            roots["operator"] = pid_of(operator)
            quiet = await wait_quiet(roots["operator"])
            log(f"operator up; quiet at {quiet:.1f} % of one core")
        api = exits.enter_context(serving("api", args, env))
        meter = CpuMeter({"server": pid_of(api), **roots})
        runs.append(await wrk.measure(api.url, status_load(keys), meter))
        runs.append(await wrk.measure(api.url, bot_status_load(args.bots), meter))
        runs.append(await wrk.measure(api.url, heartbeat_load(keys), meter))
        # the reports' warm-up runs on sessions of its own: the measured sessions start their
        # cycle from active, as the seed left them
        await wrk.warm(api.url, report_load(warm, "report-warmup"))
        await asyncio.sleep(1)  # requests wrk cut off at its end may still be writing
        before = await history_rows(st.database_url)
        run = await wrk.measure(api.url, report_load(keys), meter, warm=False)
        await asyncio.sleep(1)  # requests wrk cut off at its end may still be writing
        run.extra["transitions"] = await history_rows(st.database_url) - before
        runs.append(run)
        if args.storm:
            keys = storm_keys(args.storm)
            for name in ("storm-connect", "storm-reconnect"):
                before = await history_rows(st.database_url)
                run = await storm(name, api.url, st.token, keys, meter)
                run.extra["transitions"] = await history_rows(st.database_url) - before
                runs.append(run)
    return runs


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "argv": sys.argv,
        "args": vars(args),
        "loadavg_before": loadavg(),
    }
    result["others_before_pct"] = await others_busy()
    async with stack(args) as st:
        wrk = Wrk(args, st.token, st.workdir)
        result["machine"] = {
            **versions(st.plane),
            **library_versions(),
            "wrk": wrk.version(),
            "database": args.database,
        }
        env = st.env(args.log_level)
        result["seed"] = await step_seed(args, st, env)
        runs = [await step_bare(args, st, wrk)]
        runs += await step_api(args, st, wrk, env)
        if args.profile:
            result["profile"] = await step_profile(args, st, wrk, env)
    result["runs"] = runs
    result["loadavg_after"] = loadavg()
    result["finished"] = datetime.now(UTC).isoformat()
    return result


# --- the report ------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    names = (
        *("uvicorn", "fastapi", "starlette", "pydantic", "redis", "hiredis", "sqlalchemy"),
        *("asyncpg", "aiosqlite", "uvloop", "httptools"),
    )
    return {name: version(name) for name in names}


LABELS = {
    "bare": "bare FastAPI: GET /bare, constant JSON",
    "session-status": "GET session-status/{botId}?userId= (Redis)",
    "session-status-bot": "GET session-status/{botId}, the bot's most recent (Redis)",
    "heartbeat": "POST .../heartbeat (Redis)",
    "report": "POST .../report, one transition each (kube-apiserver, Redis, DB)",
    "storm-connect": "storm: {n} new bots, connecting then connected",
    "storm-reconnect": "storm: the same {n} bots reconnect",
}


def label(run: Run) -> str:
    return LABELS.get(run.name, run.name).replace("{n}", str(run.extra.get("bots", "")))


def targets(by_name: dict[str, Run]) -> list[dict[str, Any]]:
    """Both forms of session-status against the targets: with a userId, and the bot's most
    recent session (the requirements' form, `GET .../session-status/{botId}`)."""
    bare = by_name["bare"]
    goals: list[dict[str, Any]] = []
    for name in ("session-status", "session-status-bot"):
        status = by_name.get(name)
        if status is None:
            continue
        what = "session-status" + (" (bot only)" if name.endswith("-bot") else "")
        ratio = status.rps / bare.rps if bare.rps else 0.0
        p99 = status.latency_ms["p99"]
        goals += [
            {
                "target": f"{what} >= {TARGET_RATIO:.0%} of the bare endpoint's requests/s",
                "measured": f"{ratio:.2f} ({status.rps:,.0f} / {bare.rps:,.0f} requests/s)",
                "value": round(ratio, 3),
                "met": bare.errors == 0 and status.errors == 0 and ratio >= TARGET_RATIO,
            },
            {
                "target": f"{what} p99 <= {TARGET_P99_MS:g} ms",
                "measured": f"{p99:g} ms",
                "value": p99,
                "met": status.errors == 0 and p99 <= TARGET_P99_MS,
            },
        ]
    return goals


def limit_of(run: Run, workers: int, cores: int) -> str:
    """Which CPU, if any, the run saturated."""
    cpu = run.cpu_pct
    server, machine = cpu.get("server", 0.0), cpu.get("machine", 0.0)
    others = {k: v for k, v in cpu.items() if k not in ("server", "machine")}
    busiest = max(others, key=others.__getitem__) if others else "-"
    rest = f"busiest other: {busiest} {others.get(busiest, 0.0):.0f} %"
    if server >= 85 * workers:
        return (
            f"the API process: {server:.0f} % of one core with {workers} uvicorn worker(s), "
            f"CPU-bound in Python ({rest}; machine {machine:.0f} % of {cores * 100} %)"
        )
    if machine >= 85 * cores:
        return (
            f"the machine's {cores} cores: {machine:.0f} % of {cores * 100} % busy "
            f"(API {server:.0f} %, {rest})"
        )
    return (
        f"no CPU saturated (API {server:.0f} %, {rest}, machine {machine:.0f} % of "
        f"{cores * 100} %): latency of the chain at {run.extra.get('connections', '?')} "
        "connections"
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def runs_table(runs: Sequence[Run]) -> str:
    lines = [
        "| run | requests/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | requests "
        "| non-2xx | socket errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        lat = r.latency_ms
        lines.append(
            f"| {label(r)} | {fmt(r.rps)} | {fmt(lat['p50'], 2)} | {fmt(lat['p90'], 2)} "
            f"| {fmt(lat['p99'], 2)} | {fmt(lat['p99.9'], 2)} | {fmt(lat['max'], 1)} "
            f"| {r.requests:,} | {r.non_2xx:,} | {sum(r.socket_errors.values()):,} |"
        )
    return "\n".join(lines)


CPU_ORDER = (
    *("server", "kube-apiserver", "etcd", "redis", "postgres", "operator"),
    *("wrk", "bench", "others"),
)


def cpu_table(runs: Sequence[Run], cores: int) -> str:
    names = [n for n in CPU_ORDER if any(n in r.cpu_pct for r in runs)]
    heads = ["API / bare app" if n == "server" else n for n in names]
    lines = [
        f"| run (CPU, % of one core) | seconds | {' | '.join(heads)} "
        f"| machine (of {cores * 100}) | app RSS MB |",
        "| --- | ---: |" + " ---: |" * (len(names) + 2),
    ]
    for r in runs:
        cells = [fmt(r.cpu_pct.get(n)) for n in names]
        lines.append(
            f"| {r.name} | {fmt(r.seconds)} | {' | '.join(cells)} "
            f"| {fmt(r.cpu_pct.get('machine'))} | {fmt(r.extra.get('server_rss_mb'))} |"
        )
    return "\n".join(lines)


def notes(runs: Sequence[Run], goals: Sequence[dict[str, Any]], result: dict[str, Any]) -> str:
    lines = [
        f"- {g['target']}: {g['measured']} -> {'met' if g['met'] else 'MISSED'}" for g in goals
    ]
    for r in runs:
        if r.name == "report":
            ok = r.requests - r.errors
            per = r.cpu_ms_per_request()
            cost = ", ".join(f"{k} {v:.2f}" for k, v in per.items() if k not in ("machine",))
            lines.append(
                f"- reports: {ok:,} answered 2xx, {r.extra['transitions']:,} transitions written "
                f"(history rows, incl. requests wrk cut off at its end): "
                f"{r.extra['transitions'] / r.seconds:,.0f} transitions/s; CPU ms per report: "
                f"{cost}; machine {per.get('machine', 0.0):.2f}"
            )
            lines.append(f"- reports' limit: {result['limits']['report']}")
        if r.name.startswith("storm"):
            lines.append(
                f"- {r.name}: {r.extra['bots']} bots, all {r.requests:,} answers after "
                f"{fmt(r.extra['all_answered_s'], 2)} s, all active (session-status) after "
                f"{fmt(r.extra['all_active_s'], 2)} s; {r.extra['transitions']:,} transitions; "
                f"statuses {r.extra['statuses']}; limit: {result['limits'][r.name]}"
            )
    for r in runs:
        if r.cpu_pct.get("others", 0.0) > 10:
            lines.append(
                f"- WARNING: processes outside this benchmark used {r.cpu_pct['others']:.0f} % "
                f"of a core during {r.name} ({', '.join(r.extra.get('others_top', []))})"
            )
    seed = result["seed"]
    lines.append(
        f"- seed: {seed['sessions'] + seed['warm_sessions']:,} sessions reported connected in "
        f"{seed['seconds']} s ({seed['sessions_per_second']:,.0f}/s, "
        f"{result['args']['connections']} at a time)"
    )
    return "\n".join(lines)


def summarize(result: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[Run] = result["runs"]
    cores = os.cpu_count() or 1
    for r in runs:
        r.extra["connections"] = (
            args.connections if not r.name.startswith("storm") else r.extra.get("bots")
        )
    result["limits"] = {
        r.name: limit_of(r, args.workers, cores)
        for r in runs
        if r.name in ("report", "heartbeat", "session-status") or r.name.startswith("storm")
    }
    return targets({r.name: r for r in runs})


def to_json(result: dict[str, Any], goals: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = dict(result)
    out["runs"] = [
        {
            **asdict(r),
            "label": label(r),
            "errors": r.errors,
            "cpu_ms_per_request": r.cpu_ms_per_request(),
        }
        for r in result["runs"]
    ]
    out["targets"] = list(goals)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=30, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (and seeding)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--wrk-timeout", type=int, default=10, help="wrk --timeout, seconds")
    parser.add_argument("--sessions", type=int, default=1_000, help="seeded sessions")
    parser.add_argument("--bots", type=int, default=10, help="bots the sessions spread over")
    parser.add_argument(
        "--warm-sessions", type=int, default=200, help="sessions of the reports' warm-up"
    )
    parser.add_argument("--storm", type=int, default=500, help="bots of the storm (0: none)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers, both apps")
    parser.add_argument("--loop", default="auto", help="uvicorn --loop, both apps")
    parser.add_argument("--http", default="auto", help="uvicorn --http, both apps")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="BOTSESSION_API_LOG_LEVEL of both apps (INFO, the default as in production: "
        "the API writes one JSON line per request)",
    )
    parser.add_argument(
        "--database", choices=["postgresql", "sqlite"], default="postgresql", help="the API's"
    )
    parser.add_argument(
        "--operator", action="store_true", help="run the operator beside the API (step 3)"
    )
    parser.add_argument(
        "--profile",
        help="at the end, run session-status once more with the API under pyinstrument and "
        "write its profile here (.txt, .html, .pyisession ...: the suffix picks the format; "
        "render a .pyisession with `pyinstrument --load FILE`)",
    )
    parser.add_argument("--json", help="write every figure and the machine's details here")
    parser.add_argument("--keep-logs", help="copy the apps' logs into this directory")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = parser.parse_args(argv)
    per_thread = args.connections // max(args.threads, 1)
    if args.threads < 1 or args.connections < args.threads:
        parser.error("--connections must be at least --threads, which must be positive")
    if min(args.sessions, args.warm_sessions) < 2 * args.threads * per_thread:
        parser.error(
            "--sessions and --warm-sessions must be at least 2 x --connections: each wrk "
            "thread must cycle through many more sessions than it has connections, so that "
            "a session's reports stay in order"
        )
    if args.profile and args.workers != 1:
        parser.error("--profile needs --workers 1 (pyinstrument profiles one process)")
    if args.profile:
        args.profile = str(Path(args.profile).resolve())  # the app runs in another directory
    if not args.threads <= args.bots <= 1000:
        parser.error("--bots must be within --threads..1000")
    return args


def memory_total(machine: dict[str, str]) -> str:
    """The total of `free -h`'s Mem: line."""
    parts = machine.get("memory", "").split()
    return parts[1] if len(parts) > 1 else "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    result = asyncio.run(run(args))
    result["total_seconds"] = round(time.monotonic() - started)
    goals = summarize(result, args)
    runs: list[Run] = result["runs"]
    cores = os.cpu_count() or 1
    print(runs_table(runs))
    print()
    print(cpu_table(runs, cores))
    print()
    print(notes(runs, goals, result))
    machine = result["machine"]
    print(
        f"\nmachine: {machine['cpu_model']}, {machine['nproc']} cores, {memory_total(machine)} "
        f"memory; "
        f"{machine['wrk']}; uvicorn {machine['uvicorn']} (--workers {args.workers}, --loop "
        f"{args.loop}, --http {args.http}; uvloop {machine['uvloop']}, httptools "
        f"{machine['httptools']}); database {args.database}"
    )
    print(
        f"load average before: {result['loadavg_before']}; after: {result['loadavg_after']}; "
        f"other processes before the run: {result['others_before_pct']:.0f} % of a core"
    )
    print(f"total: {result['total_seconds']} s")
    if args.json:
        text = json.dumps(to_json(result, goals), indent=2, default=str)
        Path(args.json).write_text(text + "\n")
    if any(r.errors for r in runs):
        print("FAILED: a run had non-2xx answers or socket errors", file=sys.stderr)
        return 1
    if args.strict and not all(g["met"] for g in goals):
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
