"""The expiry sweep (index + Lua re-check) against the requirements' naive SCAN loop.

One run, on a private real redis-server started here and stopped at the end:

  .venv/bin/python -m bench.sweep_benchmark                    # 1,000,000 sessions
  .venv/bin/python -m bench.sweep_benchmark --sessions 20000   # a quick check

For each due fraction the keyspace is populated (pipelined, the same keys and values the
write_state Lua script produces), then each contender runs on its own fresh copy of the same
data (FLUSHALL and repopulate in between), with the same `now`:

  literal    the requirements' loop as written (section 6): SCAN MATCH session:* COUNT 1000;
             per key (the session:status:* / session:expiry:* strings skipped by name) its own
             HGETALL round trip, and for each due one its own DEL round trip (the hash and
             the two contract strings)
  pipelined  the same loop without the round-trip latency: per SCAN page one pipeline of
             HMGET status/expiresAt, then one pipeline of UNLINKs for the due ones
  sweep      sessions.usecases.sweep.sweep(store, batch_size=..., now=now)

--naive picks the naive contenders (default both). A session is due when it is inactive or
its expiresAt (lastSeen + TTL) is not after `now`. Every contender must remove exactly the
planned set of sessions; the script exits 1 when one does not (and 2 with --strict when a
target of the issue is missed against any naive contender that ran).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import functools
import gc
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aioredis

from devstack.redis_server import RedisServer
from sessions.adapters.redis.store import EXPIRY_INDEX, RedisStore, connect, member_of
from sessions.domain.logs import JsonFormatter
from sessions.domain.model import parse_time
from sessions.usecases.sweep import sweep

TTL_S = 24 * 3600  # the default session TTL
FAR_S = 3650 * 24 * 3600  # native key expiry of "expired" sessions: Redis must not drop them
BOTS = 1000
POPULATE_BATCH = 10_000  # sessions per pipeline round trip

# the targets
TARGET_SPEEDUP = {0.10: 20.0, 0.01: 100.0}
TARGET_IDLE_MS = 50.0

LIVE, EXPIRED, INACTIVE = 0, 1, 2

T = TypeVar("T")


@functools.lru_cache(maxsize=1 << 18)
def iso(seconds: int) -> str:
    """Epoch seconds as the contract writes times: 2025-01-01T00:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class Plan:
    """Which sessions are due; the same seed gives the same data on every population."""

    sessions: int
    fraction: float
    now_s: int
    seed: int
    kinds: bytes

    @classmethod
    def make(cls, sessions: int, fraction: float, now_s: int, seed: int) -> Plan:
        rng = random.Random(seed)
        kinds = bytearray(sessions)  # all LIVE
        for i, n in enumerate(rng.sample(range(sessions), round(sessions * fraction))):
            kinds[n] = EXPIRED if i % 2 == 0 else INACTIVE
        return cls(sessions, fraction, now_s, seed, bytes(kinds))

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_s, UTC)

    def due(self) -> set[str]:
        return {member(n) for n, kind in enumerate(self.kinds) if kind != LIVE}

    def count(self, kind: int) -> int:
        return self.kinds.count(kind)


def member(n: int) -> str:
    return f"bot-{n % BOTS}:u{n}"


