"""GET /v1/whatsapp/session-events (issue 21, item 2) on real uvicorn servers, the real API
server and a real redis-server: live events, filters, resuming with Last-Event-ID across a
restart of the API, and the errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.controlplane import ControlPlane
from devstack.redis_server import RedisServer
from sessions.adapters.redis.store import RedisStore, connect
from tests.integration.test_api import BOT, V1, auth, session_settings
from tests.integration.test_api import serving as serving_app

pytestmark = pytest.mark.integration


@contextmanager
def serving(
    controlplane: ControlPlane, namespace: str, redis_url: str, database: Path
) -> Iterator[str]:
    """One API process until the block ends."""
    settings = session_settings(namespace, redis_url, f"sqlite+aiosqlite:///{database}")
    with serving_app(controlplane.kubeconfig, settings) as url:
        yield url


@pytest.fixture
async def fresh_redis(redis_server: RedisServer) -> RedisServer:
    store = RedisStore(connect(redis_server.url))
    await store.client.flushall()
    await store.close()
    return redis_server


class Frames:
    """An SSE response read frame by frame: (event, id, data) of each event."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next_event(self, timeout: float = 10) -> tuple[str, str, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            fields: dict[str, str] = {}
            async for line in self.lines:
                if line == "":
                    if "data" in fields:
                        return (
                            fields.get("event", "message"),
                            fields["id"],
                            json.loads(fields["data"]),
                        )
                    fields = {}
                    continue
                name, _, value = line.partition(":")
                if name:  # a comment has none
                    fields[name] = value.removeprefix(" ")
            raise AssertionError("the stream ended")


@asynccontextmanager
async def listening(base: str, **params: str) -> AsyncIterator[Frames]:
    headers = auth("reader")
    if "last_event_id" in params:
        headers["Last-Event-ID"] = params.pop("last_event_id")
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        client.stream("GET", f"{V1}/session-events", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Frames(response)


async def report(base: str, user: str, state: str, bot: str = BOT) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.post(
            f"{V1}/sessions/{bot}/{user}/report", json={"state": state}, headers=auth("reporter")
        )
        assert response.status_code in (200, 201), response.text


async def test_a_report_reaches_a_listening_client_in_order(
    controlplane: ControlPlane, namespace: str, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    with serving(controlplane, namespace, fresh_redis.url, tmp_path / "db.sqlite3") as base:
        async with listening(base, botId=BOT) as frames:
            await asyncio.sleep(0.5)  # the fan-out has read the stream's end
            await report(base, "u1", "connected", bot="bot-other")  # filtered out
            await report(base, "u1", "connected")
            first = await frames.next_event()
            second = await frames.next_event()
    assert first[0] == second[0] == "transition"
    assert first[2] == {
        "id": first[1],
        "type": "transition",
        "botId": BOT,
        "userId": "u1",
        "incarnation": first[2]["incarnation"],
        "revision": 1,
        "from": None,
        "to": "connecting",
        "reason": "Created",
        "actor": "bot-runner",
        "at": first[2]["at"],
    }
    assert (second[2]["revision"], second[2]["from"], second[2]["to"]) == (
        2,
        "connecting",
        "active",
    )


async def test_a_client_resumes_with_last_event_id_after_the_api_restarted(
    controlplane: ControlPlane, namespace: str, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    database = tmp_path / "db.sqlite3"
    with serving(controlplane, namespace, fresh_redis.url, database) as base:
        async with listening(base, botId=BOT, userId="u2") as frames:
            await asyncio.sleep(0.5)
            await report(base, "u2", "connecting")
            _, seen, _ = await frames.next_event()
        await report(base, "u2", "connected")  # missed: nobody listens
        await report(base, "u2", "disconnected")
    with serving(controlplane, namespace, fresh_redis.url, database) as again:  # a new process
        async with listening(again, botId=BOT, userId="u2", last_event_id=seen) as frames:
            missed = [await frames.next_event(), await frames.next_event()]
            await report(again, "u2", "connecting")
            live = await frames.next_event()
    assert [(e[2]["revision"], e[2]["to"]) for e in [*missed, live]] == [
        (2, "active"),
        (3, "inactive"),
        (4, "connecting"),
    ]


async def test_the_errors(
    controlplane: ControlPlane, namespace: str, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    with serving(controlplane, namespace, fresh_redis.url, tmp_path / "db.sqlite3") as base:
        await report(base, "u3", "connected")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            url = f"{V1}/session-events"
            anonymous = await client.get(url)
            assert anonymous.status_code == 401
            reporter = await client.get(url, headers=auth("reporter"))
            assert reporter.status_code == 403
            for params, headers in (
                ({"userId": "u3"}, {}),  # userId without botId
                ({}, {"Last-Event-ID": "yesterday"}),
                ({"botId": "bot:1"}, {}),
            ):
                bad = await client.get(url, params=params, headers={**auth("reader"), **headers})
                assert bad.status_code == 422, (params, headers)
                assert bad.json()["error"]["code"] == "invalid_input"
            gone = await client.get(url, headers={**auth("reader"), "Last-Event-ID": "1-0"})
            assert gone.status_code == 410
            assert gone.json()["error"]["code"] == "events_expired"


async def test_a_ticket_opens_the_stream_without_the_header(
    controlplane: ControlPlane, namespace: str, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    """What a browser's EventSource does (it cannot send Authorization): trade the token
    for a ticket, then open the stream with ?ticket=."""
    with serving(controlplane, namespace, fresh_redis.url, tmp_path / "db.sqlite3") as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            issued = await client.post(f"{V1}/session-events/tickets", headers=auth("reader"))
            assert issued.status_code == 201, issued.text
            ticket = issued.json()["ticket"]
            assert issued.json()["expiresAt"].endswith("Z")
            refused = await client.post(f"{V1}/session-events/tickets", headers=auth("reporter"))
            assert refused.status_code == 403
            for wrong in ("x" * 43, "short"):
                bad = await client.get(f"{V1}/session-events", params={"ticket": wrong})
                assert bad.status_code == 401
                assert bad.json()["error"]["code"] == "unauthorized"
            async with client.stream(
                "GET", f"{V1}/session-events", params={"ticket": ticket, "botId": BOT}
            ) as response:
                assert response.status_code == 200
                frames = Frames(response)
                await asyncio.sleep(0.5)
                await report(base, "u4", "connecting")
                kind, _, data = await frames.next_event()
    assert (kind, data["userId"], data["to"]) == ("transition", "u4", "connecting")
