"""Webhook delivery (issue 21, item 2): the deliverer (sessions.usecases.webhooks) against a
receiver that verifies every signature, with a real redis-server.

  .venv/bin/python -m bench.webhooks_benchmark --json /tmp/webhooks.json   # ~1.5 min
  .venv/bin/python -m bench.webhooks_benchmark --duration 5 --backlog 2000 \
      --slow-backlog 500                                                  # quick check

Three processes besides `redis-server` (devstack.redis_server, no persistence):

- the deliverer, this process: what the operator's leader runs for one endpoint
  (controller/webhooks.py): EndpointDeliveries with the default RetryPolicy, a
  WebhookSender (the operator's default 10 s timeout) and the `housekeeping` RedisLease,
  held (renewed every 5 s), looping `step(BLOCK)` on the default asyncio loop, as the
  operator does. Its CPU is this process's own (time.process_time): the deliverer, the
  lease's renewals and the benchmark's bookkeeping (no polling: the loop counts what it
  delivered).
- the receiver, `python -m bench.webhooks_benchmark receiver --port N [--delay-ms D]`: an
  aiohttp server that verifies each signature with the standardwebhooks library (401 when
  it does not verify), records (webhook-id, receive time, session, revision) and answers
  200, after `--delay-ms` for a slow receiver. The benchmark reads the records at the end
  (GET /records). One fresh receiver per run.
- the emitter, `python -m bench.webhooks_benchmark emit ...`: appends transitions through
  RedisStore.emit (lua/emit.lua, as bench/events_benchmark.py does), `--rate` a second (0:
  as fast as it can), round robin over `--sessions` sessions of a bot of the run's own.
  It runs in its own process so that the deliverer's CPU is its own.

The runs:

1. latency: `--rate` transitions a second over `--sessions` sessions for `--duration` s, the
   deliverer following. A delivery's latency: the receiver's clock when the request's body
   was read, minus the event's id (the Redis server's clock in ms when it was appended; one
   machine, one clock).
2. throughput: a backlog of `--backlog` events over `--sessions` sessions is emitted first
   (the deliverer's cursor set before, its loop not running), then the loop starts: the
   time from its start to the receiver's last record, events a second, and the deliverer's
   CPU per delivery.
3. slow: the same with a receiver that takes `--slow-ms` per request and a backlog of
   `--slow-backlog` (0: skipped): deliveries run 16 sessions at a time (PARALLEL), within a
   page of 100 events (PAGE), so at most 16 / slow-ms a second and less as each page waits
   for its slowest session.

Every run checks that the receiver took every event of the run exactly once (missing and
duplicates counted, forged signatures counted), in order per session. CPU of the receiver,
Redis, the emitter (once reaped), the deliverer and the machine, as % of one core
(bench.measure.CpuMeter).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Self

import httpx
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from bench.measure import (
    REPO,
    CpuMeter,
    benchmark_main,
    git,
    loadavg,
    log,
    others_busy,
    percentile,
    pid_of,
)
from controller.webhooks import BLOCK
from devstack.process import ManagedProcess, free_port, wait_until
from devstack.redis_server import RedisServer
from sessions.adapters.redis.store import RedisStore, connect, transition_events
from sessions.adapters.redis.webhooks import WebhookLedger
from sessions.adapters.tasks import stop
from sessions.adapters.webhooks import WebhookSender
from sessions.domain.model import HistoryEntry, Phase, Reason, SessionKey, StoreUnavailable, utcnow
from sessions.domain.webhooks import WebhookEndpoint
from sessions.usecases.webhooks import PAGE, PARALLEL, EndpointDeliveries, NotLeading, RetryPolicy

SECRET_ENV = "BENCH_WEBHOOK_SECRET"  # noqa: S105 (the variable's name)
LEASE_TTL = timedelta(seconds=30)  # as controller/housekeeping_loop.py
SENDER_TIMEOUT = timedelta(seconds=10)  # the operator's default (webhook_timeout)


# --- the receiver (its own process) --------------------------------------------------------


def receiver_app(secret: str, delay_ms: float) -> web.Application:
    """Verifies each signature, records (id, receive ms, session, revision), answers 200."""
    webhook = Webhook(secret)
    records: list[tuple[str, float, str, int]] = []
    forged = 0

    async def hooks(request: web.Request) -> web.Response:
        nonlocal forged
        body = await request.read()
        received_ms = time.time() * 1000
        try:
            webhook.verify(body, dict(request.headers))
        except (WebhookVerificationError, KeyError):
            forged += 1
            return web.Response(status=401)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        data = json.loads(body)
        session = f"{data['botId']}:{data['userId']}"
        records.append((request.headers["webhook-id"], received_ms, session, data["revision"]))
        return web.Response(status=200)

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"taken": len(records), "forged": forged})

    async def everything(_: web.Request) -> web.Response:
        return web.json_response({"records": records, "forged": forged})

    app = web.Application()
    app.router.add_post("/hooks", hooks)
    app.router.add_get("/count", count)
    app.router.add_get("/records", everything)
    return app


def receive(args: argparse.Namespace) -> int:
    app = receiver_app(os.environ[SECRET_ENV], args.delay_ms)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


class ReceiverProcess(ManagedProcess):
    """`python -m bench.webhooks_benchmark receiver` on a free loopback port."""

    name = "webhook-receiver"

    def __init__(self, secret: str, delay_ms: float) -> None:
        super().__init__()
        self.secret = secret
        self.delay_ms = delay_ms
        self.port = free_port()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        argv = [sys.executable, "-m", "bench.webhooks_benchmark", "receiver"]
        argv += ["--port", str(self.port), "--delay-ms", f"{self.delay_ms:g}"]
        env = {**os.environ, SECRET_ENV: self.secret, "PYTHONPATH": str(REPO)}
        self._spawn(argv, env=env)
        wait_until(
            lambda: httpx.get(f"{self.base}/count", timeout=1).status_code == 200,
            30,
            "the webhook receiver",
            self.proc,
            self.log_path,
        )
        return self


# --- the emitter (its own process) ---------------------------------------------------------


async def write_events(
    store: RedisStore, bot: str, sessions: int, count: int, rate: float
) -> float:
    """`count` transitions round robin over `sessions` sessions of `bot`, `rate` a second
    (0: as fast as one after the other goes); returns the seconds taken."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(count):
        key = SessionKey(bot, f"u{n % sessions:04d}")
        entry = HistoryEntry(
            key,
            n // sessions + 1,
            Phase.CONNECTING,
            Phase.ACTIVE,
            Reason.CONNECTED,
            "bench",
            utcnow(),
        )
        if await store.emit(key, transition_events([entry])) != 1:
            raise RuntimeError(f"event {n} of {key} was not appended")
        if rate:
            delay = started + (n + 1) / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
    return loop.time() - started


