"""Webhooks (issue 21, item 2) against a real receiver (tests/integration/webhook_receiver.py)
and a real redis-server: signed, retried, in order per session, complete across an API
restart and a Redis restart, exactly one replica delivering, given up after the window,
filtered, and visible in GET /v1/whatsapp/webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.controlplane import ControlPlane
from devstack.process import free_port
from devstack.redis_server import RedisServer
from sessions.adapters.redis.store import RedisStore, connect
from sessions.adapters.redis.webhooks import WebhookLedger
from sessions.adapters.tasks import stop
from sessions.adapters.webhooks import WebhookSender
from sessions.domain.model import ReportedState, SessionKey, StoreUnavailable
from sessions.domain.webhooks import WebhookEndpoint
from sessions.usecases.webhooks import EndpointDeliveries, NotLeading, RetryPolicy
from tests.conftest import eventually
from tests.integration.operator_stack import Stack, async_true, metric
from tests.integration.test_api import BOT, V1, auth
from tests.integration.test_api_events import report, serving
from tests.integration.webhook_receiver import SECRET, Receiver

pytestmark = pytest.mark.integration

FAST = RetryPolicy(
    window=timedelta(minutes=1),
    first=timedelta(milliseconds=50),
    most=timedelta(milliseconds=200),
)
LEASE_TTL = timedelta(seconds=2)


@asynccontextmanager
async def receiving(**options: Any) -> AsyncIterator[Receiver]:
    receiver = await Receiver(**options).start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def endpoint_for(receiver: Receiver, **filters: frozenset[str]) -> WebhookEndpoint:
    return WebhookEndpoint("crm", receiver.url, SECRET, **filters)


@dataclass
class Replica:
    """What the operator runs for webhooks (controller.housekeeping_loop keeps the lease,
    controller.webhooks steps the deliveries), on its own Redis connection."""

    deliveries: EndpointDeliveries
    leading: bool = False

    def leads(self) -> bool:
        return self.leading


@asynccontextmanager
async def replica(
    redis_url: str,
    endpoint: WebhookEndpoint,
    holder: str,
    policy: RetryPolicy = FAST,
    timeout: timedelta = timedelta(seconds=5),
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AsyncIterator[Replica]:
    store = RedisStore(connect(redis_url, retries=1, timeout=timedelta(seconds=2)))
    lease = store.lease("housekeeping", LEASE_TTL, holder)
    sender = WebhookSender(timeout)
    me = Replica(
        EndpointDeliveries(
            endpoint,
            store,
            WebhookLedger(store),
            sender,
            lease,
            lambda: me.leading,
            policy,
            clock=clock,
        )
    )

    async def keep_lease() -> None:
        while True:
            try:
                me.leading = await lease.hold()
            except StoreUnavailable:
                me.leading = False
            await asyncio.sleep(0.2)

    async def deliver() -> None:
        while True:
            try:
                await me.deliveries.step(timedelta(milliseconds=200))
            except (StoreUnavailable, NotLeading):
                await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(keep_lease()), asyncio.create_task(deliver())]
    try:
        yield me
    finally:
        await stop(*tasks)
        await sender.close()
        await store.close()


async def started(me: Replica) -> None:
    """The replica leads and has set the endpoint's cursor (events from now on are its)."""

    async def ready() -> bool:
        return me.leading and await me.deliveries.ledger.cursor("crm") is not None

    await eventually(ready, timeout=10, interval=0.05)


async def emit(store: RedisStore, user: str, revisions: range, bot: str = BOT) -> None:
    """Transitions of one session through the real emit script (lua/emit.lua)."""
    phases = ["connecting", "active", "inactive"]
    for revision in revisions:
        args: list[str | int] = [
            "transition",
            1,
            revision,
            phases[(revision - 2) % 3] if revision > 1 else "",
            phases[(revision - 1) % 3],
            "Connected",
            "test",
            1_700_000_000_000 + revision,
        ]
        await store.emit(SessionKey(bot, user), args)


