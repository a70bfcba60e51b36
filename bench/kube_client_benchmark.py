"""Which Kubernetes client the asyncio processes (the API, the operator) should use: the
project's own httpx client against kubernetes_asyncio and the official (sync) kubernetes
client, doing the same work against a real kube-apiserver.

  .venv/bin/pip install kubernetes kubernetes_asyncio  # the contenders, not project dependencies
  .venv/bin/python -m bench.kube_client_benchmark                 # 2 rounds of 3 (~3 min)
  .venv/bin/python -m bench.kube_client_benchmark --duration 30 --concurrency 64

The contenders:

- `httpx`: `sessions.adapters.kubernetes.client.KubeClient` (`load_kubeconfig`, `request`),
  `max_connections` = the concurrency (its keep-alive pool stays at its own 20);
- `kubernetes_asyncio`: `CustomObjectsApi` on an `ApiClient` from `load_kube_config`
  (aiohttp), `connection_pool_maxsize` = the concurrency;
- `kubernetes`: the official sync client's `CustomObjectsApi`, every call through
  `asyncio.to_thread` (the default executor: min(32, CPUs + 4) threads, so at most that many
  calls in flight), `connection_pool_maxsize` = the concurrency.

The parent starts etcd + kube-apiserver once (devstack), applies the BotSession CRD, creates
`--objects` BotSessions (as the API does: created, then their first phase `connecting`) in a
namespace and runs every contender in a fresh subprocess of its own (this module with
`--contender`), in the order httpx, kubernetes_asyncio, kubernetes and again reversed. The
child opens its client, then `--concurrency` asyncio tasks each GET one BotSession and
merge-patch its status subresource with lastSeen/expiresAt as `KubeBotSessions.touch` does,
over and over, taking the objects round-robin (each object's lastSeen, to the second, moves
between two visits, so a patch is a real write; one that was not is counted as `no-op`).
After `--warmup` seconds the child measures a window of `--duration` seconds: calls (a GET
and a PATCH are 2), its own CPU (getrusage RUSAGE_SELF: all its threads), errors; it prints
`window-start`/`window-end` as it crosses the window's edges and the parent reads the CPU of
kube-apiserver, etcd and the machine (/proc/stat) at those lines. RSS (VmRSS) is the child's
after its imports and client, before the first call, and at the end.

The child imports only the standard library, the CRD's names and its own contender's
library: the parent's modules (bench.measure, devstack, httpx) are imported inside the
parent's functions so that they do not count in the contenders' memory. Besides, bare
`python -c` processes import the API's libraries alone and with each client library, so each
library's import cost is visible on its own. Exits 1 when a run had errors.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from sessions.adapters.kubernetes.crd import API_VERSION, GROUP, KIND, PLURAL, VERSION, crd
from sessions.domain.model import format_time

if TYPE_CHECKING:
    from devstack.controlplane import ControlPlane

CONTENDERS = ("httpx", "kubernetes_asyncio", "kubernetes")
MERGE_PATCH = "application/merge-patch+json"
TTL = timedelta(hours=24)
REPO = Path(__file__).resolve().parents[1]
API_IMPORTS = (
    "fastapi, uvicorn, redis.asyncio, sqlalchemy.ext.asyncio, asyncpg, prometheus_client, "
    "pydantic_settings"
)
LIBRARY_IMPORTS = {
    "httpx": "sessions.adapters.kubernetes.client",
    "kubernetes_asyncio": "kubernetes_asyncio.client, kubernetes_asyncio.config",
    "kubernetes": "kubernetes.client, kubernetes.config",
}
PROBE = """import time
started = time.perf_counter()
{imports}
elapsed = time.perf_counter() - started
rss = next(line for line in open('/proc/self/status') if line.startswith('VmRSS:'))
print(elapsed, rss.split()[1])
"""


def rss_mb() -> float:
    """This process's VmRSS in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def executor_threads() -> int:
    """The default executor's size (asyncio.to_thread), as ThreadPoolExecutor sets it."""
    return min(32, (os.cpu_count() or 1) + 4)


# --- the contenders (in the child) -------------------------------------------------------


class Contender(Protocol):
    async def get(self, name: str) -> dict[str, Any]: ...

    async def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class HttpxContender:
    """The project's KubeClient, as KubeBotSessions calls it."""

    def __init__(self, kubeconfig: Path, namespace: str, concurrency: int) -> None:
        from sessions.adapters.kubernetes.client import KubeClient, load_kubeconfig

        self.client = KubeClient(load_kubeconfig(kubeconfig), max_connections=concurrency)
        self.base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    async def get(self, name: str) -> dict[str, Any]:
        return await self.client.request("GET", f"{self.base}/{name}")

    async def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.client.request(
            "PATCH", f"{self.base}/{name}/status", json=body, content_type=MERGE_PATCH
        )

    async def close(self) -> None:
        await self.client.close()


