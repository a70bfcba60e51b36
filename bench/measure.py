"""How the benchmarks measure, shared by all of them (imported, never run).

- CPU and memory from /proc: `Meter` samples one process's RSS every 0.5 s and gives its CPU
  and memory per window (`Window`); `CpuMeter` gives the CPU of named process trees, of this
  process and its reaped children, of the machine as a whole and of everything else
  (`others`: the machine's busy CPU minus this benchmark's processes) per window.
- Waiting: `wait_for` (polls a check), `bounded` (runs work with bounded concurrency,
  retrying what a loaded server refuses), `wait_quiet` (until a process's CPU is low).
- The machine's facts (`versions`, `library_versions`, `git`, `loadavg`) and the figures'
  formatting (`fmt`, `rnd`, `ratio`, `percentile`, `jsonable`); `log` writes progress to
  stderr with the time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import httpx

from devstack.controlplane import ControlPlane, binary_dir
from devstack.postgres_server import postgres_bindir
from devstack.process import ManagedProcess
from sessions.domain.model import StoreUnavailable

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# --- one process: /proc/<pid>/stat and status ----------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, amount = line.split(":", 1)
            values[name] = int(amount.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def pid_of(process: ManagedProcess) -> int:
    assert process.proc is not None
    return process.proc.pid


async def cpu_over(pid: int, seconds: float) -> float:
    """The process's CPU (% of one core) over the next `seconds`."""
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / seconds


async def wait_quiet(
    pid: int, threshold_pct: float = 5.0, sample: float = 5.0, limit: float = 180
) -> float:
    """Wait until the process's CPU over `sample` s is under the threshold (an operator's
    start); its last CPU figure (% of one core)."""
    deadline = time.monotonic() + limit
    pct = 100.0
    while time.monotonic() < deadline:
        pct = await cpu_over(pid, sample)
        if pct < threshold_pct:
            return pct
    log(f"  the operator did not get quiet within {limit:.0f} s")
    return pct


@dataclass
class Window:
    """What a process cost over a stretch of time."""

    name: str
    seconds: float
    cpu_seconds: float
    cpu_pct: float  # of one core
    rss_mb_end: float
    rss_mb_max: float  # the highest sampled VmRSS within the window
    hwm_mb: float  # VmHWM at the end: the process's peak RSS so far
    others_cpu_pct: dict[str, float] = field(default_factory=dict)


@dataclass
class Mark:
    name: str
    start: float
    cpu: dict[str, float]
    sample_index: int


