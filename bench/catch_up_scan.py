"""What the catch-up's look once a second costs with N BotSessions in the operator's index:
the pass over every record it made until `c900f71` (waiting_since of each) against its look
at the unsynced ones the index now keeps as events come. Pure CPU, no servers: the index is
filled through its own event handling with N in-step BotSessions and `--behind` that are not.

  .venv/bin/python -m bench.catch_up_scan --sessions 100000 --behind 100
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from bench.measure import log
from controller.catch_up import CatchUp
from sessions.adapters.kubernetes.botsessions import manifest
from sessions.adapters.kubernetes.informer import BotSessionIndex
from sessions.domain.model import Identity, SessionKey, utcnow
from sessions.domain.settings import load_settings


class Service:
    clock = staticmethod(utcnow)


class Runtime:
    service = Service()
    settings = load_settings(catch_up_after="3s")


def body(i: int, behind: bool) -> dict[str, Any]:
    item = manifest(SessionKey("bench-bot", f"user-{i:06d}"), Identity(), "bench")
    item["metadata"] |= {
        "uid": f"uid-{i:06d}",
        "creationTimestamp": "2026-12-01T00:00:00Z",
        "generation": 1,
        "resourceVersion": str(i + 1),
    }
    entry = {"revision": 2, "from": "connecting", "to": "active", "reason": "Connected"}
    item["status"] = {
        "phase": "active",
        "reason": "Connected",
        "revision": 2,
        "syncedRevision": 1 if behind else 2,
        "observedGeneration": 1,
        "recentTransitions": [entry | {"actor": "api", "at": "2026-12-01T00:00:00Z"}],
    }
    return item


def per_call_ms(call: Callable[[], object], seconds: float = 3.0) -> float:
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        calls += 1
    return (time.perf_counter() - started) * 1000 / calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--behind", type=int, default=100, help="BotSessions not in step")
    args = parser.parse_args(argv)
    index = BotSessionIndex(cast(Any, None), "bench")
    for i in range(args.sessions):
        index._apply({"type": "ADDED", "object": body(i, i < args.behind)})
    index.filled.set()
    catch_up = CatchUp(cast(Any, Runtime()), cast(Any, None), index, lambda: True)

    def every_record() -> object:  # the catch-up's pass before c900f71
        return [r for r in index.records() if r.waiting_since is not None]

    async def measure() -> tuple[float, float]:  # due() reads the running loop's clock
        return per_call_ms(every_record), per_call_ms(catch_up.due)

    before, after = asyncio.run(measure())
    log(
        f"{args.sessions:,} BotSessions, {args.behind:,} behind: a pass over every record "
        f"{before:.2f} ms ({before / 10:.2f} % of a core at one a second), the unsynced ones "
        f"{after:.3f} ms ({after / 10:.3f} %)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
