"""Bots that keep reporting and heartbeating while something else happens to the
installation (a `helm upgrade`). Each session cycles connecting -> connected -> three
heartbeats -> disconnected, one request a second; a step that failed with a 5xx or a
transport error is retried, a 4xx is kept and skipped (the test then fails on it). Every
request's outcome is kept, so the error window can be measured afterwards. The bots run in
a thread of their own (an asyncio loop with httpx), so the test can drive helm and kubectl
meanwhile; when stopped, each bot ends on an `active` session."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

CYCLE = ("connecting", "connected", "heartbeat", "heartbeat", "heartbeat", "disconnected")
PHASE = {"connecting": "connecting", "connected": "active", "disconnected": "inactive"}
GIVE_UP = 60.0  # seconds a stopped bot keeps retrying to reach `active`


@dataclass(frozen=True)
class Outcome:
    user: str
    step: str
    started: float  # time.monotonic()
    ended: float
    status: str  # the HTTP status, or the transport error's name
    detail: str = ""  # a failure's answer (or error), shortened

    @property
    def ok(self) -> bool:
        return self.status in ("200", "201")

    @property
    def client_error(self) -> bool:
        return self.status.isdigit() and 400 <= int(self.status) < 500


@dataclass
class Bots:
    base_url: str
    token: str
    bot: str
    users: list[str]
    interval: float = 1.0
    outcomes: list[Outcome] = field(default_factory=list)
    phase: dict[str, str] = field(default_factory=dict)  # set by the last successful report

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=len(self.users))
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=10, limits=limits
        ) as client:
            await asyncio.gather(*(self.session(client, u, stop) for u in self.users))

    async def session(self, client: httpx.AsyncClient, user: str, stop: asyncio.Event) -> None:
        await asyncio.sleep(self.interval * self.users.index(user) / len(self.users))
        step, stopped_at = 0, 0.0
        while True:
            if stop.is_set():
                stopped_at = stopped_at or time.monotonic()
                if self.phase.get(user) == "active" or time.monotonic() - stopped_at > GIVE_UP:
                    return
            outcome = await self.send(client, user, CYCLE[step % len(CYCLE)])
            if outcome.ok or outcome.client_error:
                step += 1
            await asyncio.sleep(self.interval if outcome.ok else self.interval / 2)

    async def send(self, client: httpx.AsyncClient, user: str, step: str) -> Outcome:
        path = f"/v1/whatsapp/sessions/{self.bot}/{user}/"
        body: dict[str, Any] | None = None if step == "heartbeat" else {"state": step}
        started = time.monotonic()
        try:
            reply = await client.post(path + ("heartbeat" if body is None else "report"), json=body)
            status, detail = str(reply.status_code), reply.text[:300]
        except httpx.HTTPError as exc:
            status, detail = type(exc).__name__, str(exc)[:300]
        outcome = Outcome(user, step, started, time.monotonic(), status)
        if not outcome.ok:
            outcome = dataclasses.replace(outcome, detail=detail)
        elif body is not None:  # a report that wrote the BotSession but not every store
            answer = reply.json()
            pending = [s for s in ("redis", "database") if answer.get(f"{s}Pending")]
            outcome = dataclasses.replace(outcome, detail=" ".join(pending))
        self.outcomes.append(outcome)
        if outcome.ok and step in PHASE:
            self.phase[user] = PHASE[step]
        return outcome

    def connected_once(self) -> bool:
        return all(
            any(o.ok and o.step == "connected" and o.user == u for o in self.outcomes)
            for u in self.users
        )

    def each_succeeded_since(self, since: float) -> bool:
        done = {o.user for o in self.outcomes if o.ok and o.started >= since}
        return done == set(self.users)


def measure(outcomes: list[Outcome], since: float) -> dict[str, Any]:
    """The failed requests: how many, by status, and the window they fall in (seconds from
    the first failed request's start to the last one's end; and the number of distinct
    seconds that saw one), offsets relative to `since`."""
    failed = [o for o in outcomes if not o.ok]
    window: dict[str, Any] = {
        "requests": len(outcomes),
        "failures": len(failed),
        "failuresByStatus": dict(Counter(o.status for o in failed)),
        "reportsWithPendingStores": len([o for o in outcomes if o.ok and o.detail]),
        "errorWindowSeconds": 0.0,
        "secondsWithFailures": len({int(o.started - since) for o in failed}),
        "firstFailureAt": None,
        "lastFailureAt": None,
    }
    if failed:
        first, last = min(o.started for o in failed), max(o.ended for o in failed)
        window["errorWindowSeconds"] = round(last - first, 2)
        window["firstFailureAt"] = round(first - since, 2)
        window["lastFailureAt"] = round(last - since, 2)
    return window


class BackgroundBots:
    """Runs `Bots` in a thread until the `with` block ends (then waits for them to settle)."""

    def __init__(self, bots: Bots) -> None:
        self.bots = bots
        self.thread = threading.Thread(target=self._main, name="bots", daemon=True)
        self.started = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            self.started.set()
            await self.bots.run(self.stop_event)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by __exit__
            self.error = exc
        finally:
            self.started.set()

    def __enter__(self) -> Self:
        self.thread.start()
        self.started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(GIVE_UP + 30)
        if self.thread.is_alive():
            raise AssertionError("the bots did not stop")
        if self.error is not None:
            raise AssertionError(f"the bots failed: {self.error!r}")