def populate(client: redis.Redis, plan: Plan) -> None:
    """Write every session as write_state would, pipelined, POPULATE_BATCH per round trip.

    Live:     lastSeen 1 s .. 22 h ago, due (and natively expiring) at lastSeen + 24 h.
    Expired:  lastSeen 24 h + 1 s .. 8 days ago, so expiresAt and the index score are in the
              past; the native key expiry is ~10 years later, or Redis would drop the keys
              itself at once (the trick of tests/integration/test_cleanup.py).
    Inactive: lastSeen 1 s .. 22 h ago, status inactive: due at once (score = lastSeen).
    """
    rng = random.Random(plan.seed + 1)
    now_s = plan.now_s
    pipe = client.pipeline(transaction=False)
    for n, kind in enumerate(plan.kinds):
        if kind == EXPIRED:
            seen = now_s - TTL_S - rng.randint(1, 7 * 24 * 3600)
            status = "failed" if n % 5 == 0 else "active"
            reason = "ConnectFailed" if status == "failed" else "Connected"
        else:
            seen = now_s - rng.randint(1, 22 * 3600)
            if kind == INACTIVE:
                status, reason = "inactive", "Disconnected"
            elif n % 10 == 0:
                status, reason = "connecting", "Created"
            else:
                status, reason = "active", "Connected"
        expires = seen + TTL_S
        native_ms = (expires + FAR_S if kind == EXPIRED else expires) * 1000
        score_ms = (seen if kind == INACTIVE else expires) * 1000
        m = member(n)
        bot, user = m.split(":", 1)
        hash_key = "session:" + m
        pipe.hset(
            hash_key,
            mapping={
                "status": status,
                "lastSeen": iso(seen),
                "expiresAt": iso(expires),
                "phoneNumber": f"4915{n:09d}",
                "displayName": f"User {n}",
                "sessionId": f"session_{n}",
                "createdAt": iso(seen - 3600),
                "revision": 1 + n % 7,
                "reason": reason,
                "ttlSeconds": str(TTL_S),
            },
        )
        pipe.pexpireat(hash_key, native_ms)
        pipe.set("session:status:" + m, status, pxat=native_ms)
        pipe.set("session:expiry:" + m, iso(expires), pxat=native_ms)
        pipe.zadd(EXPIRY_INDEX, {m: score_ms})
        pipe.zadd(f"botsession:bot:{bot}", {user: seen * 1000})
        if (n + 1) % POPULATE_BATCH == 0:
            pipe.execute()
    pipe.execute()
    held = client.zcard(EXPIRY_INDEX)
    if held != plan.sessions:
        raise RuntimeError(f"populated {held} index entries, expected {plan.sessions}")


naive_log = logging.getLogger("bench.naive")


def naive_due(status: str | None, expires_at: str | None, now: datetime) -> bool:
    return status == "inactive" or (expires_at is not None and parse_time(expires_at) <= now)


async def naive_literal(client: aioredis.Redis, now: datetime) -> set[str]:
    """The requirements' loop as written: scan session:*, read each session, delete the due ones.

    One round trip per decision: an HGETALL per session hash, a DEL per due session.
    Returns the botId:userId of every session it deleted.
    """
    removed: set[str] = set()
    logging_on = naive_log.isEnabledFor(logging.INFO)
    cursor = 0
    while True:
        cursor, page = await client.scan(cursor, match="session:*", count=1000)
        for key in cast(list[str], page):  # the client decodes responses
            if key.startswith(("session:status:", "session:expiry:")):
                continue  # the contract's string keys, not sessions
            session = cast(dict[str, str], await client.hgetall(key))
            if not session:
                continue  # gone since the scan (SCAN may return a key twice)
            if naive_due(session.get("status"), session.get("expiresAt"), now):
                m = key[len("session:") :]
                await client.delete(key, f"session:status:{m}", f"session:expiry:{m}")
                removed.add(m)
                if logging_on:  # console.log('Cleaned up inactive session:', session.key)
                    naive_log.info("cleaned up session", extra={"fields": {"key": key}})
        if cursor == 0:
            return removed


async def naive_pipelined(client: aioredis.Redis, now: datetime) -> set[str]:
    """The requirements' loop, pipelined so it isn't needlessly slow: per SCAN page, one
    pipeline of HMGETs and one of UNLINKs.

    Returns the botId:userId of every session it deleted.
    """
    logging_on = naive_log.isEnabledFor(logging.INFO)
    removed: set[str] = set()
    cursor = 0
    while True:
        cursor, page = await client.scan(cursor, match="session:*", count=1000)
        keys = cast(list[str], page)  # the client decodes responses
        # session:<botId>:<userId> is the hash; session:status:* and session:expiry:* are
        # strings (HMGET would fail with WRONGTYPE). Ids never hold ':', so count them.
        hashes = [k for k in keys if k.count(":") == 2]
        if hashes:
            async with client.pipeline(transaction=False) as pipe:
                for key in hashes:
                    pipe.hmget(key, "status", "expiresAt")
                rows: list[list[str | None]] = await pipe.execute()
            doomed: list[str] = []
            for key, (status, expires_at) in zip(hashes, rows, strict=True):
                if status is None:
                    continue  # gone since the scan
                if naive_due(status, expires_at, now):
                    doomed.append(key[len("session:") :])
            if doomed:
                async with client.pipeline(transaction=False) as pipe:
                    for m in doomed:
                        pipe.unlink(f"session:{m}", f"session:status:{m}", f"session:expiry:{m}")
                    await pipe.execute()
                removed.update(doomed)
                if logging_on:
                    for m in doomed:
                        naive_log.info(
                            "cleaned up session", extra={"fields": {"key": "session:" + m}}
                        )
        if cursor == 0:
            return removed


