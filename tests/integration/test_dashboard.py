"""The health dashboard in real headless Chromium (Debian's, driven by Playwright), against
the API on a real uvicorn, the real operator, Redis, a database and the control plane."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from devstack.controlplane import ControlPlane
from devstack.redis_server import RedisServer
from devstack.stack import ApiProcess
from tests.conftest import OperatorEnv

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
TOKEN = "dashboard-reader-token-0123456789"
REPORTER = "dashboard-reporter-token-0123456789"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture
def api(
    operator_env: OperatorEnv, controlplane: ControlPlane, redis_server: RedisServer, tmp_path: Path
) -> Iterator[ApiProcess]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            [
                {"name": "dashboard", "token": TOKEN, "scopes": ["read"]},
                {"name": "bots", "token": REPORTER, "scopes": ["report", "read"]},
            ]
        )
    )
    process = ApiProcess(
        tmp_path / "api",
        controlplane.kubeconfig,
        operator_env.namespace,
        {
            "BOTSESSION_REDIS_URL": redis_server.url,
            "BOTSESSION_DATABASE_URL": operator_env.database_url,
        },
        tokens,
    )
    with process:
        yield process


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        await browser.close()


def report(api: ApiProcess, bot: str, user: str, state: str) -> None:
    response = httpx.post(
        f"{api.url}/v1/whatsapp/sessions/{bot}/{user}/report",
        json={"state": state},
        timeout=30,
        headers={"Authorization": f"Bearer {REPORTER}"},
    )
    assert response.status_code in (200, 201), response.text


def analytics(api: ApiProcess, bot: str) -> dict[str, object]:
    response = httpx.get(
        f"{api.url}/v1/whatsapp/analytics",
        params={"botId": bot},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def phase_count(page: Page, phase: str) -> int:
    return int(await page.locator(f'[data-phase="{phase}"] b').inner_text())


async def sign_in(page: Page, api: ApiProcess, token: str, bot: str) -> None:
    await page.goto(f"{api.url}/dashboard")
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#bot", bot)
    await page.fill("#token", token)
    await page.click("#login-form button")


async def test_the_dashboard_shows_what_the_api_returns_and_updates(
    api: ApiProcess, browser: Browser
) -> None:
    bot = "dash-bot"
    for user, states in [
        ("a", ["connected"]),
        ("b", ["connected"]),
        ("c", ["connecting"]),
        ("d", ["connecting", "failed"]),
    ]:
        for state in states:
            report(api, bot, user, state)
    expected = analytics(api, bot)["byPhase"]
    assert expected == {"active": 2, "connecting": 1, "failed": 1}

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await sign_in(page, api, TOKEN, bot)
    await expect(page.locator('[data-phase="active"] b')).to_have_text("2", timeout=15_000)
    assert isinstance(expected, dict)
    for phase in ("connecting", "active", "inactive", "failed"):
        assert await phase_count(page, phase) == expected.get(phase, 0)
    assert await page.evaluate("sessionStorage.getItem('botsession-token')") == TOKEN
    assert await page.evaluate("localStorage.length") == 0  # never beyond the session
    await expect(page.locator("#chart svg rect").first).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    report(api, bot, "a", "disconnected")  # the page refreshes itself
    await expect(page.locator('[data-phase="inactive"] b')).to_have_text("1", timeout=20_000)
    await expect(page.locator('[data-phase="active"] b')).to_have_text("1")

    phone = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    await sign_in(phone, api, TOKEN, bot)
    await expect(phone.locator('[data-phase="active"] b')).to_have_text("1", timeout=15_000)
    await phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"


async def test_a_wrong_token_shows_an_error(api: ApiProcess, browser: Browser) -> None:
    page = await browser.new_page()
    await sign_in(page, api, "not-a-real-token", "dash-bot")
    await expect(page.locator("#error")).to_contain_text("refused", timeout=15_000)
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('botsession-token')") is None


async def test_an_eventsource_in_chromium_gets_every_change_live(
    api: ApiProcess, browser: Browser
) -> None:
    """Issue 21: a page of the API's origin trades its token for a stream ticket and opens
    GET /v1/whatsapp/session-events with a real EventSource."""
    page = await browser.new_page()
    await page.goto(f"{api.url}/dashboard")
    await page.evaluate(
        """async (token) => {
            const issued = await fetch("/v1/whatsapp/session-events/tickets", {
                method: "POST", headers: {Authorization: "Bearer " + token}});
            const {ticket} = await issued.json();
            window.received = [];
            const source = new EventSource(
                "/v1/whatsapp/session-events?botId=es-bot&ticket=" + encodeURIComponent(ticket));
            source.addEventListener("transition", (e) => window.received.push(
                {id: e.lastEventId, ...JSON.parse(e.data)}));
            await new Promise((resolve, reject) => {
                source.onopen = resolve;
                source.onerror = () => reject(new Error("the stream did not open"));
            });
        }""",
        TOKEN,
    )
    await page.wait_for_timeout(500)  # the API's reader has the stream's end
    report(api, "es-bot", "u1", "connected")
    report(api, "other-bot", "u1", "connected")  # not this page's
    report(api, "es-bot", "u1", "disconnected")
    await page.wait_for_function("window.received.length >= 3", timeout=15_000)
    received = await page.evaluate("window.received")
    assert [(e["userId"], e["revision"], e["to"]) for e in received] == [
        ("u1", 1, "connecting"),
        ("u1", 2, "active"),
        ("u1", 3, "inactive"),
    ]
    assert all(e["botId"] == "es-bot" and e["id"] for e in received)
