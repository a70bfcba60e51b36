"""The app's pure parts, without servers: the OpenAPI document, the error envelope, the
request log, the command line. (Everything touching a store is in
tests/integration/test_api.py.)"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.errors import retry_after_header, session_error_response
from api.main import add_arguments, run
from api.settings import ApiSettings
from sessions.domain.model import (
    Phase,
    SessionNotFound,
    StoreUnavailable,
    TransitionRefused,
)
from sessions.domain.settings import Settings, load_settings
from sessions.runtime import Runtime

pytestmark = pytest.mark.unit

TOKEN = "unit-test-token-0123456789"
PHONE = "4915112345678"


async def never_opened(settings: Settings) -> Runtime:
    raise AssertionError("these tests do not run the lifespan")


@pytest.fixture
def app() -> FastAPI:
    api_settings = ApiSettings.model_validate(
        {"tokens": json.dumps([{"name": "reader", "token": TOKEN, "scopes": ["read"]}])}
    )
    app = create_app(load_settings(), runtime_factory=never_opened, api_settings=api_settings)
    # a placeholder: requests that reach a use-case would fail, and none here do
    app.state.runtime = SimpleNamespace(service=None)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def test_every_operation_is_documented_with_examples(app: FastAPI) -> None:
    spec = app.openapi()
    schemas = spec["components"]["schemas"]

    def has_example(media: dict[str, Any]) -> bool:
        if "example" in media or "examples" in media:
            return True
        ref = media.get("schema", {}).get("$ref", "")
        return bool(ref) and "examples" in schemas[ref.rsplit("/", 1)[-1]]

    operations = [(p, m, op) for p, ops in spec["paths"].items() for m, op in ops.items()]
    dashboard = {"/v1/whatsapp/analytics/bots", "/v1/whatsapp/sessions"}  # issue 21, item 3
    assert dashboard <= {p for p, _, _ in operations}
    assert len([p for p, _, _ in operations if p not in dashboard]) == 13  # with webhooks
    for path, method, op in operations:
        assert op.get("summary"), (method, path)
        body = op.get("requestBody")
        if body:
            assert has_example(body["content"]["application/json"]), (method, path)
        for status, response in op["responses"].items():
            for media in response.get("content", {}).values():
                assert has_example(media), (method, path, status)
        if path not in ("/healthz", "/readyz"):
            assert op["security"] == [{"token": []}], (method, path)
            takes_input = bool(op.get("parameters") or op.get("requestBody"))
            for status in ("401", "403", "422") if takes_input else ("401", "403"):
                assert status in op["responses"], (method, path, status)
    assert "HTTPValidationError" not in schemas  # 422 is our envelope, not FastAPI's


def test_the_status_schema_is_exactly_the_requirements_shape(app: FastAPI) -> None:
    schema = app.openapi()["components"]["schemas"]["StatusResponse"]
    assert list(schema["properties"]) == [
        "success",
        "status",
        "lastSeen",
        "phoneNumber",
        "displayName",
        "sessionId",
    ]
    assert schema["properties"]["status"] == {"$ref": "#/components/schemas/Phase"}


async def test_auth_errors_use_the_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/whatsapp/session-status/bot-1")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "unauthorized"
    forbidden = await client.post(
        "/v1/whatsapp/sessions/bot-1/u/heartbeat", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == {
        "code": "forbidden",
        "message": "token 'reader' lacks the report scope",
        "required": "report",
    }


async def test_framework_errors_use_the_envelope(client: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    not_found = await client.get("/nowhere", headers=auth)
    assert (not_found.status_code, not_found.json()["error"]["code"]) == (404, "not_found")
    wrong_method = await client.put("/healthz")
    assert (wrong_method.status_code, wrong_method.json()["error"]["code"]) == (
        405,
        "method_not_allowed",
    )
    invalid = await client.get(
        "/v1/whatsapp/sessions/bot-1", params={"limit": "many"}, headers=auth
    )
    assert invalid.status_code == 422
    assert invalid.json() == {
        "success": False,
        "error": {
            "code": "invalid_input",
            "message": "query.limit: Input should be a valid integer, unable to parse string "
            "as an integer",
            "details": [
                {
                    "field": "query.limit",
                    "message": "Input should be a valid integer, unable to parse string as an "
                    "integer",
                }
            ],
        },
    }


async def test_the_request_log_names_the_route_never_the_path(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.get(f"/v1/whatsapp/session-status/{PHONE}", params={"userId": PHONE})
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    assert line.fields == {  # type: ignore[attr-defined]
        "method": "GET",
        "route": "/v1/whatsapp/session-status/{botId}",
        "status": 401,
        "ms": line.fields["ms"],  # type: ignore[attr-defined]
        "actor": None,
    }
    assert not [r for r in caplog.records if PHONE in r.getMessage() or PHONE in str(r.__dict__)]


def test_domain_errors_map_to_statuses() -> None:
    refused = session_error_response(TransitionRefused(Phase.INACTIVE, Phase.ACTIVE))
    assert refused.status_code == 409
    assert json.loads(bytes(refused.body))["error"] == {
        "code": "transition_refused",
        "message": "cannot move a session from inactive to active; allowed next: connecting",
        "current": "inactive",
        "requested": "active",
        "allowed": ["connecting"],
    }
    missing = session_error_response(SessionNotFound("no session"))
    assert missing.status_code == 404
    down = session_error_response(StoreUnavailable("kubernetes", "GET /apis/x: boom", 2.5))
    assert (down.status_code, down.headers["Retry-After"]) == (503, "3")
    assert "/apis/x" not in json.loads(bytes(down.body))["error"]["message"]
    assert [retry_after_header(s)["Retry-After"] for s in (None, 0, 0.2, 1, 1.1)] == [
        "1",
        "1",
        "1",
        "1",
        "2",
    ]


def test_bad_configuration_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BOTSESSION_API_TOKENS", raising=False)
    monkeypatch.delenv("BOTSESSION_API_TOKENS_FILE", raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--port", "8123"])) == 2
    assert "no API tokens configured" in capsys.readouterr().err
    monkeypatch.setenv("BOTSESSION_API_TOKENS", json.dumps([{"name": "x", "token": TOKEN}]))
    assert run(parser.parse_args([])) == 2
    err = capsys.readouterr().err
    assert "scopes" in err and TOKEN not in err
