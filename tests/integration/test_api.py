"""The REST API in-process (httpx over ASGI) or on a real uvicorn, against the real control
plane, Redis and SQLite/PostgreSQL; the end-to-end tests with the real operator running.

Every test here also checks that no log record it caused holds an API token, the control
plane's token or a test phone number (the autouse fixture `no_secrets_in_logs`)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi import FastAPI

from api.app import GC_THRESHOLDS, create_app
from api.middleware import FastPath, HeartbeatFastPath, StatusFastPath
from api.settings import ApiSettings
from devstack.controlplane import ControlPlane
from devstack.kubectl import kubectl
from devstack.postgres_server import PostgresServer
from devstack.process import free_port
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.botsessions import resource_name
from sessions.adapters.redis.store import RedisStore, connect
from sessions.domain.logs import JsonFormatter, quiet_data_loggers
from sessions.domain.model import Phase, Reason, SessionKey, parse_time
from sessions.domain.settings import Settings, load_settings
from sessions.runtime import Runtime
from tests.conftest import OperatorEnv, eventually

pytestmark = pytest.mark.integration

TOKENS = {
    "admin": ("ops", "admin-9f8e7d6c5b4a3210fedcba98"),
    "reader": ("frontend", "read-0a1b2c3d4e5f60718293a4b5"),
    "reporter": ("bot-runner", "report-77aa88bb99cc00dd11ee22ff"),
    "both": ("dashboard", "both-5555666677778888999900001"),
}
SCOPES = {
    "admin": ["admin"],
    "reader": ["read"],
    "reporter": ["report"],
    "both": ["read", "report"],
}
TOKENS_JSON = json.dumps(
    [
        {"name": name, "token": token, "scopes": SCOPES[kind]}
        for kind, (name, token) in TOKENS.items()
    ]
)
PHONE = "4915112345678"
PHONE_2 = "4917098765432"
BOT = "bot-1"
USER = "user-1"
KEY = SessionKey(BOT, USER)
IDENTITY = {"phoneNumber": PHONE, "displayName": "Jane", "sessionId": "session_123"}
V1 = "/v1/whatsapp"


def auth(kind: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[kind][1]}"}


# --- no secrets in any log record ------------------------------------------------------

_FORMATTER = JsonFormatter()


def record_texts(record: logging.LogRecord) -> list[str]:
    """A record as raw (unredacted) text, and as the JSON line the API would print."""
    raw = json.dumps(
        {
            "message": record.getMessage(),
            "fields": getattr(record, "fields", None),
            "args": repr(record.args),
        },
        default=str,
        ensure_ascii=False,
    )
    exception = _FORMATTER.formatException(record.exc_info) if record.exc_info else ""
    return [raw, exception, _FORMATTER.format(record)]


def leaks(records: list[logging.LogRecord], secrets: list[str]) -> list[str]:
    return [
        text
        for record in records
        for text in record_texts(record)
        if any(secret in text for secret in secrets)
    ]


@pytest.fixture
def secrets_to_hide(controlplane: ControlPlane) -> list[str]:
    return [token for _name, token in TOKENS.values()] + [PHONE, PHONE_2, controlplane.token]


@pytest.fixture(autouse=True)
def no_secrets_in_logs(
    caplog: pytest.LogCaptureFixture, secrets_to_hide: list[str]
) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    quiet_data_loggers()  # as every component does; the test's own httpx client logs URLs
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert leaks(records, secrets_to_hide) == []


# --- serving the app -------------------------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI
    runtime: Runtime
    namespace: str

    async def report(
        self, state: str, user: str = USER, bot: str = BOT, who: str = "reporter", **body: Any
    ) -> httpx.Response:
        return await self.client.post(
            f"{V1}/sessions/{bot}/{user}/report", json={"state": state, **body}, headers=auth(who)
        )

    async def status(self, bot: str = BOT, who: str = "reader", **params: str) -> httpx.Response:
        return await self.client.get(f"{V1}/session-status/{bot}", params=params, headers=auth(who))

    async def clear(self, bot: str = BOT, who: str = "admin", **body: Any) -> httpx.Response:
        return await self.client.post(f"{V1}/clear-session/{bot}", json=body, headers=auth(who))


API_SETTINGS = ApiSettings.model_validate(
    {"tokens": TOKENS_JSON, "tokens_file": None, "ready_timeout": 3.0}
)


def session_settings(namespace: str, redis_url: str, database_url: str, **extra: Any) -> Settings:
    return load_settings(
        namespace=namespace,
        redis_url=redis_url,
        database_url=database_url,
        redis_retries=0,
        redis_timeout="1s",
        **extra,
    )


def make_app(
    kubeconfig: Path,
    settings: Settings,
    migrate: bool = True,
    api_settings: ApiSettings = API_SETTINGS,
) -> FastAPI:
    return create_app(
        settings,
        # no operator runs here: a cleared BotSession born with its finalizer would stay
        runtime_factory=lambda s: Runtime.open(
            s, kubeconfig=str(kubeconfig), migrate=migrate, finalizer=None
        ),
        api_settings=api_settings,
    )


@asynccontextmanager
async def serve(
    kubeconfig: Path,
    namespace: str,
    redis_url: str,
    database_url: str,
    migrate: bool = True,
    api_settings: ApiSettings = API_SETTINGS,
    **extra: Any,
) -> AsyncIterator[Api]:
    settings = session_settings(namespace, redis_url, database_url, **extra)
    app = make_app(kubeconfig, settings, migrate, api_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, app, app.state.runtime, namespace)


@pytest.fixture
async def api(
    controlplane: ControlPlane, namespace: str, redis_server: RedisServer, database_url: str
) -> AsyncIterator[Api]:
    """The app on a fresh namespace, the shared Redis (emptied), SQLite or PostgreSQL; no
    operator (BotSessions have no finalizer, so deletions are immediate)."""
    store = RedisStore(connect(redis_server.url))
    await store.client.flushall()
    await store.close()
    async with serve(
        controlplane.kubeconfig, namespace, redis_server.url, database_url, clear_wait="2s"
    ) as served:
        yield served


@pytest.fixture
async def operator_api(
    controlplane: ControlPlane, operator_env: OperatorEnv, redis_server: RedisServer
) -> AsyncIterator[Api]:
    """The app beside the real operator, sharing its namespace, Redis and database."""
    async with serve(
        controlplane.kubeconfig,
        operator_env.namespace,
        redis_server.url,
        operator_env.database_url,
        clear_wait="20s",
    ) as served:
        yield served


def broken_kubeconfig(controlplane: ControlPlane, path: Path) -> Path:
    """A kubeconfig whose server nothing listens on."""
    config = controlplane.kubeconfig_dict()
    config["clusters"][0]["cluster"] = {
        "server": "https://127.0.0.1:1",
        "insecure-skip-tls-verify": True,
    }
    path.write_text(yaml.safe_dump(config))
    return path


# --- health ----------------------------------------------------------------------------


async def test_healthz_and_readyz_need_no_token(api: Api) -> None:
    health = await api.client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"success": True, "status": "ok"})
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "success": True,
        "checks": {
            name: {"ok": True, "detail": None}
            for name in ("kubernetes", "redis", "database", "schema")
        },
    }


async def test_not_ready_until_the_schema_is_current(
    controlplane: ControlPlane, namespace: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
    async with serve(
        controlplane.kubeconfig, namespace, redis_server.url, database_url, migrate=False
    ) as api:
        ready = await api.client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["success"] is False and body["error"]["code"] == "not_ready"
        assert body["error"]["message"] == "not ready: schema"
        assert body["checks"]["schema"]["ok"] is False
        assert "botsession migrate" in body["checks"]["schema"]["detail"]
        assert body["checks"]["kubernetes"]["ok"] and body["checks"]["database"]["ok"]
        # the health probe does not care
        assert (await api.client.get("/healthz")).status_code == 200


# --- auth ------------------------------------------------------------------------------

# (method, path, body, the scope it needs)
ENDPOINTS = [
    ("GET", f"{V1}/session-status/{BOT}", None, "read"),
    ("GET", f"{V1}/sessions/{BOT}", None, "read"),
    ("GET", f"{V1}/sessions/{BOT}/{USER}", None, "read"),
    ("POST", f"{V1}/sessions/{BOT}/{USER}/report", {"state": "connecting"}, "report"),
    ("POST", f"{V1}/sessions/{BOT}/{USER}/heartbeat", None, "report"),
    ("POST", f"{V1}/clear-session/{BOT}", {"userId": USER}, "report"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS]
)
async def test_every_endpoint_needs_a_token_with_its_scope(
    api: Api, method: str, path: str, body: Any, scope: str
) -> None:
    cases: list[tuple[dict[str, str], int, str]] = [
        ({}, 401, "missing bearer token (Authorization: Bearer <token>)"),
        ({"Authorization": "Bearer not-a-token"}, 401, "invalid token"),
        ({"Authorization": f"Basic {TOKENS['admin'][1]}"}, 401, "missing bearer token"),
        ({"Authorization": f"Bearer {TOKENS['admin'][1]}x"}, 401, "invalid token"),
    ]
    for headers, status, message in cases:
        response = await api.client.request(method, path, json=body, headers=headers)
        assert response.status_code == status, response.text
        assert response.json()["success"] is False
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.json()["error"]["message"].startswith(message)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = "reporter" if scope == "read" else "reader"
    response = await api.client.request(method, path, json=body, headers=auth(wrong))
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "error": {
            "code": "forbidden",
            "message": f"token {TOKENS[wrong][0]!r} lacks the {scope} scope",
            "required": scope,
        },
    }
    # the right scope, and admin (which implies every scope), get past auth
    for kind in ("reader" if scope == "read" else "reporter", "admin", "both"):
        response = await api.client.request(method, path, json=body, headers=auth(kind))
        assert response.status_code not in (401, 403), response.text


async def test_the_token_name_is_the_actor(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await api.report("connected", **IDENTITY)
    await api.report("disconnected", who="admin", reason="LoggedOut")
    requests = [r for r in caplog.records if r.getMessage() == "request"]
    assert [r.fields["actor"] for r in requests] == ["bot-runner", "ops"]  # type: ignore[attr-defined]
    history = await api.runtime.sql.history(KEY)
    assert [(e.to_phase, e.actor) for e in history] == [
        (Phase.INACTIVE, "ops"),
        (Phase.ACTIVE, "bot-runner"),
        (Phase.CONNECTING, "bot-runner"),
    ]
    record = await api.runtime.botsessions.get(KEY)
    assert record is not None and [e.actor for e in record.recent] == ["bot-runner"] * 2 + ["ops"]


# --- report ----------------------------------------------------------------------------


async def test_first_report_creates_the_session_everywhere(api: Api) -> None:
    response = await api.report("connecting", **IDENTITY)
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"{V1}/sessions/{BOT}/{USER}"
    body = response.json()
    session = body["session"]
    assert body["success"] is True and body["created"] is True
    assert (body["redisPending"], body["databasePending"]) == (False, False)
    assert {k: session[k] for k in ("botId", "userId", "status", "reason", "revision")} == {
        "botId": BOT,
        "userId": USER,
        "status": "connecting",
        "reason": "Created",
        "revision": 1,
    }
    assert (session["phoneNumber"], session["displayName"], session["sessionId"]) == (
        PHONE,
        "Jane",
        "session_123",
    )
    assert session["lastSeen"].endswith("Z") and session["expiresAt"].endswith("Z")
    assert body["transitions"] == [
        {
            "revision": 1,
            "from": None,
            "to": "connecting",
            "reason": "Created",
            "actor": "bot-runner",
            "at": session["lastSeen"],
        }
    ]
    record = await api.runtime.botsessions.get(KEY)
    assert record is not None and (record.phase, record.revision) == (Phase.CONNECTING, 1)
    assert record.identity.phone_number == PHONE
    stored = await api.runtime.redis.get(KEY)
    assert stored is not None and stored.phase is Phase.CONNECTING
    row = await api.runtime.sql.get(KEY)
    assert row is not None and row.revision == 1


async def test_reports_move_the_phase_and_repeat_harmlessly(api: Api) -> None:
    assert (await api.report("connecting", **IDENTITY)).status_code == 201
    connected = await api.report("connected")
    assert connected.status_code == 200
    assert [(t["from"], t["to"], t["reason"]) for t in connected.json()["transitions"]] == [
        ("connecting", "active", "Connected")
    ]
    again = await api.report("connected")
    assert again.status_code == 200
    assert again.json()["transitions"] == [] and again.json()["created"] is False
    assert again.json()["session"]["revision"] == 2
    # a bot that restarts: active -> inactive (Restarted) -> connecting
    restarted = await api.report("connecting")
    assert [(t["to"], t["reason"]) for t in restarted.json()["transitions"]] == [
        ("inactive", "Restarted"),
        ("connecting", "Reconnecting"),
    ]
    failed = await api.report("failed", reason="ConnectTimeout")
    assert failed.json()["session"]["status"] == "failed"
    assert failed.json()["session"]["reason"] == "ConnectTimeout"


async def test_a_first_report_of_connected_records_both_steps(api: Api) -> None:
    response = await api.report("connected", user="user-2", phoneNumber=PHONE_2)
    assert response.status_code == 201
    assert [(t["revision"], t["to"]) for t in response.json()["transitions"]] == [
        (1, "connecting"),
        (2, "active"),
    ]


async def test_the_first_report_sets_the_session_s_heartbeat_timeout(api: Api) -> None:
    response = await api.report("connected", heartbeatTimeoutSeconds=45)
    assert response.status_code == 201
    record = await api.runtime.botsessions.get(KEY)
    assert record is not None and record.heartbeat_timeout_seconds == 45
    beat = await api.client.post(f"{V1}/sessions/{BOT}/{USER}/heartbeat", headers=auth("reporter"))
    assert beat.status_code == 200, beat.text
    deadline = await api.runtime.redis.heartbeat_deadline(KEY)
    assert deadline is not None
    assert deadline - parse_time(beat.json()["lastSeen"]) == timedelta(seconds=45)


async def test_a_serving_api_says_so_for_the_heartbeat_loss_detection(api: Api) -> None:
    """sessions.usecases.liveness: the operator pauses while no replica has said it serves."""

    async def beacon() -> Any:
        return (await api.runtime.redis.heartbeat_signal())[0]

    said = await eventually(beacon)
    assert (await api.runtime.redis.heartbeat_signal())[1] is None  # no hold: no gap before
    assert abs((said - api.runtime.service.now()).total_seconds()) < 10


async def test_a_refused_transition_is_409_with_current_and_allowed(api: Api) -> None:
    await api.report("connected", **IDENTITY)
    await api.report("disconnected", reason="LoggedOut")
    before = (
        await api.runtime.redis.get(KEY),
        await api.runtime.sql.get(KEY),
        await api.runtime.sql.history(KEY),
    )
    response = await api.report("connected")
    assert response.status_code == 409
    assert response.json() == {
        "success": False,
        "error": {
            "code": "transition_refused",
            "message": "cannot move a session from inactive to active; allowed next: connecting",
            "current": "inactive",
            "requested": "active",
            "allowed": ["connecting"],
        },
    }
    # a reason that does not fit the transition is refused the same way
    wrong_reason = await api.report("connecting", reason="Expired")
    assert wrong_reason.status_code == 409
    assert wrong_reason.json()["error"]["allowed"] == ["connecting"]
    after = (
        await api.runtime.redis.get(KEY),
        await api.runtime.sql.get(KEY),
        await api.runtime.sql.history(KEY),
    )
    assert before == after


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": "sleeping"}, "body.state"),
        ({}, "body.state"),
        ({"state": "connected", "reason": "Bored"}, "body.reason"),
        ({"state": "connected", "phoneNumber": "+49 151"}, "body.phoneNumber"),
        ({"state": "connected", "phoneNumber": PHONE + "9" * 10}, "body.phoneNumber"),
        ({"state": "connected", "displayName": "x" * 257}, "body.displayName"),
        ({"state": "connected", "displayName": "a\u0000b"}, "body.displayName"),
        ({"state": "connected", "sessionId": "\ud800"}, "body.sessionId"),
        ({"state": "connected", "clearRedis": True}, "body.clearRedis"),
        ({"state": "connected", "heartbeatTimeoutSeconds": -1}, "body.heartbeatTimeoutSeconds"),
        ({"state": "connected", "heartbeatTimeoutSeconds": 86401}, "body.heartbeatTimeoutSeconds"),
    ],
)
async def test_invalid_reports_are_422_and_write_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    response = await api.client.post(
        f"{V1}/sessions/{BOT}/{USER}/report",
        content=json.dumps(body).encode(),  # ASCII JSON: the lone surrogate as an escape
        headers={**auth("reporter"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert [d["field"] for d in error["details"]] == [field]
    assert error["message"].startswith(f"{field}: ")
    assert PHONE not in response.text  # the input is not echoed
    assert await api.runtime.botsessions.get(KEY) is None


@pytest.mark.parametrize(
    "path",
    [
        f"{V1}/sessions/bot:1/{USER}/report",
        f"{V1}/sessions/{BOT}/{'u' * 129}/report",
        f"{V1}/sessions/{BOT}/user%0A/report",
        f"{V1}/sessions/{BOT}/us%20er/report",
    ],
)
async def test_invalid_ids_are_422(api: Api, path: str) -> None:
    response = await api.client.post(path, json={"state": "connecting"}, headers=auth("reporter"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert response.json()["error"]["details"][0]["field"].startswith("path.")


async def test_malformed_json_is_422_in_the_envelope(api: Api) -> None:
    response = await api.client.post(
        f"{V1}/sessions/{BOT}/{USER}/report",
        content=b'{"state": ',
        headers={**auth("reporter"), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "invalid_input"


# --- status ----------------------------------------------------------------------------


async def test_status_answers_exactly_the_frontends_shape_right_after_a_write(api: Api) -> None:
    await api.report("connected", **IDENTITY)
    response = await api.status(userId=USER)
    assert response.status_code == 200
    assert response.headers["X-Session-Source"] == "redis"
    body = response.json()
    assert list(body) == [
        "success",
        "status",
        "lastSeen",
        "phoneNumber",
        "displayName",
        "sessionId",
    ]
    stored = await api.runtime.redis.client.hgetall(f"session:{BOT}:{USER}")
    assert body == {
        "success": True,
        "status": "active",
        "lastSeen": stored["lastSeen"],
        "phoneNumber": PHONE,
        "displayName": "Jane",
        "sessionId": "session_123",
    }
    # a write is seen by the very next read
    await api.report("disconnected")
    assert (await api.status(userId=USER)).json()["status"] == "inactive"


async def test_status_without_user_is_the_most_recently_seen(api: Api) -> None:
    await api.report("connecting", user="older")
    await asyncio.sleep(1.1)  # lastSeen has whole seconds
    await api.report("connected", user="newer", phoneNumber=PHONE_2)
    response = await api.status()
    assert (response.status_code, response.json()["phoneNumber"]) == (200, PHONE_2)
    await asyncio.sleep(1.1)
    beat = await api.client.post(f"{V1}/sessions/{BOT}/older/heartbeat", headers=auth("reporter"))
    assert beat.status_code == 200
    assert (await api.status()).json()["status"] == "connecting"  # "older" is the newest now
    # Redis emptied (swept or lost): the database's most recent
    await api.runtime.redis.client.flushall()
    fallback = await api.status()
    assert fallback.headers["X-Session-Source"] == "database"
    assert fallback.json()["status"] in ("connecting", "active")


async def test_status_of_an_unknown_session_is_404(api: Api) -> None:
    for params in ({"userId": "nobody"}, {}):
        response = await api.status(bot="no-such-bot", **params)
        assert response.status_code == 404
        assert response.json()["success"] is False
        assert response.json()["error"]["code"] == "session_not_found"
        assert "X-Session-Source" not in response.headers


async def test_status_falls_back_to_the_database_when_redis_misses(api: Api) -> None:
    await api.report("connected", **IDENTITY)
    await api.runtime.redis.remove(KEY)  # as the sweep does
    response = await api.status(userId=USER)
    assert response.status_code == 200
    assert response.headers["X-Session-Source"] == "database"
    assert response.json()["status"] == "active" and response.json()["phoneNumber"] == PHONE


# --- the session-status fast path (api/middleware.py) answers as the route does ------


def fast_path_of(app: FastAPI, kind: type[FastPath] = StatusFastPath) -> FastPath:
    layer: Any = app.middleware_stack
    while not isinstance(layer, kind):
        layer = layer.app  # every layer of the stack keeps the next one as .app
    return layer


async def test_the_fast_paths_answers_byte_for_byte_as_the_route(api: Api) -> None:
    odd_name = 'Jäne 🤖 "q" \\ </script> \u2028 é'
    reported = await api.report("connected", **{**IDENTITY, "displayName": odd_name})
    assert reported.status_code == 201, reported.text
    await api.report("connecting", user="only-in-db", phoneNumber=PHONE_2)
    await api.runtime.redis.remove(SessionKey(BOT, "only-in-db"))
    await api.report("failed", bot="bot.2", user="a+b=c@d")
    route_only = create_app(api.app.state.settings, api_settings=API_SETTINGS, fast_paths=False)
    route_only.state.runtime = api.runtime
    transport = httpx.ASGITransport(app=route_only)
    bearer = auth("reader")["Authorization"]
    status_url = f"{V1}/session-status"
    requests: list[tuple[str, dict[str, str]]] = [
        (f"{status_url}/{BOT}?userId={USER}", {"Authorization": bearer}),  # Redis
        (f"{status_url}/{BOT}?userId=only-in-db", {"Authorization": bearer}),  # database
        (f"{status_url}/{BOT}", {"Authorization": bearer}),  # the most recent
        (f"{status_url}/bot.2?userId=a%2Bb%3Dc%40d", {"Authorization": bearer}),
        (f"{status_url}/{BOT}?userId=nobody", {"Authorization": bearer}),  # 404
        (f"{status_url}/no-such-bot", {"Authorization": bearer}),  # 404
        (f"{status_url}/{BOT}?userId={USER}", auth("admin")),
        (f"{status_url}/{BOT}?userId={USER}", {"Authorization": "bearer " + bearer[7:]}),
        # from here on the fast path leaves the request to the route
        (f"{status_url}/{BOT}?userId={USER}", {}),
        (f"{status_url}/{BOT}?userId={USER}", {"Authorization": "Bearer wrong-token-123456"}),
        (f"{status_url}/{BOT}?userId={USER}", auth("reporter")),  # 403
        (f"{status_url}/{BOT}?userId={USER}", {"Authorization": "Basic " + bearer[7:]}),
        (f"{status_url}/{BOT}?userId={USER}", {"Authorization": "Bearer  " + bearer[7:]}),
        (f"{status_url}/{BOT}?userId=", {"Authorization": bearer}),
        (f"{status_url}/{BOT}?userId=a+b", {"Authorization": bearer}),
        (f"{status_url}/{BOT}?userId=x&userId={USER}", {"Authorization": bearer}),
        (f"{status_url}/{BOT}?userId={USER}&extra=1", {"Authorization": bearer}),
        (f"{status_url}/{BOT}?extra=1", {"Authorization": bearer}),
        (f"{status_url}/bad!bot?userId={USER}", {"Authorization": bearer}),
        (f"{status_url}/{BOT}%0A?userId={USER}", {"Authorization": bearer}),  # a newline
        (f"{status_url}/{BOT}?userId={USER}%0A", {"Authorization": bearer}),
        (f"{status_url}/{'b' * 129}", {"Authorization": bearer}),
        (f"{status_url}/{BOT}/more", {"Authorization": bearer}),
        (f"{status_url}/", {"Authorization": bearer}),
    ]
    served_before = fast_path_of(api.app).served if api.app.middleware_stack else 0
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as plain:
        for url, headers in requests:
            fast = await api.client.get(url, headers=headers)
            slow = await plain.get(url, headers=headers)
            assert (fast.status_code, fast.content) == (slow.status_code, slow.content), url
            assert dict(fast.headers) == dict(slow.headers), url
            head = await api.client.head(url, headers=headers)
            assert head.status_code == (await plain.head(url, headers=headers)).status_code
    assert fast_path_of(api.app).served - served_before == 8
    assert [
        (await api.client.get(url, headers=headers)).status_code for url, headers in requests[:8]
    ] == [200, 200, 200, 200, 404, 404, 200, 200]


TIMES = re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"')


async def test_the_heartbeat_fast_path_answers_byte_for_byte_as_the_route(api: Api) -> None:
    assert (await api.report("connected", **IDENTITY)).status_code == 201
    assert (await api.report("connected", user="gone-quiet")).status_code == 201
    assert (await api.report("disconnected", user="gone-quiet")).status_code == 200
    assert (await api.report("connected", bot="bot.2", user="a+b=c@d")).status_code == 201
    route_only = create_app(api.app.state.settings, api_settings=API_SETTINGS, fast_paths=False)
    route_only.state.runtime = api.runtime
    transport = httpx.ASGITransport(app=route_only)
    bearer = auth("reporter")["Authorization"]
    beat = f"{V1}/sessions/{{}}/{{}}/heartbeat"
    requests: list[tuple[str, dict[str, str], bytes]] = [
        (beat.format(BOT, USER), {"Authorization": bearer}, b""),
        (beat.format("bot.2", "a%2Bb%3Dc%40d"), {"Authorization": bearer}, b""),
        (beat.format(BOT, "gone-quiet"), {"Authorization": bearer}, b""),  # 409 inactive
        (beat.format(BOT, "nobody"), {"Authorization": bearer}, b""),  # 404
        (beat.format(BOT, USER), auth("admin"), b""),
        (beat.format(BOT, USER), {"Authorization": "bearer " + bearer[7:]}, b""),
        (beat.format(BOT, USER), {"Authorization": bearer}, b'{"ignored": 1}'),
        # from here on the fast path leaves the request to the route
        (beat.format(BOT, USER), {}, b""),
        (beat.format(BOT, USER), {"Authorization": "Bearer wrong-token-123456"}, b""),
        (beat.format(BOT, USER), auth("reader"), b""),  # 403
        (beat.format(BOT, USER) + "?x=1", {"Authorization": bearer}, b""),
        (beat.format("bad!bot", USER), {"Authorization": bearer}, b""),
        (beat.format(BOT, "a%2Fb"), {"Authorization": bearer}, b""),
        (beat.format(BOT, "u" * 129), {"Authorization": bearer}, b""),
        (beat.format(BOT, f"{USER}/more"), {"Authorization": bearer}, b""),
        (f"{V1}/sessions/{BOT}/heartbeat", {"Authorization": bearer}, b""),
    ]
    served_before = fast_path_of(api.app, HeartbeatFastPath).served
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as plain:
        for url, headers, body in requests:
            fast = await api.client.post(url, headers=headers, content=body)
            slow = await plain.post(url, headers=headers, content=body)
            # lastSeen is the second of each call: the two may fall on either side of a tick
            assert fast.status_code == slow.status_code, url
            assert TIMES.sub(b"T", fast.content) == TIMES.sub(b"T", slow.content), url
            assert dict(fast.headers) == dict(slow.headers), url
    assert fast_path_of(api.app, HeartbeatFastPath).served - served_before == 7
    assert [
        (await api.client.post(url, headers=headers)).status_code
        for url, headers, _ in requests[:7]
    ] == [200, 200, 409, 404, 200, 200, 200]


async def test_the_fast_path_counts_and_logs_like_any_route(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Polls (answered session-status reads, heartbeats) are counted, not logged, unless
    they fail or BOTSESSION_API_LOG_POLLS asks for them."""
    await api.report("connected", **IDENTITY)
    template = f"{V1}/session-status/{{botId}}"
    before = await requests_counted(api, template, 200)
    caplog.clear()
    assert (await api.status(userId=USER)).status_code == 200
    assert (await api.status(userId="nobody")).status_code == 404
    logged = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "request"]
    assert [(f["route"], f["status"], f["actor"]) for f in logged] == [
        (template, 404, TOKENS["reader"][0])
    ]
    assert await requests_counted(api, template, 200) == before + 1

    logging_polls = create_app(
        api.app.state.settings, api_settings=API_SETTINGS.model_copy(update={"log_polls": True})
    )
    logging_polls.state.runtime = api.runtime
    transport = httpx.ASGITransport(app=logging_polls)
    caplog.clear()
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        status = await client.get(f"{template[:-7]}{BOT}?userId={USER}", headers=auth("reader"))
        beat = await client.post(f"{V1}/sessions/{BOT}/{USER}/heartbeat", headers=auth("reporter"))
    assert (status.status_code, beat.status_code) == (200, 200)
    logged = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "request"]
    assert [(f["route"], f["status"]) for f in logged] == [
        (template, 200),
        (f"{V1}/sessions/{{botId}}/{{userId}}/heartbeat", 200),
    ]