class AsyncioContender:
    """kubernetes_asyncio's CustomObjectsApi (aiohttp)."""

    def __init__(self, api: Any, api_client: Any, namespace: str) -> None:
        self.api, self.api_client, self.namespace = api, api_client, namespace

    @classmethod
    async def open(cls, kubeconfig: Path, namespace: str, concurrency: int) -> AsyncioContender:
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        await config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=cfg, persist_config=False
        )
        cfg.connection_pool_maxsize = concurrency
        api_client = client.ApiClient(cfg)
        return cls(client.CustomObjectsApi(api_client), api_client, namespace)

    async def get(self, name: str) -> dict[str, Any]:
        got = await self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return dict(got)

    async def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        patched = await self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, body, _content_type=MERGE_PATCH
        )
        return dict(patched)

    async def close(self) -> None:
        await self.api_client.close()


class SyncContender:
    """The official kubernetes client (urllib3), every call in asyncio.to_thread."""

    def __init__(self, kubeconfig: Path, namespace: str, concurrency: int) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=cfg
        )
        cfg.connection_pool_maxsize = concurrency
        self.api_client = client.ApiClient(cfg)
        self.api = client.CustomObjectsApi(self.api_client)
        self.namespace = namespace

    async def get(self, name: str) -> dict[str, Any]:
        got = await asyncio.to_thread(
            self.api.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name
        )
        return cast(dict[str, Any], got)

    async def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        patched = await asyncio.to_thread(
            self.api.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            body,
            _content_type=MERGE_PATCH,
        )
        return cast(dict[str, Any], patched)

    async def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]


async def open_contender(
    name: str, kubeconfig: Path, namespace: str, concurrency: int
) -> Contender:
    if name == "httpx":
        return HttpxContender(kubeconfig, namespace, concurrency)
    if name == "kubernetes_asyncio":
        return await AsyncioContender.open(kubeconfig, namespace, concurrency)
    return SyncContender(kubeconfig, namespace, concurrency)


# --- the measured loop (in the child) ------------------------------------------------------


@dataclass
class Counts:
    calls: int = 0
    errors: int = 0
    noops: int = 0
    samples: list[str] = field(default_factory=list)  # the first few distinct errors


@dataclass(frozen=True)
class Snapshot:
    at: float
    cpu: float
    calls: int
    errors: int
    noops: int


def snapshot(counts: Counts) -> Snapshot:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return Snapshot(
        time.monotonic(),
        usage.ru_utime + usage.ru_stime,
        counts.calls,
        counts.errors,
        counts.noops,
    )


