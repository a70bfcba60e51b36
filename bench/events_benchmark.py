"""Event fan-out: `--clients` SSE clients on GET /v1/whatsapp/session-events while
`--rate` transitions a second are written, for `--duration` seconds (issue 21, item 2).

  .venv/bin/python -m bench.events_benchmark --json /tmp/events.json   # 100 clients, 100/s
  .venv/bin/python -m bench.events_benchmark --clients 10 --duration 5 # quick check

The API runs as in bench/api_benchmark.py (`python -m bench.bare_app api` under uvicorn, its
servers from bench/testbed.py). The transitions are appended to the session events in
Redis here, one every 1/rate s, through RedisStore.emit: the same stream append that the
write_state script does after a report (the API's cost under test is the fan-out, not the
report). A delivery's latency is the moment a client has parsed the event minus the
event's id (the Redis server's clock in ms when it was appended; one machine, one clock).
CPU of the API's process tree over the window, as % of one core (bench.measure.CpuMeter).
Every client must get every event: missing ones are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

import httpx

from bench.api_benchmark import serving
from bench.measure import CpuMeter, benchmark_main, git, loadavg, log, pid_of
from bench.testbed import stack
from sessions.adapters.redis.store import RedisStore, connect, transition_events
from sessions.domain.model import HistoryEntry, Phase, Reason, SessionKey, utcnow

PATH = "/v1/whatsapp/session-events"


async def listen(
    url: str, token: str, want: int, latencies: list[float], ready: asyncio.Event
) -> int:
    """One client: the latencies of the events it got (appended), returns how many."""
    got = 0
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(10.0, read=120.0)  # a quiet stream has a comment every 15 s
    async with (
        httpx.AsyncClient(base_url=url, timeout=timeout) as client,
        client.stream("GET", PATH, headers=headers) as response,
    ):
        response.raise_for_status()
        ready.set()
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                sent_ms = int(line[4:].partition("-")[0])
                latencies.append(time.time() * 1000 - sent_ms)
                got += 1
                if got == want:
                    return got
    return got


async def write_events(store: RedisStore, rate: float, count: int) -> float:
    """`count` transitions at `rate` a second over 100 sessions; returns the seconds taken."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(count):
        key = SessionKey("bench-events", f"u{n % 100}")
        entry = HistoryEntry(
            key, n // 100 + 1, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED, "bench", utcnow()
        )
        await store.emit(key, transition_events([entry]))
        delay = started + (n + 1) / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return loop.time() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "args": vars(args),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(git("status", "--porcelain").splitlines()),
        "loadavg_before": loadavg(),
    }
    result.update(await fan_out(args))
    result["loadavg_after"] = loadavg()
    return result


async def fan_out(args: argparse.Namespace) -> dict[str, Any]:
    want = int(args.rate * args.duration)
    async with stack(args) as st:
        with serving("api", args, st.env(args.log_level)) as api:
            store = RedisStore(connect(st.redis.url))
            latencies: list[float] = []
            readies = [asyncio.Event() for _ in range(args.clients)]
            clients = [
                asyncio.create_task(listen(api.url, st.token, want, latencies, ready))
                for ready in readies
            ]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
            await asyncio.sleep(2)  # every stream is subscribed to the API's reader
            log(f"{args.clients} clients listening; {want} events at {args.rate}/s")
            meter = CpuMeter({"api": pid_of(api), **st.roots()})
            mark = meter.begin()
            seconds = await write_events(store, args.rate, want)
            done, pending = await asyncio.wait(clients, timeout=30)
            cpu = meter.end(mark)
            for task in pending:
                task.cancel()
            got = [task.result() for task in done]
            await store.close()
    ordered = sorted(latencies)
    return {
        "clients": args.clients,
        "rate": args.rate,
        "events": want,
        "write_seconds": round(seconds, 2),
        "deliveries": len(ordered),
        "missing": args.clients * want - sum(got),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 1),
        "max_ms": round(ordered[-1], 1),
        "cpu_pct": cpu,
    }


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    cpu = result["cpu_pct"]
    return "\n".join(
        [
            "| clients | events/s | deliveries | missing | p50 ms | p99 ms | max ms | "
            "API CPU % | Redis CPU % |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {result['clients']} | {result['rate']:g} | {result['deliveries']:,} | "
            f"{result['missing']} | {result['p50_ms']} | {result['p99_ms']} | "
            f"{result['max_ms']} | {cpu['api']} | {cpu['redis']} |",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0, help="transitions a second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loop", default="uvloop")
    parser.add_argument("--http", default="httptools")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--keep-logs", help="copy the API's log into this directory")
    parser.add_argument("--json", help="write every figure and the machine's facts here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(parse_args(argv), run, table)


if __name__ == "__main__":
    raise SystemExit(main())