class Meter:
    """Samples the RSS of one process every 0.5 s; measures CPU of it and of helpers."""

    def __init__(self, pid: int, others: dict[str, int], interval: float = 0.5) -> None:
        self.pid = pid
        self.others = {**others, "bench": os.getpid()}
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, rss kB, hwm kB)
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                rss, hwm = memory_kb(self.pid)
                self.samples.append((time.monotonic(), rss, hwm))
            await asyncio.sleep(self.interval)

    def start(self) -> Self:
        self.task = asyncio.create_task(self.run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _cpu(self) -> dict[str, float]:
        out = {"operator": cpu_seconds(self.pid)}
        for name, pid in self.others.items():
            with contextlib.suppress(OSError):
                out[name] = cpu_seconds(pid)
        return out

    def begin(self, name: str) -> Mark:
        return Mark(name, time.monotonic(), self._cpu(), len(self.samples))

    def end(self, mark: Mark) -> Window:
        now, cpu = time.monotonic(), self._cpu()
        seconds = now - mark.start
        rss, hwm = memory_kb(self.pid)
        within = [s[1] for s in self.samples[mark.sample_index :]] + [rss]
        used = cpu["operator"] - mark.cpu["operator"]
        others = {
            name: round(100 * (cpu[name] - mark.cpu[name]) / seconds, 1)
            for name in self.others
            if name in cpu and name in mark.cpu
        }
        return Window(
            mark.name,
            round(seconds, 1),
            round(used, 2),
            round(100 * used / seconds, 2),
            round(rss / 1024, 1),
            round(max(within) / 1024, 1),
            round(hwm / 1024, 1),
            others,
        )

    async def quiet(
        self, threshold_pct: float = 5.0, sample: float = 5.0, limit: float = 180
    ) -> float:
        """Wait until the operator's CPU over `sample` s is under the threshold."""
        return await wait_quiet(self.pid, threshold_pct, sample, limit)


# --- process trees and the machine: /proc/<pid>/stat of every process, /proc/stat ----------


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
    """CPU of named process trees over a window, and of this process (`bench`), its reaped
    children (reported as `children`, e.g. wrk, when that is given), the machine as a whole
    (/proc/stat, so kernel work no process is charged for too) and everything else
    (`others`: the machine's busy CPU minus all of the benchmark's own, e.g. someone else's
    tests). `others` is not a sum over foreign processes: a process's cutime/cstime jumps by
    a child's whole life when it reaps one, so such a sum can exceed the machine's total."""

    def __init__(self, roots: dict[str, int], children: str | None = None) -> None:
        self.roots = dict(roots)
        self.children = children

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
        """% of one core per name, plus the children's (if named), `bench`, `others` and
        `machine`."""
        procs, busy = processes(), machine_cpu()
        seconds = time.monotonic() - mark.start

        def pct(used: float) -> float:
            return round(100 * used / seconds, 1)

        used = {
            name: tree_cpu(pid, procs) - tree_cpu(pid, mark.procs)
            for name, pid in self.roots.items()
        }
        children = children_cpu() - mark.children
        own = time.process_time() - mark.own
        machine = busy - mark.machine_busy
        out = {name: pct(seconds_used) for name, seconds_used in used.items()}
        if self.children is not None:
            out[self.children] = pct(children)
        out["bench"] = pct(own)
        out["others"] = pct(max(0.0, machine - sum(used.values()) - children - own))
        out["machine"] = pct(machine)
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


async def others_busy(seconds: float = 3.0) -> float:
    """CPU of everything else on the machine before the run (% of one core), logged."""
    meter = CpuMeter({})
    mark = meter.begin()
    await asyncio.sleep(seconds)
    pct = meter.end(mark)["others"]
    top = ", ".join(meter.top_others(mark))
    log(f"before the run, other processes use {pct:.0f} % of a core ({top})")
    return pct


# --- waiting -------------------------------------------------------------------------------


async def bounded(
    items: Sequence[Any], work: Callable[[Any], Awaitable[object]], concurrency: int
) -> float:
    """Run work(item) for every item, `concurrency` at a time; the seconds it took."""
    semaphore = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(item: Any) -> None:
        async with semaphore:
            for attempt in range(20):
                try:
                    await work(item)
                    return
                except (StoreUnavailable, httpx.TransportError) as exc:  # under load: retry
                    if attempt == 19:
                        raise
                    log(f"  retrying after {exc.__class__.__name__}: {exc}")
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(one(item) for item in items))
    return time.monotonic() - started


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float, what: str
) -> float | None:
    """Seconds until check() is true (None after the timeout)."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            log(f"  gave up waiting for {what} after {timeout:.0f} s")
            return None
        await asyncio.sleep(interval)


# --- the machine's facts -------------------------------------------------------------------


def versions(plane: ControlPlane | None = None) -> dict[str, str]:
    def cmd(*argv: str) -> str:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"({exc})"
        return (result.stdout or result.stderr).strip()

    lscpu = cmd("lscpu")
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), ""
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": cmd("nproc"),
        "cpu_model": model,
        "memory": cmd("free", "-h").splitlines()[1] if shutil.which("free") else "",
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "kopf": importlib.metadata.version("kopf"),
        "kube_apiserver": cmd(str(binary_dir() / "kube-apiserver"), "--version"),
        "etcd": cmd(str(binary_dir() / "etcd"), "--version").splitlines()[0],
        "redis": cmd(shutil.which("redis-server") or "redis-server", "--version"),
        "postgres": cmd(str(postgres_bindir() / "postgres"), "--version"),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "httpx": importlib.metadata.version("httpx"),
    }


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


def memory_total(machine: dict[str, str]) -> str:
    """The total of `free -h`'s Mem: line."""
    parts = machine.get("memory", "").split()
    return parts[1] if len(parts) > 1 else "?"


def git(*argv: str) -> str:
    result = subprocess.run(
        ["git", *argv], cwd=REPO, capture_output=True, text=True, check=False, timeout=30
    )
    return result.stdout.strip()


def keep_log(directory: str | None, log_path: Path, name: str) -> None:
    if directory and log_path.exists():
        Path(directory).mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, Path(directory) / name)


# --- the figures ---------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def rnd(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def ratio(real: float | None, floor: float | None) -> str:
    if real is None or floor is None or floor == 0:
        return "-"
    return f"{real / floor:.1f}x"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        data = asdict(value)
        for name in ("per_minute_mean", "per_second"):
            if hasattr(value, name):
                data[name] = round(getattr(value, name), 1)
        return data
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def timed_run(run: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """asyncio.run(run()), with the wall time it took as result["total_seconds"]."""
    started = time.monotonic()
    result = asyncio.run(run())
    result["total_seconds"] = round(time.monotonic() - started)
    return result


def benchmark_main(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    table: Callable[[dict[str, Any], argparse.Namespace], str],
) -> int:
    """A benchmark's main: run it, print its table and facts, write its JSON (`args.json`)."""
    result = timed_run(lambda: run(args))
    publish(result, table(result, args), args.json)
    return 0


def publish(result: dict[str, Any], table: str, json_path: str | None) -> None:
    """Print a benchmark's table and its run facts; write every figure as JSON if asked."""
    print(table)
    print(f"\nload average before: {result['loadavg_before']}; after: {result['loadavg_after']}")
    if "commit" in result:
        print(f"commit {result['commit']} (+{result['uncommitted_files']} uncommitted files)")
    print(f"total: {result['total_seconds']} s")
    if json_path:
        Path(json_path).write_text(json.dumps(jsonable(result), indent=2, default=str) + "\n")