@dataclass
class Timing:
    seconds: float
    client_cpu_seconds: float
    server_ms: float
    commands: int
    removed: set[str] = field(repr=False)
    keys_deleted: int
    extra: dict[str, Any] = field(default_factory=dict)


# the commands each contender sends itself (INFO commandstats counts Lua's inner calls too)
NAIVE: dict[
    str, tuple[Callable[[aioredis.Redis, datetime], Awaitable[set[str]]], tuple[str, ...]]
] = {
    "literal": (naive_literal, ("scan", "hgetall", "del")),
    "pipelined": (naive_pipelined, ("scan", "hmget", "unlink")),
}
SWEEP_COMMANDS = ("evalsha", "eval", "script|load")


async def command_stats(client: aioredis.Redis) -> dict[str, dict[str, float]]:
    """Calls and milliseconds per command since the last RESETSTAT (Lua's inner calls too)."""
    stats: dict[str, dict[str, Any]] = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): {
            "calls": int(entry["calls"]),
            "ms": round(float(entry["usec"]) / 1000, 3),
        }
        for name, entry in sorted(stats.items())
    }


async def timed(
    client: aioredis.Redis, top_level: Sequence[str], run: Callable[[], Awaitable[T]]
) -> tuple[T, Timing]:
    """Run once and measure: wall time, this process's CPU, Redis time, keys deleted."""
    before_keys: int = await client.dbsize()
    await client.config_resetstat()
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    outcome = await run()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats = await command_stats(client)
    after_keys: int = await client.dbsize()
    mine = [stats[name] for name in top_level if name in stats]
    timing = Timing(
        seconds=elapsed,
        client_cpu_seconds=cpu,
        server_ms=sum(s["ms"] for s in mine),
        commands=int(sum(s["calls"] for s in mine)),
        removed=set(),
        keys_deleted=before_keys - after_keys,
        extra={"commandstats": stats},
    )
    return outcome, timing


async def run_naive(url: str, plan: Plan, kind: str) -> Timing:
    cleanup, commands = NAIVE[kind]
    client = connect(url)
    try:
        removed, timing = await timed(client, commands, lambda: cleanup(client, plan.now))
    finally:
        await client.aclose()
    timing.removed = removed
    return timing


async def run_sweep(url: str, plan: Plan, batch_size: int, idle_repeats: int = 0) -> Timing:
    store = RedisStore(connect(url))
    try:
        await store.ping()
        result, timing = await timed(
            store.client,
            SWEEP_COMMANDS,
            lambda: sweep(store, batch_size=batch_size, now=plan.now),
        )
        timing.removed = {member_of(s.key) for s in result.removed}
        if len(timing.removed) != len(result.removed):
            raise RuntimeError("the sweep reported a session twice")
        timing.extra["batches"] = result.batches
        timing.extra["why"] = {w: result.count(w) for w in ("expired", "inactive", "gone")}
        if idle_repeats:
            # nothing is due any more: time the sweep that finds nothing, a few more times
            idle = []
            for _ in range(idle_repeats):
                t0 = time.perf_counter()
                again = await sweep(store, batch_size=batch_size, now=plan.now)
                idle.append((time.perf_counter() - t0) * 1000)
                if again.removed:
                    raise RuntimeError("a second sweep removed sessions")
            timing.extra["repeat_ms"] = {
                "median": statistics.median(idle),
                "max": max(idle),
                "min": min(idle),
            }
    finally:
        await store.close()
    return timing