async def emitting(args: argparse.Namespace) -> None:
    store = RedisStore(connect(args.redis_url))
    try:
        seconds = await write_events(store, args.bot, args.sessions, args.count, args.rate)
    finally:
        await store.close()
    print(json.dumps({"seconds": round(seconds, 3)}), flush=True)


async def emit_events(redis_url: str, bot: str, sessions: int, count: int, rate: float) -> float:
    """Runs the emitter process to its end (reaped: its CPU counts as the children's)."""
    argv = ["-m", "bench.webhooks_benchmark", "emit", "--redis-url", redis_url, "--bot", bot]
    argv += ["--sessions", str(sessions), "--count", str(count), "--rate", f"{rate:g}"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the emitter exited with {process.returncode}")
    seconds: float = json.loads(out)["seconds"]
    return seconds


# --- the deliverer (this process) ----------------------------------------------------------


class Deliverer:
    """What the operator's leader runs for one endpoint: the lease held, `step` looped."""

    def __init__(self, redis_url: str, endpoint: WebhookEndpoint) -> None:
        self.store = RedisStore(connect(redis_url))
        self.lease = self.store.lease("housekeeping", LEASE_TTL, "bench/webhooks")
        self.sender = WebhookSender(SENDER_TIMEOUT)
        self.leading = False
        self.deliveries = EndpointDeliveries(
            endpoint,
            self.store,
            WebhookLedger(self.store),
            self.sender,
            self.lease,
            lambda: self.leading,
            RetryPolicy(),
        )
        self.delivered = self.given_up = self.failed_attempts = self.steps = 0
        self.want = 0
        self.done = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def begin(self) -> str:
        """Take the lease and set the endpoint's cursor (the events from now on are its);
        returns the cursor."""
        self.leading = await self.lease.hold()
        if not self.leading:
            raise RuntimeError("the housekeeping lease is held elsewhere")
        self.tasks.append(asyncio.create_task(self.keep_lease()))
        await self.deliveries.step(BLOCK)
        cursor = await self.deliveries.ledger.cursor(self.deliveries.endpoint.name)
        assert cursor is not None
        return cursor

    async def keep_lease(self) -> None:
        while True:
            await asyncio.sleep(5)
            try:
                self.leading = await self.lease.hold()
            except StoreUnavailable:
                self.leading = False

    def start(self, want: int) -> None:
        """Loop `step` until `want` events are delivered (then `done` is set)."""
        self.want = want
        self.tasks.append(asyncio.create_task(self.loop()))

    async def loop(self) -> None:
        while True:
            try:
                outcome = await self.deliveries.step(BLOCK)
            except (StoreUnavailable, NotLeading):
                await asyncio.sleep(1)
                continue
            self.steps += 1
            self.delivered += outcome.delivered
            self.given_up += outcome.given_up
            self.failed_attempts += outcome.failed_attempts
            if self.delivered + self.given_up >= self.want:
                self.done.set()

    async def close(self) -> None:
        await stop(*self.tasks)
        await self.lease.release()
        await self.sender.close()
        await self.store.close()


# --- a run ---------------------------------------------------------------------------------


def secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def one_run(
    name: str,
    redis: RedisServer,
    args: argparse.Namespace,
    *,
    count: int,
    rate: float,
    delay_ms: float,
    backlog: bool,
) -> dict[str, Any]:
    """One endpoint, one receiver, `count` events of a bot of this run's own."""
    key = secret()
    bot = f"bench-{name}"
    with ReceiverProcess(key, delay_ms) as receiver:
        endpoint = WebhookEndpoint(name, f"{receiver.base}/hooks", key)
        deliverer = Deliverer(redis.url, endpoint)
        try:
            cursor = await deliverer.begin()
            meter = CpuMeter({"receiver": pid_of(receiver), "redis": pid_of(redis)}, "emitter")
            emit_seconds = None
            if backlog:
                log(f"{name}: emitting a backlog of {count:,} events over {args.sessions} sessions")
                emit_seconds = await emit_events(redis.url, bot, args.sessions, count, 0)
                log(f"{name}: emitted in {emit_seconds:.1f} s; delivering")
            mark, own, wall = meter.begin(), time.process_time(), time.time()
            deliverer.start(count)
            if not backlog:
                log(f"{name}: {count:,} events at {rate:g}/s over {args.sessions} sessions")
                emit_seconds = await emit_events(redis.url, bot, args.sessions, count, rate)
            timeout = max(60.0, 4 * count / 500 + (count * delay_ms / 1000 / PARALLEL))
            try:
                await asyncio.wait_for(deliverer.done.wait(), timeout)
            except TimeoutError:
                log(f"{name}: not all delivered within {timeout:.0f} s")
            cpu, deliverer_cpu = meter.end(mark), time.process_time() - own
            window = time.time() - wall
            async with httpx.AsyncClient(base_url=receiver.base, timeout=60) as client:
                taken = (await client.get("/records")).json()
            emitted = [
                item.id
                for item in await deliverer.store.events(cursor, count * 2 + 100)
                if item.key.bot_id == bot
            ]
        finally:
            await deliverer.close()
    return summary(
        name,
        count=count,
        rate=rate,
        delay_ms=delay_ms,
        wall_start_ms=wall * 1000,
        window=window,
        emit_seconds=emit_seconds,
        emitted=emitted,
        taken=taken,
        deliverer=deliverer,
        deliverer_cpu=deliverer_cpu,
        cpu=cpu,
    )


def summary(
    name: str,
    *,
    count: int,
    rate: float,
    delay_ms: float,
    wall_start_ms: float,
    window: float,
    emit_seconds: float | None,
    emitted: list[str],
    taken: dict[str, Any],
    deliverer: Deliverer,
    deliverer_cpu: float,
    cpu: dict[str, float],
) -> dict[str, Any]:
    records: list[list[Any]] = taken["records"]
    ids = [r[0] for r in records]
    unique = set(ids)
    latencies = sorted(r[1] - int(r[0].partition("-")[0]) for r in records)
    order: dict[str, list[int]] = {}
    seen: set[str] = set()
    for message, _, session, revision in records:
        if message not in seen:
            seen.add(message)
            order.setdefault(session, []).append(revision)
    in_order = all(revs == sorted(revs) for revs in order.values())
    last_ms = max((r[1] for r in records), default=wall_start_ms)
    seconds = (last_ms - wall_start_ms) / 1000  # from the loop's start to the last record
    delivered = len(unique)
    return {
        "name": name,
        "events": count,
        "rate": rate,
        "receiver_delay_ms": delay_ms,
        "emit_seconds": emit_seconds,
        "emitted": len(emitted),
        "received": len(records),
        "delivered": delivered,
        "missing": len(set(emitted) - unique),
        "unexpected": len(unique - set(emitted)),
        "duplicates": len(ids) - delivered,
        "forged": taken["forged"],
        "in_order_per_session": in_order,
        "sessions_seen": len(order),
        "given_up": deliverer.given_up,
        "failed_attempts": deliverer.failed_attempts,
        "steps": deliverer.steps,
        "deliver_seconds": round(seconds, 2),
        "events_per_s": round(delivered / seconds, 1) if seconds > 0 else None,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "window_seconds": round(window, 2),
        "deliverer_cpu_seconds": round(deliverer_cpu, 2),
        "deliverer_cpu_pct": round(100 * deliverer_cpu / window, 1),
        "deliverer_us_per_delivery": (
            round(1e6 * deliverer_cpu / delivered, 1) if delivered else None
        ),
        "cpu_pct": cpu,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "args": vars(args),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(git("status", "--porcelain").splitlines()),
        "loadavg_before": loadavg(),
        "page": PAGE,
        "parallel": PARALLEL,
        "others_busy_pct": await others_busy(),
    }
    runs: list[dict[str, Any]] = []
    with RedisServer() as redis:
        log(f"redis-server at {redis.url}")
        runs.append(
            await one_run(
                "latency",
                redis,
                args,
                count=math.ceil(args.rate * args.duration),
                rate=args.rate,
                delay_ms=0,
                backlog=False,
            )
        )
        runs.append(
            await one_run(
                "throughput", redis, args, count=args.backlog, rate=0, delay_ms=0, backlog=True
            )
        )
        if args.slow_backlog:
            runs.append(
                await one_run(
                    "slow",
                    redis,
                    args,
                    count=args.slow_backlog,
                    rate=0,
                    delay_ms=args.slow_ms,
                    backlog=True,
                )
            )
    result["runs"] = runs
    result["loadavg_after"] = loadavg()
    return result


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "| run | events | receiver | delivered | missing | dup | in order | p50 ms | "
        "p99 ms | max ms | events/s | deliverer CPU % | µs/delivery | receiver CPU % | "
        "Redis CPU % | emitter CPU % | machine % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["runs"]:
        cpu = r["cpu_pct"]
        how = f"{r['rate']:g}/s" if r["rate"] else "backlog"
        # a backlog's latencies are its events' age; a steady run's events/s is its rate
        p50, p99, most = (r["p50_ms"], r["p99_ms"], r["max_ms"]) if r["rate"] else ("-", "-", "-")
        rate = "-" if r["rate"] or r["events_per_s"] is None else f"{r['events_per_s']:,.0f}"
        lines.append(
            f"| {r['name']} ({how}) | {r['events']:,} | +{r['receiver_delay_ms']:g} ms | "
            f"{r['delivered']:,} | {r['missing']} | {r['duplicates']} | "
            f"{'yes' if r['in_order_per_session'] else 'NO'} | {p50} | {p99} | {most} | {rate} | "
            f"{r['deliverer_cpu_pct']} | "
            f"{r['deliverer_us_per_delivery']} | {cpu['receiver']} | {cpu['redis']} | "
            f"{cpu['emitter']} | {cpu['machine']} |"
        )
    odd = [
        f"{r['name']}: given up {r['given_up']}, failed attempts {r['failed_attempts']}, "
        f"forged {r['forged']}, unexpected {r['unexpected']}"
        for r in result["runs"]
        if r["given_up"] or r["failed_attempts"] or r["forged"] or r["unexpected"]
    ]
    if odd:
        lines += ["", *odd]
    lines.append(
        f"\nothers busy before the run: {result['others_busy_pct']} % of a core; "
        f"PAGE {result['page']}, PARALLEL {result['parallel']}"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--rate", type=float, default=100.0, help="transitions a second")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--backlog", type=int, default=20_000, help="events")
    parser.add_argument("--slow-backlog", type=int, default=5_000, help="events; 0: skip")
    parser.add_argument("--slow-ms", type=float, default=20.0, help="the slow receiver's delay")
    parser.add_argument("--json", help="write every figure and the machine's facts here")
    return parser.parse_args(argv)


def receiver_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="webhooks_benchmark receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    return parser.parse_args(argv)


def emitter_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="webhooks_benchmark emit")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--bot", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="a second; 0: as fast as it can")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["receiver"]:
        return receive(receiver_args(given[1:]))
    if given[:1] == ["emit"]:
        asyncio.run(emitting(emitter_args(given[1:])))
        return 0
    return benchmark_main(parse_args(given), run, table)


if __name__ == "__main__":
    raise SystemExit(main())