def in_session_order(taken: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each session's revisions in the order the receiver first took them."""
    seen: set[str] = set()
    order: dict[str, list[int]] = {}
    for body in taken:
        if body["id"] in seen:
            continue
        seen.add(body["id"])
        order.setdefault(f"{body['botId']}:{body['userId']}", []).append(body["revision"])
    return order


async def test_events_reach_the_receiver_signed_in_order_across_api_and_redis_restarts(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """The receiver fails the first two attempts of every message. Reports go through the
    API; the API is restarted, then Redis (its data kept, as a persistent Redis would)."""
    users = [f"u{n}" for n in range(5)]
    states = ["connected", "disconnected", "connecting", "connected"]
    with RedisServer(persistent=True, workdir=tmp_path / "redis") as server:
        async with (
            receiving(fail_first=2) as receiver,
            replica(server.url, endpoint_for(receiver), "a") as me,
        ):
            await started(me)
            database = tmp_path / "db.sqlite3"
            with serving(controlplane, namespace, server.url, database) as base:
                for user in users:
                    await report(base, user, states[0])
            with serving(controlplane, namespace, server.url, database) as base:  # restarted
                for user in users:
                    await report(base, user, states[1])
                server.stop()
                server.start()  # the same port, the append-only file read back
                await _until_the_api_reads_redis(base, users[0])
                for state in states[2:]:
                    for user in users:
                        await _report_to_redis(base, user, state)
                store = RedisStore(connect(server.url))
                try:
                    kept = await store.events("0", 1000)
                    await WebhookLedger(store).publish([endpoint_for(receiver)])
                finally:
                    await store.close()
                # connected: connecting + active; then inactive; connecting; active
                assert len(kept) == len(users) * 5
                await receiver.wait_for(len(kept))
                async with httpx.AsyncClient(base_url=base) as client:
                    listed = await client.get(f"{V1}/webhooks", headers=auth("reader"))
    assert receiver.forged == 0
    assert set(receiver.taken_ids) == {item.id for item in kept}
    assert all(receiver.attempts[item.id] >= 3 for item in kept)  # two failures, then taken
    order = in_session_order(receiver.taken)
    assert order == {f"{BOT}:{user}": [1, 2, 3, 4, 5] for user in users}
    assert listed.status_code == 200, listed.text
    [crm] = listed.json()["webhooks"]
    assert crm["name"] == "crm"
    assert crm["url"] == f"http://127.0.0.1:{receiver.port}/hooks"  # no query: it may hold secrets
    assert crm["delivered"] >= len(kept)
    assert crm["failedAttempts"] >= 2 * len(kept)
    assert crm["lastError"]["message"] == "HTTP 503"
    assert crm["lastError"]["status"] == 503
    assert crm["waitingSince"] is None  # caught up
    assert crm["cursor"] == kept[-1].id


async def _until_the_api_reads_redis(base: str, user: str) -> None:
    """After a Redis restart the API skips Redis until its probe gets an answer, and a
    report meanwhile is answered redisPending: its events then come with the operator's
    sync, and this test runs no operator. So the reports wait until a read comes from
    Redis again (the same guard serves reads and writes)."""

    async def from_redis() -> bool:
        async with httpx.AsyncClient(base_url=base) as client:
            read = await client.get(
                f"{V1}/session-status/{BOT}", params={"userId": user}, headers=auth("reader")
            )
        return read.status_code == 200 and read.headers.get("X-Session-Source") == "redis"

    await eventually(from_redis, timeout=30)


async def _report_to_redis(base: str, user: str, state: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.post(
            f"{V1}/sessions/{BOT}/{user}/report", json={"state": state}, headers=auth("reporter")
        )
    assert response.status_code == 200, response.text
    assert response.json()["redisPending"] is False, response.text


async def test_exactly_one_replica_delivers_and_the_standby_takes_over(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    async with receiving() as receiver, contextlib.AsyncExitStack() as standby:
        endpoint = endpoint_for(receiver)
        async with contextlib.AsyncExitStack() as leader_alive:
            first = await leader_alive.enter_async_context(replica(redis_server.url, endpoint, "a"))
            await started(first)
            second = await standby.enter_async_context(replica(redis_server.url, endpoint, "b"))
            for user in ("u1", "u2", "u3"):
                await emit(redis_store, user, range(1, 11))
            await receiver.wait_for(30)
            await asyncio.sleep(0.5)  # were the standby delivering too, it would have by now
            assert first.leads() and not second.leads()
            assert len(receiver.taken_ids) == 30
        # the leader is gone without letting its lease go (as a SIGKILL): once the lease
        # expires the standby takes it and delivers from the cursor
        await emit(redis_store, "u4", range(1, 6))
        await receiver.wait_for(35, timeout=LEASE_TTL.total_seconds() + 20)
        assert second.leads()
    assert len(receiver.taken_ids) == len(set(receiver.taken_ids)) == 35
    assert in_session_order(receiver.taken) == {
        **{f"{BOT}:{user}": list(range(1, 11)) for user in ("u1", "u2", "u3")},
        f"{BOT}:u4": [1, 2, 3, 4, 5],
    }


async def test_a_replica_without_the_lease_cannot_move_the_cursor(
    redis_store: RedisStore,
) -> None:
    ledger = WebhookLedger(redis_store)
    holder = redis_store.lease("housekeeping", LEASE_TTL, "a")
    stale = redis_store.lease("housekeeping", LEASE_TTL, "b")
    assert await holder.hold()
    assert await ledger.advance("crm", holder, None, "5-0")
    assert not await ledger.advance("crm", stale, "5-0", "9-0")  # not the holder
    assert not await ledger.advance("crm", holder, "4-0", "9-0")  # moved since it was read
    assert await ledger.cursor("crm") == "5-0"


async def test_an_event_is_given_up_after_the_window_and_its_session_goes_on(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    """An endpoint that answers 500, then one that hangs: each attempt fails (the hang
    after the sender's timeout), and after the window the event is given up and counted;
    the session's next event is delivered once the endpoint takes them again."""
    window = RetryPolicy(window=timedelta(seconds=2), first=timedelta(milliseconds=50))
    async with (
        receiving(status=500) as receiver,
        replica(
            redis_server.url,
            endpoint_for(receiver),
            "a",
            policy=window,
            timeout=timedelta(milliseconds=300),
        ) as me,
    ):
        await started(me)
        await emit(redis_store, "u1", range(1, 2))
        await asyncio.sleep(1)
        receiver.hang()
        await asyncio.sleep(1.5)  # past the window: the attempt under way is the last
        receiver.status = 200
        receiver.answer()
        await emit(redis_store, "u1", range(2, 3))
        await receiver.wait_for(1, timeout=10)
        [status] = await _statuses(redis_store, me)
    assert [body["revision"] for body in receiver.taken] == [2]
    assert status.given_up == 1
    assert status.delivered == 1
    assert status.failed_attempts >= 3
    assert status.last_error is not None
    assert status.last_error.message in ("HTTP 500", "no answer within 0.3 s")


async def test_events_older_than_the_window_are_delivered_when_the_operator_was_away(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    """The window counts from when this replica began delivering, not only from the event:
    the leader's clock set two hours ahead makes every event look two hours old, and the
    endpoint, failing at first, still gets each of them."""
    window = RetryPolicy(window=timedelta(seconds=2), first=timedelta(milliseconds=50))

    def later() -> datetime:
        return datetime.now(UTC) + timedelta(hours=2)

    async with (
        receiving(fail_first=2) as receiver,
        replica(redis_server.url, endpoint_for(receiver), "a", policy=window, clock=later) as me,
    ):
        await started(me)
        await emit(redis_store, "u1", range(1, 4))
        await receiver.wait_for(3, timeout=10)
        [status] = await _statuses(redis_store, me)
    assert in_session_order(receiver.taken) == {f"{BOT}:u1": [1, 2, 3]}
    assert status.given_up == 0


async def _statuses(store: RedisStore, me: Replica) -> list[Any]:
    ledger = WebhookLedger(store)
    await ledger.publish([me.deliveries.endpoint])
    return await ledger.statuses()


async def test_an_endpoint_gets_only_the_bots_and_event_types_it_asks_for(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    async with receiving() as receiver:
        endpoint = endpoint_for(
            receiver, bots=frozenset({BOT}), events=frozenset({"transition.inactive"})
        )
        async with replica(redis_server.url, endpoint, "a") as me:
            await started(me)
            await emit(redis_store, "u1", range(1, 7))  # inactive at revisions 3 and 6
            await emit(redis_store, "u1", range(1, 4), bot="bot-other")
            await receiver.wait_for(2)
            await asyncio.sleep(0.5)
    assert [(b["botId"], b["revision"], b["to"]) for b in receiver.taken] == [
        (BOT, 3, "inactive"),
        (BOT, 6, "inactive"),
    ]


async def test_the_operator_delivers_what_its_settings_name_and_a_new_one_goes_on_after_a_crash(
    stack: Stack,
) -> None:
    """The real operator process, configured through BOTSESSION_WEBHOOKS: it delivers the
    transitions of reports (each after one failed attempt), counts them in its metrics, and
    after a SIGKILL the next operator goes on from the cursor, losing nothing. An operator
    configured without the endpoint takes it off the list."""
    port = free_port()
    async with receiving(fail_first=1) as receiver:
        config = json.dumps([{"name": "crm", "url": receiver.url, "secret": SECRET}])
        env = {"BOTSESSION_WEBHOOKS": config, "BOTSESSION_METRICS_PORT": str(port)}
        first = stack.operator(**env)
        with first:
            await eventually(lambda: _cursor_set(stack.redis), timeout=60)
            await stack.service.report(SessionKey(BOT, "w1"), ReportedState.CONNECTED)
            await receiver.wait_for(2, timeout=30)  # connecting, then active
            await eventually(
                lambda: async_true(metric(port, "botsession_webhook_deliveries_total") >= 2)
            )
            assert metric(port, "botsession_webhook_failed_attempts_total") >= 2
            first.kill()
        await stack.service.report(SessionKey(BOT, "w1"), ReportedState.DISCONNECTED)
        with stack.operator(**env):
            await receiver.wait_for(3, timeout=90)  # after the lease of the killed one lapsed
            assert [s.name for s in await WebhookLedger(stack.redis).statuses()] == ["crm"]
        with stack.operator(BOTSESSION_METRICS_PORT=str(port)):  # the endpoint taken out

            async def unlisted() -> bool:
                return await WebhookLedger(stack.redis).statuses() == []

            await eventually(unlisted, timeout=60)
    assert receiver.forged == 0
    assert in_session_order(receiver.taken) == {f"{BOT}:w1": [1, 2, 3]}
    assert [body["to"] for body in receiver.taken] == ["connecting", "active", "inactive"]


async def _cursor_set(store: RedisStore) -> bool:
    return await WebhookLedger(store).cursor("crm") is not None


def test_the_operator_refuses_a_bad_webhook_list_and_never_shows_its_secret(
    controlplane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    secret = "whsec_c2hvcnQ="  # too short
    config = json.dumps([{"name": "crm", "url": "https://crm.example/", "secret": secret}])
    result = subprocess.run(
        [sys.executable, "-m", "controller", "--namespace", namespace],
        env={
            **os.environ,
            "BOTSESSION_WEBHOOKS": config,
            "KUBECONFIG": str(controlplane.kubeconfig),
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "BOTSESSION_WEBHOOKS: entry 1 (crm): secret must be" in result.stderr
    assert secret not in result.stderr + result.stdout