@dataclass
class Naive:
    """One naive contender's figures at one due fraction, and its speed-up against the sweep."""

    seconds: float
    client_cpu_seconds: float
    server_ms: float
    commands: int
    removed: int
    same_sessions: bool
    speedup: float = 0.0
    commandstats: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, timing: Timing, expected: set[str]) -> Naive:
        return cls(
            seconds=timing.seconds,
            client_cpu_seconds=timing.client_cpu_seconds,
            server_ms=timing.server_ms,
            commands=timing.commands,
            removed=len(timing.removed),
            same_sessions=timing.removed == expected,
            commandstats=timing.extra["commandstats"],
        )


@dataclass
class Row:
    fraction: float
    sessions: int
    due: int
    expired: int
    inactive: int
    batch_size: int
    sweep_seconds: float
    sweep_client_cpu_seconds: float
    sweep_server_ms: float
    sweep_commands: int
    sweep_batches: int
    same_sessions: bool  # the sweep and every naive contender removed the planned set
    naive: dict[str, Naive] = field(default_factory=dict)
    sweep_repeat_ms: dict[str, float] | None = None
    log_events: bool = False
    sweep_commandstats: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def sweep_us_per_due(self) -> float | None:
        return self.sweep_seconds * 1e6 / self.due if self.due else None