async def requests_counted(api: Api, route: str, status: int) -> float:
    response = await api.client.get("/metrics", headers=auth("reader"))
    assert response.status_code == 200
    labels = f'{{method="GET",route="{route}",status="{status}"}}'
    for line in response.text.splitlines():
        if line.startswith("botsession_api_requests_total" + labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def assert_status_answered_by(api: Api, source: str) -> None:
    """Both forms of session-status give the connected session, read from `source`."""
    response = await api.status(userId=USER)
    assert response.status_code == 200, response.text
    assert response.headers["X-Session-Source"] == source
    assert response.json() == {
        "success": True,
        "status": "active",
        "lastSeen": response.json()["lastSeen"],
        "phoneNumber": PHONE,
        "displayName": "Jane",
        "sessionId": "session_123",
    }
    without_user = await api.status()
    assert without_user.headers["X-Session-Source"] == source
    assert without_user.json()["status"] == "active"


async def test_the_database_answers_while_the_redis_server_is_stopped(
    controlplane: ControlPlane, namespace: str, database_url: str
) -> None:
    with RedisServer() as private:
        async with serve(controlplane.kubeconfig, namespace, private.url, database_url) as api:
            assert (await api.report("connected", **IDENTITY)).status_code == 201
            private.stop()
            await assert_status_answered_by(api, "database")
            detail = await api.client.get(f"{V1}/sessions/{BOT}/{USER}", headers=auth("reader"))
            assert detail.status_code == 200 and detail.json()["source"] == "database"
            # a report still reaches the BotSession and the database; Redis is pending
            second = await api.report("connecting", user="user-2")
            assert second.status_code == 201
            assert second.json()["redisPending"] is True
            assert second.json()["databasePending"] is False
            assert await api.runtime.botsessions.get(SessionKey(BOT, "user-2")) is not None
            # a heartbeat is Redis only: 503 with Retry-After
            beat = await api.client.post(
                f"{V1}/sessions/{BOT}/{USER}/heartbeat", headers=auth("reporter")
            )
            assert beat.status_code == 503
            assert beat.headers["Retry-After"] == "1"
            assert beat.json()["error"]["code"] == "store_unavailable"
            assert beat.json()["error"]["store"] == "redis"
            # still ready: the database answers
            ready = await api.client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"]["redis"]["ok"] is False
            assert ready.json()["checks"]["database"]["ok"] is True


async def test_the_botsession_answers_while_redis_and_the_database_are_both_down(
    controlplane: ControlPlane, namespace: str
) -> None:
    """The source of truth is the last resort of the reads: real servers, really stopped."""
    with RedisServer() as redis, PostgresServer() as postgres:
        async with serve(controlplane.kubeconfig, namespace, redis.url, postgres.url()) as api:
            assert (await api.report("connected", **IDENTITY)).status_code == 201
            redis.stop()
            postgres.stop()
            await assert_status_answered_by(api, "kubernetes")
            detail = await api.client.get(f"{V1}/sessions/{BOT}/{USER}", headers=auth("reader"))
            assert detail.status_code == 200, detail.text
            body = detail.json()
            assert (body["source"], body["historySource"]) == ("kubernetes", "kubernetes")
            assert [(t["to"], t["reason"]) for t in body["history"]] == [
                ("active", "Connected"),
                ("connecting", "Created"),
            ]
            assert (await api.status(userId="nobody")).status_code == 404
            # what needs the database still says so
            listing = await api.client.get(f"{V1}/sessions/{BOT}", headers=auth("reader"))
            assert listing.status_code == 503
            assert listing.json()["error"]["store"] == "database"


# --- heartbeat -------------------------------------------------------------------------


async def test_heartbeat_refreshes_redis_only(api: Api) -> None:
    await api.report("connected", **IDENTITY)
    record = await api.runtime.botsessions.get(KEY)
    row = await api.runtime.sql.get(KEY)
    assert record is not None
    await asyncio.sleep(1.1)
    response = await api.client.post(
        f"{V1}/sessions/{BOT}/{USER}/heartbeat", headers=auth("reporter")
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["success", "status", "lastSeen", "expiresAt", "revision"]
    assert (body["status"], body["revision"]) == ("active", 2)
    assert body["lastSeen"] > (row.last_seen.strftime("%Y-%m-%dT%H:%M:%SZ") if row else "")
    stored = await api.runtime.redis.client.hgetall(f"session:{BOT}:{USER}")
    assert (stored["lastSeen"], stored["expiresAt"]) == (body["lastSeen"], body["expiresAt"])
    after = await api.runtime.botsessions.get(KEY)
    assert after is not None and after.resource_version == record.resource_version
    assert await api.runtime.sql.get(KEY) == row


async def test_heartbeat_of_unknown_and_inactive_sessions(api: Api) -> None:
    path = f"{V1}/sessions/{BOT}/{USER}/heartbeat"
    unknown = await api.client.post(path, headers=auth("reporter"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "session_not_found"
    await api.report("connected")
    await api.report("disconnected")
    inactive = await api.client.post(path, headers=auth("reporter"))
    assert inactive.status_code == 409
    assert inactive.json()["error"]["code"] == "session_inactive"


# --- list and detail -------------------------------------------------------------------


async def test_list_is_paginated_and_filtered(api: Api) -> None:
    for i in range(5):
        assert (await api.report("connected", user=f"u{i}")).status_code == 201
    await api.report("disconnected", user="u0")
    await api.report("connecting", bot="bot-2", user="u0")
    path = f"{V1}/sessions/{BOT}"
    first = await api.client.get(path, params={"limit": 2}, headers=auth("reader"))
    assert first.status_code == 200
    body = first.json()
    assert (body["success"], body["botId"], body["total"], body["limit"], body["offset"]) == (
        True,
        BOT,
        5,
        2,
        0,
    )
    assert len(body["sessions"]) == 2
    pages = [
        s["userId"]
        for offset in (0, 2, 4)
        for s in (
            await api.client.get(
                path, params={"limit": 2, "offset": offset}, headers=auth("reader")
            )
        ).json()["sessions"]
    ]
    assert sorted(pages) == ["u0", "u1", "u2", "u3", "u4"]
    inactive = await api.client.get(path, params={"status": "inactive"}, headers=auth("reader"))
    assert inactive.json()["total"] == 1
    assert [(s["userId"], s["status"]) for s in inactive.json()["sessions"]] == [("u0", "inactive")]
    empty = await api.client.get(f"{V1}/sessions/nobody", headers=auth("reader"))
    assert (empty.status_code, empty.json()["total"], empty.json()["sessions"]) == (200, 0, [])
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": "asleep"}):
        bad = await api.client.get(path, params=params, headers=auth("reader"))
        assert bad.status_code == 422, params
        assert bad.json()["error"]["code"] == "invalid_input"


async def test_detail_has_the_session_and_its_recent_history(api: Api) -> None:
    await api.report("connected", **IDENTITY)
    await api.report("disconnected", reason="LoggedOut")
    response = await api.client.get(f"{V1}/sessions/{BOT}/{USER}", headers=auth("reader"))
    assert response.status_code == 200
    body = response.json()
    assert response.headers["X-Session-Source"] == body["source"] == "redis"
    assert body["session"]["status"] == "inactive" and body["session"]["reason"] == "LoggedOut"
    assert body["session"]["phoneNumber"] == PHONE
    assert [(h["revision"], h["from"], h["to"], h["reason"]) for h in body["history"]] == [
        (3, "active", "inactive", "LoggedOut"),
        (2, "connecting", "active", "Connected"),
        (1, None, "connecting", "Created"),
    ]
    short = await api.client.get(
        f"{V1}/sessions/{BOT}/{USER}", params={"history": 1}, headers=auth("reader")
    )
    assert [h["revision"] for h in short.json()["history"]] == [3]
    missing = await api.client.get(f"{V1}/sessions/{BOT}/nobody", headers=auth("reader"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "session_not_found"


# --- clear -----------------------------------------------------------------------------


async def test_clear_needs_a_flag_and_a_user_unless_admin(api: Api) -> None:
    await api.report("connected", **IDENTITY)
    none = await api.clear(userId=USER, clearSession=False, clearRedis=False, clearDatabase=False)
    assert none.status_code == 422
    assert none.json()["error"]["code"] == "invalid_input"
    assert "at least one" in none.json()["error"]["message"]
    no_user = await api.clear(who="reporter")
    assert no_user.status_code == 422
    assert "admin" in no_user.json()["error"]["message"]
    for body in ({"userId": USER, "clearRedis": "false"}, {"userId": USER, "clearDatabse": False}):
        bad = await api.clear(**body)
        assert bad.status_code == 422, body
    missing_body = await api.client.post(f"{V1}/clear-session/{BOT}", headers=auth("admin"))
    assert missing_body.status_code == 422
    # nothing was cleared, nothing audited
    assert await api.runtime.botsessions.get(KEY) is not None
    assert await api.runtime.redis.get(KEY) is not None
    assert await api.runtime.sql.clear_audits(BOT) == []


async def test_clear_one_session_with_the_report_scope(api: Api) -> None:
    await api.report("connected", **IDENTITY)
    await api.report("connected", user="bystander")
    response = await api.clear(who="reporter", userId=USER)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "cleared": {"session": 1, "redisKeys": 3, "databaseRows": 3},
        "pending": [],
    }
    assert await api.runtime.botsessions.get(KEY) is None
    assert await api.runtime.redis.client.keys(f"session:*{USER}") == []
    assert await api.runtime.sql.get(KEY) is None
    (audit,) = await api.runtime.sql.clear_audits(BOT)
    assert (audit.actor, audit.scope, audit.flags) == ("bot-runner", "session", (True, True, True))
    assert await api.runtime.botsessions.get(SessionKey(BOT, "bystander")) is not None
    # repeating it is harmless
    again = await api.clear(who="reporter", userId=USER)
    assert again.status_code == 200
    assert again.json()["cleared"] == {"session": 0, "redisKeys": 0, "databaseRows": 0}


async def test_clear_redis_only_leaves_an_inactive_cleared_botsession(api: Api) -> None:
    await api.report("connected", **IDENTITY)
    response = await api.clear(userId=USER, clearSession=False, clearDatabase=False)
    assert response.status_code == 200
    assert response.json()["cleared"] == {"session": 0, "redisKeys": 3, "databaseRows": 0}
    record = await api.runtime.botsessions.get(KEY)
    assert record is not None and (record.phase, record.reason) == (Phase.INACTIVE, Reason.CLEARED)
    status = await api.status(userId=USER)
    assert status.headers["X-Session-Source"] == "database"
    assert status.json()["status"] == "inactive"


async def test_an_admin_clears_every_session_of_a_bot(api: Api) -> None:
    for user in ("a", "b", "c"):
        await api.report("connected", user=user)
    await api.report("connected", bot="bot-2", user="a")
    response = await api.clear(who="admin")
    assert response.status_code == 200
    assert response.json()["cleared"]["session"] == 3
    assert response.json()["cleared"]["redisKeys"] == 9
    assert await api.runtime.botsessions.list_bot(BOT) == []
    assert await api.runtime.botsessions.get(SessionKey("bot-2", "a")) is not None
    (audit,) = await api.runtime.sql.clear_audits(BOT)
    assert (audit.actor, audit.scope, audit.user_fingerprint) == ("ops", "bot", None)


async def test_clear_answers_202_while_the_botsession_is_still_there(
    api: Api, controlplane: ControlPlane
) -> None:
    await api.report("connected", **IDENTITY)
    name = resource_name(KEY)
    # a finalizer nobody removes (yet): the deletion cannot finish within clear_wait
    kubectl(
        controlplane.kubeconfig,
        "patch",
        "botsession",
        name,
        "-n",
        api.namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":["example.com/hold"]}}',
    )
    response = await api.clear(userId=USER)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "success": True,
        "cleared": {"session": 0, "redisKeys": 3, "databaseRows": 3},
        "pending": [f"session {BOT}:{USER}"],
    }
    record = await api.runtime.botsessions.get(KEY)
    assert record is not None and record.deleting
    kubectl(
        controlplane.kubeconfig,
        "patch",
        "botsession",
        name,
        "-n",
        api.namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )

    async def gone() -> bool:
        return await api.runtime.botsessions.get(KEY) is None

    await eventually(gone)
    again = await api.clear(userId=USER)
    assert again.status_code == 200 and again.json()["pending"] == []


# --- the Kubernetes API unreachable ----------------------------------------------------


async def test_kubernetes_unreachable_is_503_with_retry_after_and_writes_nothing(
    api: Api,
    controlplane: ControlPlane,
    redis_server: RedisServer,
    database_url: str,
    tmp_path: Path,
) -> None:
    # a live session, written while the API server was reachable
    await api.report("connected", **IDENTITY)
    kubeconfig = broken_kubeconfig(controlplane, tmp_path / "unreachable.kubeconfig")
    async with serve(kubeconfig, api.namespace, redis_server.url, database_url) as broken:
        new = SessionKey(BOT, "user-new")
        report = await broken.report("connecting", user=new.user_id, phoneNumber=PHONE_2)
        assert report.status_code == 503, report.text
        assert report.headers["Retry-After"] == "1"
        assert report.json()["error"] == {
            "code": "store_unavailable",
            "message": "kubernetes is unavailable; retry after 1 s "
            "(nothing was written to Redis or the database)",
            "store": "kubernetes",
        }
        assert await broken.runtime.redis.client.keys(f"session:*{new.user_id}") == []
        assert await broken.runtime.sql.get(new) is None
        # a phase change of an existing session: nothing anywhere changes either
        before = (await api.runtime.redis.get(KEY), await api.runtime.sql.history(KEY))
        change = await broken.report("disconnected")
        assert change.status_code == 503 and change.headers["Retry-After"] == "1"
        flag_sets: list[dict[str, Any]] = [
            {},
            {"clearSession": False},
            {"clearRedis": False, "clearDatabase": False},
        ]
        for flags in flag_sets:
            clear = await broken.clear(userId=USER, **flags)
            assert clear.status_code == 503, flags
            assert clear.headers["Retry-After"] == "1"
        assert (await api.runtime.redis.get(KEY), await api.runtime.sql.history(KEY)) == before
        assert await api.runtime.sql.clear_audits(BOT) == []
        # reads and heartbeats need no Kubernetes
        status = await broken.status(userId=USER)
        assert (status.status_code, status.headers["X-Session-Source"]) == (200, "redis")
        beat = await broken.client.post(
            f"{V1}/sessions/{BOT}/{USER}/heartbeat", headers=auth("reporter")
        )
        assert beat.status_code == 200
        # and the API stays ready: it serves reads (the check shows Kubernetes down)
        ready = await broken.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["kubernetes"]["ok"] is False
        assert ready.json()["checks"]["redis"]["ok"] is True
    record = await api.runtime.botsessions.get(KEY)
    assert record is not None and (record.phase, record.revision) == (Phase.ACTIVE, 2)


# --- the error envelope for the framework's own errors ---------------------------------


async def test_unknown_routes_wrong_methods_and_crashes_use_the_envelope(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = await api.client.get("/v2/nothing", headers=auth())
    assert unknown.status_code == 404
    assert unknown.json() == {
        "success": False,
        "error": {"code": "not_found", "message": "no such endpoint: GET /v2/nothing"},
    }
    wrong = await api.client.delete(f"{V1}/session-status/{BOT}", headers=auth())
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert wrong.headers["Allow"] == "GET"

    async def boom() -> None:
        raise RuntimeError(f"something broke for {PHONE}")  # messages may quote user data

    api.app.add_api_route("/boom", boom)
    crash = await api.client.get("/boom")
    assert crash.status_code == 500
    assert crash.json() == {
        "success": False,
        "error": {"code": "internal_error", "message": "unexpected error; it has been logged"},
    }
    (logged,) = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    fields = logged.fields  # type: ignore[attr-defined]
    assert (fields["route"], fields["error"]) == ("/boom", "RuntimeError")
    assert "in boom" in fields["trace"][-1]
    # (the autouse fixture checks that the phone number in the message was not logged)


async def test_after_start_up_the_long_lived_objects_are_out_of_the_collectors_way(
    controlplane: ControlPlane, namespace: str, redis_server: RedisServer, database_url: str
) -> None:
    gc.unfreeze()  # as in a fresh process
    gc.set_threshold(700, 10, 10)
    async with serve(controlplane.kubeconfig, namespace, redis_server.url, database_url):
        assert gc.get_freeze_count() > 10_000  # imports, routes, models, pools
        assert gc.get_threshold() == GC_THRESHOLDS


async def test_openapi_and_docs_are_served(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert set(spec["paths"]) == {
        f"{V1}/session-status/{{botId}}",
        f"{V1}/clear-session/{{botId}}",
        f"{V1}/sessions/{{botId}}/{{userId}}/report",
        f"{V1}/sessions/{{botId}}/{{userId}}/heartbeat",
        f"{V1}/sessions/{{botId}}",
        f"{V1}/sessions/{{botId}}/{{userId}}",
        f"{V1}/session-events",
        f"{V1}/session-events/tickets",
        f"{V1}/analytics",
        f"{V1}/analytics/bots",
        f"{V1}/sessions",
        f"{V1}/webhooks",
        "/metrics",
        "/healthz",
        "/readyz",
    }
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --- end to end, with the operator -----------------------------------------------------


async def synced(api: Api, revision: int, key: SessionKey = KEY) -> bool:
    record = await api.runtime.botsessions.get(key)
    return record is not None and record.synced_revision == revision


async def test_end_to_end_report_read_and_clear_with_the_operator(
    operator_api: Api, operator_env: OperatorEnv
) -> None:
    api = operator_api
    assert (await api.report("connected", **IDENTITY)).status_code == 201
    await api.report("connected", user="bystander")
    await eventually(lambda: synced(api, 2))
    status = await api.status(userId=USER)
    assert (status.json()["status"], status.headers["X-Session-Source"]) == ("active", "redis")
    assert [e.revision for e in await operator_env.sql.history(KEY)] == [2, 1]

    response = await api.clear(who="reporter", userId=USER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pending"] == [] and body["cleared"]["session"] == 1
    # the operator's finalizer removed the keys before the BotSession went, so clearRedis
    # found none left; the rows: the session, its 2 transitions and the finalizer's Cleared
    assert (body["cleared"]["redisKeys"], body["cleared"]["databaseRows"]) == (0, 4)
    assert await operator_env.botsessions.get(KEY) is None
    assert await operator_env.redis.client.keys(f"session:*{USER}") == []
    assert await operator_env.redis.client.zscore(f"botsession:bot:{BOT}", USER) is None
    assert await operator_env.sql.get(KEY) is None
    assert await operator_env.sql.history(KEY) == []
    (audit,) = await operator_env.sql.clear_audits(BOT)
    assert (audit.actor, audit.scope, audit.flags) == ("bot-runner", "session", (True, True, True))
    assert audit.user_fingerprint is not None and USER not in audit.user_fingerprint
    # the bystander is untouched, and after a while nothing came back
    await asyncio.sleep(2)
    assert await operator_env.sql.get(KEY) is None
    assert await operator_env.redis.client.keys(f"session:*{USER}") == []
    assert await operator_env.botsessions.get(SessionKey(BOT, "bystander")) is not None
    missing = await api.status(userId=USER)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("flags", "gone"),
    [
        ({"clearSession": True, "clearRedis": False, "clearDatabase": False}, {"session", "redis"}),
        ({"clearSession": False, "clearRedis": True, "clearDatabase": False}, {"redis"}),
        ({"clearSession": False, "clearRedis": False, "clearDatabase": True}, {"database"}),
    ],
    ids=["session", "redis", "database"],
)
async def test_each_clear_flag_end_to_end(
    operator_api: Api, operator_env: OperatorEnv, flags: dict[str, Any], gone: set[str]
) -> None:
    """What each flag removes, with the operator reacting as it does (its finalizer removes
    the Redis keys of a deleted BotSession and marks its row ended)."""
    api = operator_api
    await api.report("connected", **IDENTITY)
    await eventually(lambda: synced(api, 2))
    response = await api.clear(userId=USER, **flags)
    assert response.status_code == 200, response.text
    # read at once: with the BotSession left in place, the resync (every 30 s) is meant to
    # write a cleared row back (docs/api.md), so "gone" is only true until then
    row = await operator_env.sql.get(KEY)
    history = await operator_env.sql.history(KEY)
    if flags["clearRedis"] and not flags["clearSession"]:
        await eventually(lambda: synced(api, 3))  # the operator has seen the Cleared phase
    await asyncio.sleep(1)  # let the operator react to whatever else the clear changed
    record = await operator_env.botsessions.get(KEY)
    keys = await operator_env.redis.client.keys(f"session:*{USER}")
    assert (record is None) is ("session" in gone)
    assert (keys == []) is ("redis" in gone)
    if "database" in gone:
        assert row is None and history == []
    else:
        assert row is not None
    if flags["clearRedis"] and not flags["clearSession"]:
        assert record is not None and (record.phase, record.reason) == (
            Phase.INACTIVE,
            Reason.CLEARED,
        )
    (audit,) = await operator_env.sql.clear_audits(BOT)
    assert audit.flags == (flags["clearSession"], flags["clearRedis"], flags["clearDatabase"])


# --- schemathesis over the served schema, on a real uvicorn ----------------------------


@contextmanager
def serving(kubeconfig: Path, settings: Settings) -> Iterator[str]:
    """The app on a real uvicorn (on a thread of its own) until the block ends; its URL."""
    with serving_app(make_app(kubeconfig, settings)) as url:
        yield url


@contextmanager
def serving_app(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """`app` on a real uvicorn (a thread of its own) until the block ends, on `port` (a free
    one by default; give the same one to come back after a restart); its URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def live_api(
    controlplane: ControlPlane, namespace: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[str]:
    settings = session_settings(
        namespace,
        redis_server.url,
        f"sqlite+aiosqlite:///{tmp_path / 'live.sqlite3'}",
        clear_wait="2s",
    )
    with serving(controlplane.kubeconfig, settings) as url:
        yield url


def test_schemathesis_finds_no_server_errors(live_api: str) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import Phase as HypothesisPhase
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok
    from schemathesis.specs.openapi.checks import (
        response_schema_conformance,
        status_code_conformance,
    )

    # something to find: a session with history
    with httpx.Client(base_url=live_api, headers=auth("admin"), timeout=30) as client:
        created = client.post(
            f"{V1}/sessions/{BOT}/{USER}/report", json={"state": "connected", **IDENTITY}
        )
        assert created.status_code == 201, created.text

    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    # an event stream answers for as long as the client listens: its errors and frames are
    # checked in test_api_events
    operations = [op for op in operations if op.path != f"{V1}/session-events"]
    assert len(operations) == 14  # with the dashboard's two and webhooks (issue 21)
    seen: dict[str, set[int]] = {}

    def fuzz(operation: Any, mode: GenerationMode) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[HypothesisPhase.explicit, HypothesisPhase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call(base_url=live_api, headers=auth("admin"), timeout=30)
            seen.setdefault(operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
            )
            if mode is GenerationMode.POSITIVE:
                case.validate_response(
                    response, checks=[response_schema_conformance, status_code_conformance]
                )

        check()

    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE)
        if operation.path not in ("/healthz", "/readyz", "/metrics"):  # nothing to make invalid
            fuzz(operation, GenerationMode.NEGATIVE)
    assert len(seen) == 14


# --- the real process: `python -m api` -------------------------------------------------


def test_python_m_api_serves_and_its_log_lines_hold_no_secrets(
    controlplane: ControlPlane,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
    secrets_to_hide: list[str],
) -> None:
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text(
        yaml.safe_dump(
            [
                {"name": name, "token": token, "scopes": SCOPES[kind]}
                for kind, (name, token) in TOKENS.items()
            ]
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(controlplane.kubeconfig),
        "BOTSESSION_NAMESPACE": namespace,
        "BOTSESSION_REDIS_URL": redis_server.url,
        "BOTSESSION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'proc.sqlite3'}",
        "BOTSESSION_API_TOKENS_FILE": str(tokens_file),
        "BOTSESSION_API_LOG_LEVEL": "DEBUG",
        "BOTSESSION_API_LOG_POLLS": "true",  # the answered session-status read is logged too
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("BOTSESSION_API_TOKENS", None)
    log_path = tmp_path / "api.log"
    phone_user = f"{PHONE}@c.us"  # WhatsApp user ids often are phone numbers
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port), "--migrate"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            with httpx.Client(base_url=base, timeout=10) as client:
                while True:
                    assert proc.poll() is None, log_path.read_text()
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.1)
                assert client.get("/readyz").status_code == 200
                report = client.post(
                    f"{V1}/sessions/{BOT}/{phone_user}/report",
                    json={"state": "connected", "phoneNumber": PHONE},
                    headers=auth("reporter"),
                )
                assert report.status_code == 201, report.text
                status = client.get(
                    f"{V1}/session-status/{BOT}",
                    params={"userId": phone_user},
                    headers=auth("reader"),
                )
                assert status.json()["phoneNumber"] == PHONE
                bad = client.post(
                    f"{V1}/sessions/{BOT}/{phone_user}/report",
                    json={"state": "connected", "phoneNumber": PHONE + "x"},
                    headers=auth("reporter"),
                )
                assert bad.status_code == 422
                assert client.get("/nothing", headers=auth("admin")).status_code == 404
                assert (
                    client.get(f"{V1}/sessions/{BOT}", headers=auth("reporter")).status_code == 403
                )
        finally:
            proc.terminate()
            proc.wait(20)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is a JSON object
    requests = [p for p in parsed if p["message"] == "request"]
    assert {(p["route"], p["status"], p["actor"]) for p in requests} >= {
        (f"{V1}/sessions/{{botId}}/{{userId}}/report", 201, "bot-runner"),
        (f"{V1}/session-status/{{botId}}", 200, "frontend"),
        (None, 404, None),
        (f"{V1}/sessions/{{botId}}", 403, "bot-runner"),
    }
    assert [line for line in lines if any(s in line for s in secrets_to_hide)] == []