async def worker(
    contender: Contender, order: Iterator[str], counts: Counts, stop: asyncio.Event
) -> None:
    """GET a BotSession, then merge-patch its status as KubeBotSessions.touch does."""
    while not stop.is_set():
        name = next(order)
        try:
            got = await contender.get(name)
            counts.calls += 1
            now = datetime.now(UTC)
            body = {"status": {"lastSeen": format_time(now), "expiresAt": format_time(now + TTL)}}
            patched = await contender.patch(name, body)
            counts.calls += 1
            if patched["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]:
                counts.noops += 1
        except Exception as exc:
            counts.errors += 1
            text = f"{exc.__class__.__name__}: {str(exc)[:200]}"
            if len(counts.samples) < 3 and text not in counts.samples:
                counts.samples.append(text)
            await asyncio.sleep(0.1)


async def child(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    contender = await open_contender(
        args.contender, Path(args.kubeconfig), args.namespace, args.concurrency
    )
    ready = rss_mb()
    counts, stop, order = Counts(), asyncio.Event(), itertools.cycle(names)
    tasks = [
        asyncio.create_task(worker(contender, order, counts, stop)) for _ in range(args.concurrency)
    ]
    await asyncio.sleep(args.warmup)
    first = snapshot(counts)
    print("window-start", flush=True)
    await asyncio.sleep(args.duration)
    last = snapshot(counts)
    print("window-end", flush=True)
    stop.set()
    await asyncio.gather(*tasks)
    end = rss_mb()
    await contender.close()
    seconds = last.at - first.at
    calls = last.calls - first.calls
    return {
        "contender": args.contender,
        "seconds": round(seconds, 2),
        "calls": calls,
        "calls_per_second": round(calls / seconds, 1),
        "client_cpu_seconds": round(last.cpu - first.cpu, 3),
        "errors": last.errors - first.errors,
        "errors_total": counts.errors,
        "error_samples": counts.samples,
        "noop_patches": last.noops - first.noops,
        "rss_mb_ready": ready,
        "rss_mb_end": end,
        "in_flight_max": (
            min(args.concurrency, executor_threads())
            if args.contender == "kubernetes"
            else args.concurrency
        ),
    }


# --- the parent ----------------------------------------------------------------------------


@dataclass
class Run:
    round: int
    contender: str
    child: dict[str, Any]
    cpu_seconds: dict[str, float]  # kube-apiserver, etcd, machine over the child's window
    wall_seconds: float

    def per_call_ms(self, name: str) -> float | None:
        calls = self.child["calls"]
        return 1000 * self.cpu_seconds[name] / calls if calls else None


def import_costs(repeat: int = 3) -> list[dict[str, Any]]:
    """RSS and import time of bare `python -c` processes: nothing, the API's libraries, and
    those plus each client library (the fastest of `repeat` runs)."""
    variants = {"python only": "", "API libraries": f"import {API_IMPORTS}"}
    for name, modules in LIBRARY_IMPORTS.items():
        variants[f"API libraries + {name}"] = f"import {API_IMPORTS}\nimport {modules}"
    out = []
    for label, imports in variants.items():
        figures = []
        for _ in range(repeat):
            result = subprocess.run(
                [sys.executable, "-c", PROBE.format(imports=imports)],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            elapsed, rss_kb = result.stdout.split()
            figures.append((float(elapsed), int(rss_kb)))
        out.append(
            {
                "imports": label,
                "seconds": round(min(f[0] for f in figures), 3),
                "rss_mb": round(statistics.median(f[1] for f in figures) / 1024, 1),
            }
        )
    return out


async def seed(plane: ControlPlane, namespace: str, count: int, workdir: Path) -> Path:
    """The CRD, the namespace and `count` BotSessions with their first phase (as the API
    creates them); the file of their names, for the children."""
    from bench.measure import bounded, log
    from devstack.kubectl import install_crds, kubectl
    from sessions.adapters.kubernetes.botsessions import KubeBotSessions
    from sessions.adapters.kubernetes.client import KubeClient, load_kubeconfig
    from sessions.domain.model import HistoryEntry, Identity, Phase, Reason, SessionKey, to_millis

    manifest = workdir / "botsessions-crd.json"
    manifest.write_text(json.dumps(crd()))
    install_crds(plane.kubeconfig, manifest)
    kubectl(plane.kubeconfig, "create", "namespace", namespace)
    client = KubeClient(load_kubeconfig(plane.kubeconfig), timeout=60)
    sessions = KubeBotSessions(client, namespace, creator="api")
    identity = Identity("4915112345678", "Bench User", "session_bench")
    names: list[str] = []

    async def one(i: int) -> None:
        key = SessionKey(f"bench-bot-{i % 100:03d}", f"u{i:06d}")
        record, _ = await sessions.create(key, identity)
        now = datetime.now(UTC)
        entry = HistoryEntry(
            key, 1, None, Phase.CONNECTING, Reason.CREATED, "bench", now, to_millis(now)
        )
        await sessions.set_phase(record, entry, now, now + TTL)
        names.append(record.name)

    try:
        seconds = await bounded(range(count), one, 32)
    finally:
        await client.close()
    log(f"created {count} {KIND}s ({API_VERSION}) in {seconds:.1f} s")
    names_file = workdir / "names.json"
    names_file.write_text(json.dumps(sorted(names)))
    return names_file


def child_argv(name: str, args: argparse.Namespace, plane: ControlPlane, names: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "bench.kube_client_benchmark", "--contender", name),
        *("--kubeconfig", str(plane.kubeconfig), "--namespace", args.namespace),
        *("--names", str(names), "--concurrency", str(args.concurrency)),
        *("--duration", str(args.duration), "--warmup", str(args.warmup)),
    ]


async def run_contender(
    name: str, round_: int, args: argparse.Namespace, plane: ControlPlane, names: Path
) -> Run:
    """One contender in a fresh child; the servers' CPU over the window it announces."""
    from bench.measure import cpu_seconds, log, machine_cpu, pid_of

    pids = {"kube-apiserver": pid_of(plane.apiserver), "etcd": pid_of(plane.etcd)}

    def sample() -> dict[str, float]:
        return {**{k: cpu_seconds(p) for k, p in pids.items()}, "machine": machine_cpu()}

    log(f"round {round_}: {name}")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *child_argv(name, args, plane, names), cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    marks: dict[str, tuple[float, dict[str, float]]] = {}
    lines: list[str] = []
    try:
        async with asyncio.timeout(args.warmup + args.duration + 120):
            while line := (await proc.stdout.readline()).decode().strip():
                if line in ("window-start", "window-end"):
                    marks[line] = (time.monotonic(), sample())
                else:
                    lines.append(line)
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 or len(marks) != 2 or not lines:
        raise RuntimeError(f"the {name} child failed (exit {proc.returncode})")
    (_, before), (_, after) = marks["window-start"], marks["window-end"]
    used = {k: round(after[k] - before[k], 3) for k in before}
    return Run(round_, name, json.loads(lines[-1]), used, round(time.monotonic() - started, 1))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.measure import git, library_versions, loadavg, log, versions
    from devstack.controlplane import ControlPlane

    result: dict[str, Any] = {
        "args": vars(args),
        "loadavg_before": loadavg(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(git("status", "--porcelain").splitlines()),
    }
    log("import costs (bare python -c)")
    result["imports"] = import_costs()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="kube-client-bench-") as tmp:
        log("starting etcd + kube-apiserver")
        with ControlPlane() as plane:
            names = await seed(plane, args.namespace, args.objects, Path(tmp))
            for round_, order in enumerate((CONTENDERS, CONTENDERS[::-1]), start=1):
                for name in order:
                    runs.append(await run_contender(name, round_, args, plane, names))
                    await asyncio.sleep(2)  # let kube-apiserver settle between runs
            result["machine"] = versions(plane)
    result["libraries"] = {**library_versions(), **client_versions()}
    result["runs"] = [asdict(r) for r in runs]
    result["loadavg_after"] = loadavg()
    return result


def client_versions() -> dict[str, str]:
    import importlib.metadata

    names = ("httpx", "httpcore", "kubernetes_asyncio", "aiohttp", "kubernetes", "urllib3")
    return {name: importlib.metadata.version(name) for name in names}


# --- the report ----------------------------------------------------------------------------


def run_rows(result: dict[str, Any]) -> list[str]:
    from bench.measure import fmt

    rows = []
    for data in result["runs"]:
        run = Run(**data)
        c, seconds = run.child, run.child["seconds"]
        client_ms = 1000 * c["client_cpu_seconds"] / max(1, c["calls"])
        rows.append(
            f"| {run.round} | {run.contender} | {c['in_flight_max']} "
            f"| {fmt(c['calls_per_second'])} | {fmt(client_ms, 3)} "
            f"| {fmt(run.per_call_ms('kube-apiserver'), 3)} | {fmt(run.per_call_ms('etcd'), 3)} "
            f"| {fmt(100 * run.cpu_seconds['machine'] / seconds, 0)} "
            f"| {c['errors']} | {c['noop_patches']} "
            f"| {fmt(c['rss_mb_ready'])} | {fmt(c['rss_mb_end'])} |"
        )
    return rows


def table(result: dict[str, Any]) -> str:
    args = result["args"]
    lines = [
        f"GET + merge-PATCH of status on {args['objects']:,} BotSessions, {args['concurrency']} "
        f"tasks, {args['duration']:g} s after {args['warmup']:g} s of warm-up; CPU in ms per "
        "call (a GET or a PATCH), machine CPU in % of one core",
        "",
        "| round | client | in flight | calls/s | client CPU ms/call | kube-apiserver ms/call "
        "| etcd ms/call | machine % | errors | no-op patches | RSS ready MB | RSS end MB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *run_rows(result),
        "",
        "| bare `python -c` importing | RSS MB | + MB over the API's | import s |",
        "| --- | ---: | ---: | ---: |",
    ]
    api = next(i["rss_mb"] for i in result["imports"] if i["imports"] == "API libraries")
    for item in result["imports"]:
        extra = f"{item['rss_mb'] - api:+.1f}" if "+" in item["imports"] else "-"
        lines.append(f"| {item['imports']} | {item['rss_mb']} | {extra} | {item['seconds']} |")
    errors = [(r["contender"], r["round"], r["child"]["error_samples"]) for r in result["runs"]]
    lines += ["", *(f"errors of {c} (round {n}): {s}" for c, n, s in errors if s)]
    machine, libs = result["machine"], result["libraries"]
    lines.append(
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['kernel']}, "
        f"Python {machine['python']}, {machine['kube_apiserver']}; "
        + ", ".join(f"{k} {libs[k]}" for k in client_versions())
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--objects", type=int, default=1000, help="BotSessions to cycle over")
    parser.add_argument("--concurrency", type=int, default=32, help="asyncio tasks")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds before the window")
    parser.add_argument("--namespace", default="bench", help="where the BotSessions live")
    parser.add_argument("--json", help="write every figure and the machine's facts here")
    # the child's (one contender, run by the parent)
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.contender:
        names = json.loads(Path(args.names).read_text())
        print(json.dumps(asyncio.run(child(args, names))), flush=True)
        return 0
    from bench.measure import publish, timed_run

    result = timed_run(lambda: run(args))
    publish(result, table(result), args.json)
    return 1 if any(r["child"]["errors"] for r in result["runs"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
