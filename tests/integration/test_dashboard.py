"""The health dashboard in real headless Chromium (Debian's, driven by Playwright), against
the API on a real uvicorn, the real operator, Redis, a database and the control plane."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from devstack.controlplane import ControlPlane
from devstack.redis_server import RedisServer
from devstack.stack import ApiProcess
from tests.conftest import OperatorEnv

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"  # gitignored
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


def artifacts() -> Path:
    """Screenshots go to $BOTSESSION_ARTIFACTS, else the repository's artifacts/."""
    folder = Path(os.environ.get("BOTSESSION_ARTIFACTS") or ARTIFACTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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


def heartbeat(api: ApiProcess, bot: str, user: str) -> None:
    response = httpx.post(
        f"{api.url}/v1/whatsapp/sessions/{bot}/{user}/heartbeat",
        timeout=30,
        headers={"Authorization": f"Bearer {REPORTER}"},
    )
    assert response.status_code == 200, response.text


def read(api: ApiProcess, path: str, **params: object) -> httpx.Response:
    return httpx.get(
        f"{api.url}/v1/whatsapp{path}",
        params=params,  # type: ignore[arg-type]
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )


def seed(api: ApiProcess) -> None:
    """shop-bot: alice and carol active, bob failed; news-bot: dave connecting, erin
    inactive, frank inactive after losing his heartbeat (the operator's doing)."""
    for bot, user, states in [
        ("shop-bot", "alice", ["connected"]),
        ("shop-bot", "bob", ["connecting", "failed"]),
        ("shop-bot", "carol", ["connected"]),
        ("news-bot", "dave", ["connecting"]),
        ("news-bot", "erin", ["connected", "disconnected"]),
    ]:
        for state in states:
            report(api, bot, user, state)
    response = httpx.post(
        f"{api.url}/v1/whatsapp/sessions/news-bot/frank/report",
        json={"state": "connected", "heartbeatTimeoutSeconds": 1},
        timeout=30,
        headers={"Authorization": f"Bearer {REPORTER}"},
    )
    assert response.status_code == 201, response.text
    heartbeat(api, "news-bot", "frank")
    deadline = time.monotonic() + 30
    while read(api, "/sessions/news-bot/frank").json()["session"]["status"] != "inactive":
        assert time.monotonic() < deadline, "the operator never noticed the lost heartbeat"
        time.sleep(0.2)


async def phase_count(page: Page, phase: str) -> int:
    return int(await page.locator(f'#phases [data-phase="{phase}"] b').inner_text())


async def sign_in(page: Page, api: ApiProcess, token: str) -> None:
    await page.goto(f"{api.url}/dashboard")
    await expect(page.locator("#login")).to_be_visible()
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Show the dashboard").click()


async def signed_in(browser: Browser, api: ApiProcess, width: int, height: int) -> Page:
    """A page with the dashboard loaded and its event stream open."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    await sign_in(page, api, TOKEN)
    await expect(page.locator("#live")).to_have_text("Live", timeout=15_000)
    return page


def session_row(page: Page, bot: str, user: str) -> Locator:
    return page.locator(f'#sessions button[data-key="{bot}\\a {user}"]')


def rows(page: Page) -> Locator:
    return page.locator("#sessions button.session")


async def listed(page: Page) -> list[str]:
    keys: list[str] = await rows(page).evaluate_all("(bs) => bs.map((b) => b.dataset.key)")
    return sorted(k.replace("\n", "/") for k in keys)


async def test_the_overview_counts_every_bot_and_the_troubled_ones(
    api: ApiProcess, browser: Browser
) -> None:
    """Issue 21, item 3: all bots at a glance, from the same numbers the API answers."""
    seed(api)
    fleet = read(api, "/analytics/bots").json()
    assert fleet["byPhase"] == {"active": 2, "connecting": 1, "failed": 1, "inactive": 2}
    assert fleet["troubled"] == [
        {"botId": "news-bot", "failures": 0, "heartbeatLost": 1},
        {"botId": "shop-bot", "failures": 1, "heartbeatLost": 0},
    ]

    page = await signed_in(browser, api, 1280, 800)
    for phase, expected in [("connecting", 1), ("active", 2), ("inactive", 2), ("failed", 1)]:
        assert await phase_count(page, phase) == expected
    await expect(page.locator("#bot-count")).to_have_text("2")
    shop = page.locator('#bots tr[data-bot="shop-bot"]')
    await expect(shop.locator('[data-phase="active"]')).to_have_text("2")
    await expect(shop.locator('[data-phase="failed"]')).to_have_text("1")
    await expect(
        page.locator('#bots tr[data-bot="news-bot"] [data-phase="inactive"]')
    ).to_have_text("2")
    troubled = page.locator("#troubled tr")
    await expect(troubled).to_have_count(2)
    await expect(troubled.nth(0)).to_have_text(re.compile(r"news-bot\s*0\s*1"))
    await expect(troubled.nth(1)).to_have_text(re.compile(r"shop-bot\s*1\s*0"))
    await expect(rows(page)).to_have_count(6)
    await expect(page.locator("#chart svg rect").first).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('botsession-token')") == TOKEN
    assert await page.evaluate("localStorage.length") == 0  # never beyond the session
    await page.screenshot(path=str(artifacts() / "dashboard.png"), full_page=True)


async def test_search_and_the_status_filter_narrow_the_list(
    api: ApiProcess, browser: Browser
) -> None:
    seed(api)
    page = await signed_in(browser, api, 1280, 800)
    await expect(rows(page)).to_have_count(6)
    search = page.get_by_role("searchbox", name="Search botId or userId")
    status = page.get_by_role("combobox", name="Status")
    await search.fill("AR")  # any case, any part: carol and (news-bot's) no one else
    await expect(rows(page)).to_have_count(1)
    assert await listed(page) == ["shop-bot/carol"]
    await search.fill("shop")
    await expect(rows(page)).to_have_count(3)
    await status.select_option("failed")
    await expect(rows(page)).to_have_count(1)
    assert await listed(page) == ["shop-bot/bob"]
    await expect(session_row(page, "shop-bot", "bob").locator(".badge")).to_have_text("failed")
    await search.fill("")
    await status.select_option("inactive")
    await expect(rows(page)).to_have_count(2)
    assert await listed(page) == ["news-bot/erin", "news-bot/frank"]
    await status.select_option("")
    await page.get_by_role("button", name="news-bot: list its sessions").click()
    await expect(search).to_have_value("news-bot")
    await expect(rows(page)).to_have_count(3)

    found = read(api, "/sessions", search="CAR", status="active").json()
    assert found["more"] is False and [s["userId"] for s in found["sessions"]] == ["carol"]
    found = read(api, "/sessions", search="shop-bot", status="active", limit=1).json()
    assert found["more"] is True and len(found["sessions"]) == 1
    refused = read(api, "/sessions", search="a%25", limit=1000)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_input"


async def test_the_side_panel_shows_the_history_and_works_by_keyboard(
    api: ApiProcess, browser: Browser
) -> None:
    seed(api)
    page = await signed_in(browser, api, 1280, 800)
    status = page.get_by_role("combobox", name="Status")
    await status.select_option("failed")
    await expect(rows(page)).to_have_count(1)
    await status.focus()
    await page.keyboard.press("Tab")  # from the status filter to the first session
    assert await page.evaluate("document.activeElement.dataset.key") == "shop-bot\nbob"
    await page.keyboard.press("Enter")
    panel = page.get_by_role("dialog", name="bob on shop-bot")
    await expect(panel).to_be_visible()
    assert await page.evaluate("document.activeElement.id") == "panel-close"
    history = panel.locator("#history li")
    await expect(history).to_have_count(2)
    await expect(history.nth(0)).to_contain_text("connecting → failed")
    await expect(history.nth(1)).to_contain_text("new → connecting")
    await expect(panel.locator("#panel-status")).to_have_text("failed")
    await page.screenshot(path=str(artifacts() / "dashboard-panel.png"))
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()
    assert await page.evaluate("document.activeElement.dataset.key") == "shop-bot\nbob"
    await page.keyboard.press("Enter")  # and again, closed with its button this time
    await expect(panel).to_be_visible()
    await page.keyboard.press("Enter")  # the focused Close button
    await expect(panel).to_be_hidden()


async def test_changes_appear_live_without_a_reload(api: ApiProcess, browser: Browser) -> None:
    """A transition made through the API while the page is open reaches the counts, the
    list and the open side panel through the event stream."""
    seed(api)
    page = await signed_in(browser, api, 1280, 800)
    await page.evaluate("window.notReloaded = true")
    await session_row(page, "shop-bot", "alice").click()
    panel = page.get_by_role("dialog", name="alice on shop-bot")
    await expect(panel.locator("#history li")).to_have_count(2)

    report(api, "shop-bot", "alice", "disconnected")
    await expect(panel.locator("#panel-status")).to_have_text("inactive", timeout=10_000)
    await expect(panel.locator("#history li").first).to_contain_text("active → inactive")
    await expect(panel.locator("#history li")).to_have_count(3)
    await page.keyboard.press("Escape")
    await expect(page.locator('#phases [data-phase="active"] b')).to_have_text("1")
    await expect(page.locator('#phases [data-phase="inactive"] b')).to_have_text("3")
    shop = page.locator('#bots tr[data-bot="shop-bot"]')
    await expect(shop.locator('[data-phase="inactive"]')).to_have_text("1")
    await expect(session_row(page, "shop-bot", "alice").locator(".badge")).to_have_text("inactive")

    report(api, "new-bot", "gina", "connecting")  # a new bot and session, listed at once
    await expect(session_row(page, "new-bot", "gina")).to_be_visible(timeout=10_000)
    await expect(rows(page).first).to_have_attribute("data-key", "new-bot\ngina")
    await expect(page.locator('#phases [data-phase="connecting"] b')).to_have_text("2")
    await expect(page.locator('#bots tr[data-bot="new-bot"]')).to_be_visible()
    await expect(page.locator("#bot-count")).to_have_text("3")

    report(api, "new-bot", "gina", "failed")
    await expect(page.locator("#troubled tr").first).to_contain_text("new-bot")
    await page.wait_for_timeout(4_000)  # the settle re-read of the aggregates agrees
    assert await phase_count(page, "failed") == 2
    assert await phase_count(page, "connecting") == 1
    assert await page.evaluate("window.notReloaded") is True


async def test_a_dropped_stream_says_so_and_catches_up(api: ApiProcess, browser: Browser) -> None:
    """The page's own recovery (as after a refused reconnect, e.g. an expired ticket): it
    shows it is offline, gets a new ticket and resumes after the last event it saw."""
    seed(api)
    page = await signed_in(browser, api, 1280, 800)
    report(api, "shop-bot", "carol", "disconnected")  # an event to resume after
    await expect(session_row(page, "shop-bot", "carol").locator(".badge")).to_have_text(
        "inactive", timeout=10_000
    )
    await page.evaluate("retryLater()")
    await expect(page.locator("#live")).to_have_text("Offline, retrying")
    report(api, "shop-bot", "alice", "disconnected")  # while the page listens to nothing
    await expect(page.locator("#live")).to_have_text("Live", timeout=15_000)
    await expect(session_row(page, "shop-bot", "alice").locator(".badge")).to_have_text(
        "inactive", timeout=10_000
    )
    await expect(page.locator('#phases [data-phase="active"] b')).to_have_text("0")


CONTRAST = """(selectors) => {
    const rgb = (text) => text.match(/[\\d.]+/g).map(Number);
    const background = (node) => {
        for (; node; node = node.parentElement) {
            const [r, g, b, a] = rgb(getComputedStyle(node).backgroundColor);
            if (a === undefined || a > 0) return [r, g, b];
        }
        return [255, 255, 255];
    };
    const luminance = ([r, g, b]) => {
        const lin = (c) => {
            c /= 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        };
        return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const out = [];
    for (const selector of selectors) {
        for (const node of document.querySelectorAll(selector)) {
            if (!node.getClientRects().length) continue;
            const a = luminance(rgb(getComputedStyle(node).color).slice(0, 3));
            const b = luminance(background(node));
            const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
            out.push([selector, node.textContent.trim().slice(0, 30), ratio]);
        }
    }
    return out;
}"""


async def accessible_names(page: Page) -> list[tuple[str, str]]:
    """(role, name) of every control in Chromium's own accessibility tree."""
    cdp = await page.context.new_cdp_session(page)
    tree = await cdp.send("Accessibility.getFullAXTree")
    controls = {"button", "textbox", "searchbox", "combobox", "checkbox", "link"}
    found = []
    for node in tree["nodes"]:
        role = node.get("role", {}).get("value")
        if role in controls and not node.get("ignored"):
            found.append((role, str(node.get("name", {}).get("value", "")).strip()))
    return found


async def test_the_page_is_accessible_and_fits_a_phone(api: ApiProcess, browser: Browser) -> None:
    """No axe offline: the names of every control from Chromium's accessibility tree, the
    WCAG contrast of the text from computed styles, a visible focus, no sideways scroll."""
    seed(api)
    page = await signed_in(browser, api, 1280, 800)
    names = await accessible_names(page)
    assert len(names) >= 10 and all(name for _, name in names), names
    assert ("combobox", "Status") in names and ("searchbox", "Search botId or userId") in names
    ratios = await page.evaluate(
        CONTRAST,
        ["body", "h2", ".muted", ".badge", "#live", "#sessions .user", "#sessions .when", "th"],
    )
    assert {selector for selector, _, _ in ratios} >= {".badge", "#live", ".muted", "h2"}
    low = [(s, text, round(r, 2)) for s, text, r in ratios if r < 4.5]
    assert not low, low
    await page.get_by_role("searchbox", name="Search botId or userId").focus()
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"

    phone = await browser.new_page(viewport={"width": 375, "height": 812}, is_mobile=True)
    await sign_in(phone, api, TOKEN)
    await expect(phone.locator("#live")).to_have_text("Live", timeout=15_000)
    await expect(rows(phone)).to_have_count(6)
    await phone.screenshot(path=str(artifacts() / "dashboard-phone.png"), full_page=True)
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "the page scrolls sideways on a phone"
    await session_row(phone, "news-bot", "frank").click()
    await expect(phone.get_by_role("dialog")).to_contain_text("HeartbeatLost")
    await phone.screenshot(path=str(artifacts() / "dashboard-phone-panel.png"))
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 375


def test_the_new_routes_are_documented(api: ApiProcess) -> None:
    schema = httpx.get(f"{api.url}/openapi.json", timeout=30).json()
    assert "/v1/whatsapp/analytics/bots" in schema["paths"]
    assert "/v1/whatsapp/sessions" in schema["paths"]
    unauthenticated = httpx.get(f"{api.url}/v1/whatsapp/analytics/bots", timeout=30)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "unauthorized"
    bad = read(api, "/analytics/bots", top=0)
    assert bad.status_code == 422 and bad.json()["success"] is False


async def test_a_wrong_token_shows_an_error(api: ApiProcess, browser: Browser) -> None:
    page = await browser.new_page()
    await sign_in(page, api, "not-a-real-token")
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