def fmt_fraction(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def fmt_speedup(speedup: float) -> str:
    return f"{speedup:,.{1 if speedup < 100 else 0}f}x"


def markdown(rows: Sequence[Row]) -> str:
    kinds = [k for k in NAIVE if any(k in r.naive for r in rows)]
    head = "| due | sessions | due sessions | batch | sweep (ms) | sweep µs/due |"
    rule = "| ---: | ---: | ---: | ---: | ---: | ---: |"
    for k in kinds:
        head += f" {k} (s) | sweep vs {k} |"
        rule += " ---: | ---: |"
    head += " sweep Redis ms |" + "".join(f" {k} Redis ms |" for k in kinds) + " same set |"
    rule += " ---: |" * (1 + len(kinds)) + " :---: |"
    lines = [head, rule]
    for r in rows:
        per = r.sweep_us_per_due
        line = (
            f"| {fmt_fraction(r.fraction)} | {r.sessions:,} | {r.due:,} | {r.batch_size} "
            f"| {r.sweep_seconds * 1000:,.{1 if r.sweep_seconds >= 0.01 else 2}f} "
            f"| {'' if per is None else f'{per:.1f}'} |"
        )
        for k in kinds:
            n = r.naive.get(k)
            line += " | |" if n is None else f" {n.seconds:,.2f} | {fmt_speedup(n.speedup)} |"
        line += f" {r.sweep_server_ms:,.1f} |"
        for k in kinds:
            n = r.naive.get(k)
            line += " |" if n is None else f" {n.server_ms:,.0f} |"
        line += f" {'yes' if r.same_sessions else 'NO'} |"
        lines.append(line)
    return "\n".join(lines)


def targets(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The issue's targets against each naive contender, judged on the first batch size."""
    out: list[dict[str, Any]] = []
    first_batch = rows[0].batch_size if rows else 0
    for r in rows:
        if r.batch_size != first_batch:
            continue
        goal = TARGET_SPEEDUP.get(round(r.fraction, 6))
        if goal is not None:
            for kind, n in r.naive.items():
                out.append(
                    {
                        "target": f">= {goal:g}x faster at {fmt_fraction(r.fraction)} due",
                        "against": kind,
                        "measured": fmt_speedup(n.speedup),
                        "met": n.speedup >= goal,
                    }
                )
        if r.fraction == 0.0:
            ms = r.sweep_seconds * 1000
            out.append(
                {
                    "target": f"< {TARGET_IDLE_MS:g} ms with nothing due",
                    "against": "",
                    "measured": f"{ms:.2f} ms",
                    "met": ms < TARGET_IDLE_MS,
                }
            )
    return out


def machine() -> dict[str, str]:
    def cmd(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
        except OSError as exc:
            return f"({exc})"

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in cmd("lscpu").splitlines()
            if line.startswith("Model name:")
        ),
        "",
    )
    return {
        "nproc": cmd("nproc"),
        "cpu": cpu,
        "memory": cmd("free", "-h"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "redis_py": redis.__version__,
        "loadavg": Path("/proc/loadavg").read_text().strip()
        if Path("/proc/loadavg").exists()
        else "",
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Trial:
    """One due fraction: its plan, the sessions every contender must remove, and a fresh copy
    of the data for each contender."""

    sync: redis.Redis
    plan: Plan
    expected: set[str]
    tag: str

    def fresh(self) -> None:
        self.sync.flushall()
        t0 = time.perf_counter()
        populate(self.sync, self.plan)
        log(f"{self.tag} populated {self.plan.sessions:,} in {time.perf_counter() - t0:.1f} s")

    def check(self, name: str, t: Timing) -> None:
        expected = self.expected
        if t.removed != expected:
            log(
                f"MISMATCH: {name} removed {len(t.removed):,}, planned {len(expected):,}; "
                f"{name}-only {sorted(t.removed - expected)[:5]}, "
                f"missed {sorted(expected - t.removed)[:5]}"
            )
        if t.keys_deleted != 3 * len(t.removed):
            log(f"WARNING: {name} deleted {t.keys_deleted} keys for {len(t.removed)} sessions")


def run_naives(url: str, trial: Trial, kinds: Sequence[str]) -> dict[str, Timing]:
    """Each naive contender on a fresh copy of the data."""
    timings: dict[str, Timing] = {}
    for kind in kinds:
        trial.fresh()
        timing = asyncio.run(run_naive(url, trial.plan, kind))
        log(f"{trial.tag} {kind}: {timing.seconds:.2f} s, removed {len(timing.removed):,}")
        trial.check(kind, timing)
        timings[kind] = timing
    return timings


def sweep_row(
    url: str, trial: Trial, naive: dict[str, Timing], batch_size: int, args: argparse.Namespace
) -> Row:
    """The sweep with one batch size on a fresh copy of the data, against the naive runs."""
    plan, expected = trial.plan, trial.expected
    trial.fresh()
    repeats = args.idle_repeats if plan.fraction == 0 else 0
    swept = asyncio.run(run_sweep(url, plan, batch_size, idle_repeats=repeats))
    log(
        f"{trial.tag} sweep batch {batch_size}: {swept.seconds * 1000:.1f} ms,"
        f" removed {len(swept.removed):,} {swept.extra.get('why')}"
    )
    trial.check("sweep", swept)
    figures = {
        kind: dataclasses.replace(
            Naive.of(timing, expected),
            speedup=timing.seconds / swept.seconds if swept.seconds else float("inf"),
            same_sessions=timing.removed == swept.removed == expected,
        )
        for kind, timing in naive.items()
    }
    return Row(
        fraction=plan.fraction,
        sessions=plan.sessions,
        due=len(expected),
        expired=plan.count(EXPIRED),
        inactive=plan.count(INACTIVE),
        batch_size=batch_size,
        sweep_seconds=swept.seconds,
        sweep_client_cpu_seconds=swept.client_cpu_seconds,
        sweep_server_ms=swept.server_ms,
        sweep_commands=swept.commands,
        sweep_batches=int(swept.extra["batches"]),
        same_sessions=swept.removed == expected and all(f.same_sessions for f in figures.values()),
        naive=figures,
        sweep_repeat_ms=swept.extra.get("repeat_ms"),
        log_events=args.log_events,
        sweep_commandstats=swept.extra["commandstats"],
    )


def bench_fraction(
    server: RedisServer, sync: redis.Redis, args: argparse.Namespace, fraction: float, idx: int
) -> list[Row]:
    """Per naive contender: populate and run it; then, per batch size: repopulate and sweep."""
    plan = Plan.make(args.sessions, fraction, int(time.time()), seed=args.seed + idx)
    trial = Trial(sync, plan, plan.due(), f"[{fmt_fraction(fraction)}]")
    naive = run_naives(server.url, trial, args.naive)
    rows = [sweep_row(server.url, trial, naive, size, args) for size in args.batch_sizes]
    sync.flushall()
    return rows


def log_removals() -> None:
    """As the operator runs it: every removed session is one JSON line at INFO (to
    /dev/null); the naive contenders log each deletion too (the requirements' console.log
    per cleaned session)."""
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed at exit
    atexit.register(devnull.close)
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(JsonFormatter())
    for name in ("sessions", "bench"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)


def bench_all(args: argparse.Namespace) -> tuple[list[Row], str]:
    """Every due fraction on one private redis-server; the rows and the server's version."""
    rows: list[Row] = []
    with RedisServer() as server:
        sync = redis.Redis.from_url(server.url, socket_timeout=300)
        try:
            redis_version = str(sync.info("server")["redis_version"])
            for idx, fraction in enumerate(args.due):
                rows.extend(bench_fraction(server, sync, args, fraction, idx))
        finally:
            sync.close()
    return rows, redis_version


def print_report(rows: Sequence[Row], goals: Sequence[dict[str, Any]], idle_repeats: int) -> None:
    print(markdown(rows))
    print()
    for goal in goals:
        against = f" (vs {goal['against']})" if goal["against"] else ""
        print(
            f"- {goal['target']}{against}: {goal['measured']} -> "
            f"{'met' if goal['met'] else 'MISSED'}"
        )
    for r in rows:
        per = r.sweep_us_per_due
        costs = [f"sweep {per:.1f} µs per due session"] if per is not None else []
        costs += [
            f"{kind} {n.seconds * 1e6 / r.sessions:.1f} µs per stored session"
            for kind, n in r.naive.items()
        ]
        print(f"- {fmt_fraction(r.fraction)}, batch {r.batch_size}: {', '.join(costs)}")
        if r.sweep_repeat_ms:
            rep = r.sweep_repeat_ms
            print(
                f"- sweep with nothing due (batch {r.batch_size}), {idle_repeats} more runs: "
                f"median {rep['median']:.2f} ms, max {rep['max']:.2f} ms"
            )


def write_json(
    path: Path,
    rows: Sequence[Row],
    goals: Sequence[dict[str, Any]],
    started: datetime,
    machine_at_start: dict[str, str],
) -> None:
    report = {
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "argv": sys.argv,
        "machine": {**machine(), **machine_at_start},
        "rows": [asdict(r) for r in rows],
        "targets": list(goals),
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    load_at_start = machine()["loadavg"]
    if args.log_events:
        log_removals()
    rows, redis_version = bench_all(args)
    goals = targets(rows)
    print_report(rows, goals, args.idle_repeats)
    if args.json:
        at_start = {"loadavg_at_start": load_at_start, "redis_server": redis_version}
        write_json(Path(args.json), rows, goals, started, at_start)
    if not all(r.same_sessions for r in rows):
        print("FAILED: the contenders removed different sessions", file=sys.stderr)
        return 1
    if args.strict and not all(g["met"] for g in goals):
        return 2
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=1_000_000, help="sessions to populate")
    parser.add_argument(
        "--due",
        type=float,
        nargs="+",
        default=[0.01, 0.10, 0.0],
        help="fractions of the sessions that are due (default: 0.01 0.10 0.0)",
    )
    parser.add_argument(
        "--naive",
        choices=["literal", "pipelined", "both"],
        default="both",
        help="the naive contender(s): the requirements' loop as written (one round trip per "
        "key), the same loop pipelined per SCAN page, or both (default)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[500],
        help="sweep batch sizes to try; the targets are judged on the first (default: 500)",
    )
    parser.add_argument(
        "--idle-repeats",
        type=int,
        default=20,
        help="extra sweeps timed once nothing is due (fraction 0 only)",
    )
    parser.add_argument(
        "--log-events",
        action="store_true",
        help="log one JSON line per removal at INFO (to /dev/null), as in production: the "
        "sweep's events, and the naive contenders' per-deletion line",
    )
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--json", help="also write the results as JSON to this path")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 when a target is missed (against any naive contender that ran)",
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or any(not 0 <= f <= 1 for f in args.due):
        parser.error("--sessions must be positive and --due fractions within 0..1")
    args.naive = list(NAIVE) if args.naive == "both" else [args.naive]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
