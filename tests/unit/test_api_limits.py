"""Bounded requests: the body limit before auth, per-token rate limits, Retry-After dates.
(The app runs in process without servers: no request here reaches a store.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from api import metrics
from api.app import create_app
from api.auth import Scope, TokenError, parse_tokens
from api.limits import Rate, RateLimiter
from api.settings import ApiSettings
from sessions.adapters.kubernetes.client import retry_after_seconds
from sessions.domain.settings import Settings, load_settings
from sessions.runtime import Runtime

pytestmark = pytest.mark.unit

READER = "reader-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
LIMITED_ADMIN = "limited-admin-0123456789abcdef"
BOT = "/v1/whatsapp/sessions/bot-1/user-1/report"


async def never_opened(settings: Settings) -> Runtime:
    raise AssertionError("these tests do not run the lifespan")


@pytest.fixture
def app() -> FastAPI:
    tokens = [
        {"name": "reader", "token": READER, "scopes": ["read", "report"]},
        {"name": "ops", "token": ADMIN, "scopes": ["admin"]},
        {
            "name": "ops-slow",
            "token": LIMITED_ADMIN,
            "scopes": ["admin"],
            "rateLimit": {"perSecond": 1, "burst": 2},
        },
    ]
    api_settings = ApiSettings.model_validate(
        {"tokens": json.dumps(tokens), "rate_limit": 2, "rate_burst": 3}
    )
    app = create_app(load_settings(), runtime_factory=never_opened, api_settings=api_settings)
    app.state.runtime = SimpleNamespace(service=None)  # nothing here reaches a use-case
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_body_over_the_limit_is_refused_before_the_token_is_checked(
    client: httpx.AsyncClient,
) -> None:
    before = metrics.BODY_TOO_LARGE._value.get()
    big = b'{"state": "connecting", "displayName": "' + b"x" * (70 * 1024) + b'"}'
    # no token at all: the size answers first (413, not 401)
    refused = await client.post(BOT, content=big, headers={"Content-Type": "application/json"})
    assert refused.status_code == 413
    assert refused.json() == {
        "success": False,
        "error": {
            "code": "payload_too_large",
            "message": "the request body is larger than 65536 bytes",
            "limit": 65536,
        },
    }
    assert metrics.BODY_TOO_LARGE._value.get() == before + 1


async def test_a_chunked_body_over_the_limit_is_cut_off_while_it_is_read(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    refused = await client.post(BOT, content=chunks(), headers=bearer(READER))
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "payload_too_large"


async def test_a_small_body_goes_on_to_the_route(client: httpx.AsyncClient) -> None:
    answered = await client.post(BOT, json={"state": "sleeping"}, headers=bearer(READER))
    assert answered.status_code == 422  # validated by the route: the limit let it through


async def test_a_token_over_its_rate_gets_429_with_retry_after(client: httpx.AsyncClient) -> None:
    # the default limit (2/s, burst 3) for a non-admin token; an invalid body is refused by
    # the route after the token was admitted, so no store is reached
    statuses = [
        (await client.post(BOT, json={}, headers=bearer(READER))).status_code for _ in range(5)
    ]
    assert statuses[:3] == [422, 422, 422] and statuses[3:] == [429, 429]
    refused = await client.post(BOT, json={}, headers=bearer(READER))
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "reader" in refused.json()["error"]["message"]
    assert metrics.RATE_LIMITED.labels("reader")._value.get() >= 3


async def test_admin_tokens_are_not_limited_unless_their_entry_says_so(
    client: httpx.AsyncClient,
) -> None:
    free = [(await client.post(BOT, json={}, headers=bearer(ADMIN))).status_code for _ in range(8)]
    assert free == [422] * 8
    slow = [
        (await client.post(BOT, json={}, headers=bearer(LIMITED_ADMIN))).status_code
        for _ in range(4)
    ]
    assert slow[:2] == [422, 422] and 429 in slow[2:]


async def test_the_fast_paths_applies_the_limit_too(client: httpx.AsyncClient) -> None:
    path = "/v1/whatsapp/session-status/bot-1?userId=user-1"
    for _ in range(3):  # the bucket is shared with the other routes: drain it here
        await client.post(BOT, json={}, headers=bearer(READER))
    refused = await client.get(path, headers=bearer(READER))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"


def test_a_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    rate = Rate(per_second=2, burst=2)
    assert [limiter.admit("t", rate) for _ in range(3)] == [None, None, 1.0]
    now[0] += 0.5  # one more token
    assert limiter.admit("t", rate) is None
    assert limiter.admit("t", rate) == 1.0
    assert limiter.admit("other", rate) is None  # buckets are per token
    assert limiter.admit("t", None) is None  # no limit


def test_rate_limits_in_the_token_file() -> None:
    text = json.dumps(
        [
            {"name": "a", "token": READER, "scopes": ["read"], "rateLimit": {"perSecond": 5}},
            {"name": "b", "token": ADMIN, "scopes": ["report"], "rateLimit": "off"},
            {"name": "c", "token": LIMITED_ADMIN, "scopes": ["admin"]},
        ]
    )
    a, b, c = parse_tokens(text, "tokens.json")
    default = Rate(100, 200)
    assert a.limit(default) == Rate(5, 10)
    assert b.limit(default) is None
    assert c.limit(default) is None and Scope.ADMIN in c.scopes
    with pytest.raises(TokenError, match="rateLimit"):
        parse_tokens(
            json.dumps([{"name": "d", "token": READER, "scopes": ["read"], "rateLimit": 5}]), "f"
        )
    with pytest.raises(TokenError, match="perSecond > 0"):
        parse_tokens(
            json.dumps(
                [{"name": "d", "token": READER, "scopes": ["read"], "rateLimit": {"perSecond": 0}}]
            ),
            "f",
        )


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) == 1.0
    assert retry_after_seconds("soon") == 1.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds(later) <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(past) == 0.0
