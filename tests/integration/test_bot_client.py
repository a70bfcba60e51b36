"""The bots' client (botsession.client, botsession.reporter; issue 22 item 2) against the real
API on a real uvicorn, the real API server and a real redis-server: typed answers and errors,
Retry-After on 429, heartbeats on its own, an API restart survived, a lost session
re-established. No log record may hold a token, a userId's phone number or the control
plane's token (test_api's autouse fixture, used here too)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from api.settings import ApiSettings
from botsession.client import NO_RETRIES, BotSessionClient, RetryPolicy
from botsession.errors import (
    ApiUnreachable,
    RateLimited,
    SessionInactive,
    SessionNotFound,
    TransitionRefused,
    Unauthorized,
)
from botsession.models import Phase, Reason, ReportState
from botsession.reporter import SessionReporter
from devstack.controlplane import ControlPlane
from devstack.process import free_port
from devstack.redis_server import RedisServer
from tests.conftest import eventually
from tests.integration.test_api import (
    PHONE,
    SCOPES,
    TOKENS,
    make_app,
    no_secrets_in_logs,  # noqa: F401 (autouse here too)
    secrets_to_hide,  # noqa: F401 (its fixture)
    serving_app,
    session_settings,
)

pytestmark = pytest.mark.integration

# a token allowed one request, then one every 2 s: the second answers 429, Retry-After: 2
SLOW_TOKEN = "slow-4d5e6f708192a3b4c5d6e7f8"
TOKENS_WITH_SLOW = json.dumps(
    [
        {"name": name, "token": token, "scopes": SCOPES[kind]}
        for kind, (name, token) in TOKENS.items()
    ]
    + [
        {
            "name": "slow-bot",
            "token": SLOW_TOKEN,
            "scopes": ["report", "read"],
            "rateLimit": {"perSecond": 0.5, "burst": 1},
        }
    ]
)
API_SETTINGS = ApiSettings.model_validate(
    {"tokens": TOKENS_WITH_SLOW, "tokens_file": None, "ready_timeout": 3.0}
)
REPORTER = TOKENS["reporter"][1]
BOTH = TOKENS["both"][1]  # read and report


@contextmanager
def serving(
    controlplane: ControlPlane,
    namespace: str,
    redis_url: str,
    database: Path,
    port: int | None = None,
) -> Iterator[str]:
    """The app on a real uvicorn (a thread of its own) until the block ends, on `port` (a
    free one by default, so that a restart can come back on the same one): its URL."""
    settings = session_settings(namespace, redis_url, f"sqlite+aiosqlite:///{database}")
    app = make_app(controlplane.kubeconfig, settings, api_settings=API_SETTINGS)
    with serving_app(app, port) as url:
        yield url


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "client.sqlite3"


@pytest.fixture
def live(
    controlplane: ControlPlane, namespace: str, redis_server: RedisServer, database: Path
) -> Iterator[str]:
    with serving(controlplane, namespace, redis_server.url, database) as url:
        yield url


@pytest.fixture
def bot() -> str:
    """A botId of this test's own (Redis is shared by the tests of this run)."""
    return f"client-{uuid.uuid4().hex[:10]}"


# a userId that is a phone number (the commonest case): never in a log line
USER = f"{PHONE}@c.us"


@asynccontextmanager
async def client_of(url: str, token: str = BOTH, **options: Any) -> AsyncIterator[BotSessionClient]:
    async with BotSessionClient(url, token, **options) as client:
        yield client


# --- the client ------------------------------------------------------------------------


async def test_report_and_heartbeat_answer_typed_results(live: str, bot: str) -> None:
    async with client_of(live) as client:
        created = await client.report(
            bot,
            USER,
            ReportState.CONNECTED,
            phone_number=PHONE,
            display_name="Jane",
            session_id="session_123",
            heartbeat_timeout_seconds=120,
        )
        assert created.created is True
        assert created.status is Phase.ACTIVE
        assert created.session.bot_id == bot and created.session.user_id == USER
        assert created.session.phone_number == PHONE
        assert created.session.display_name == "Jane"
        assert created.session.session_id == "session_123"
        assert [(t.from_phase, t.to_phase, t.reason) for t in created.transitions] == [
            (None, Phase.CONNECTING, Reason.CREATED),
            (Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED),
        ]
        assert created.transitions[0].actor == "dashboard"
        assert not created.redis_pending and not created.database_pending
        assert PHONE not in repr(created) and USER not in repr(created)

        again = await client.report(bot, USER, "connected")
        assert again.created is False and again.transitions == []

        beat = await client.heartbeat(bot, USER)
        assert beat.status is Phase.ACTIVE
        assert beat.revision == created.session.revision
        assert beat.expires_at > beat.last_seen >= created.session.last_seen

        status = await client.status(bot, USER)
        assert status.status is Phase.ACTIVE
        assert status.last_seen == beat.last_seen
        assert status.phone_number == PHONE
        assert status.source == "redis"

        ended = await client.report(bot, USER, ReportState.DISCONNECTED, reason=Reason.LOGGED_OUT)
        assert ended.status is Phase.INACTIVE
        assert ended.transitions[-1].reason == Reason.LOGGED_OUT


async def test_refused_transitions_and_lost_sessions_are_typed_errors(live: str, bot: str) -> None:
    async with client_of(live) as client:
        await client.report(bot, USER, ReportState.CONNECTED)
        with pytest.raises(TransitionRefused) as refused:
            await client.report(bot, USER, ReportState.FAILED)
        assert refused.value.status == 409 and refused.value.code == "transition_refused"
        assert refused.value.current is Phase.ACTIVE
        assert refused.value.requested is Phase.FAILED
        assert refused.value.allowed == [Phase.INACTIVE]

        with pytest.raises(SessionNotFound) as unknown:
            await client.heartbeat(bot, "nobody")
        assert unknown.value.status == 404 and unknown.value.code == "session_not_found"
        # the API's message names the session: the exception has the fingerprint instead
        with pytest.raises(SessionNotFound) as unknown_phone:
            await client.heartbeat(bot, f"{PHONE}@s.whatsapp.net")
        assert PHONE not in str(unknown_phone.value)
        assert client.fingerprint(f"{PHONE}@s.whatsapp.net") in str(unknown_phone.value)

        await client.report(bot, USER, ReportState.DISCONNECTED)
        with pytest.raises(SessionInactive) as inactive:
            await client.heartbeat(bot, USER)
        assert inactive.value.status == 409 and inactive.value.code == "session_inactive"

    async with client_of(live, "not-a-token-of-this-api") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.heartbeat(bot, USER)


async def test_a_429_is_retried_after_its_retry_after(
    live: str, bot: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_of(live, SLOW_TOKEN) as client:
        await client.report(bot, USER, ReportState.CONNECTING)  # the burst's one request
        with pytest.raises(RateLimited) as limited:
            await client.report(bot, USER, ReportState.CONNECTED, retry=NO_RETRIES)
        assert limited.value.status == 429 and limited.value.retry_after == 2

        started = time.monotonic()
        result = await client.report(bot, USER, ReportState.CONNECTED)
        waited = time.monotonic() - started
        assert result.status is Phase.ACTIVE
        assert waited >= 2.0  # the Retry-After of the refused attempt (with a 1 s jitter at most)
        assert waited < 5.0
        assert any("rate_limited; retrying in" in r.getMessage() for r in caplog.records)

        # a Retry-After beyond the call's budget is not waited for
        started = time.monotonic()
        with pytest.raises(RateLimited):
            await client.heartbeat(bot, USER, retry=RetryPolicy(budget=1.0))
        assert time.monotonic() - started < 1.0


async def test_no_answer_is_retried_with_backoff_then_raised() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    policy = RetryPolicy(budget=1.5, attempts=50, backoff_first=0.05, backoff_max=0.3)
    async with client_of(url, REPORTER, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(ApiUnreachable) as unreachable:
            await client.heartbeat("bot-1", USER)
        elapsed = time.monotonic() - started
    assert unreachable.value.status is None and unreachable.value.code == "unreachable"
    assert 0.5 < elapsed < 2.5


# --- the reporter ----------------------------------------------------------------------


async def last_seen(client: BotSessionClient, bot: str) -> datetime:
    return (await client.status(bot, USER)).last_seen


# functions, not the properties, so that mypy does not take a value for the whole test
def heartbeating(reporter: SessionReporter) -> bool:
    return reporter.heartbeating


def pending(reporter: SessionReporter) -> bool:
    return reporter.pending


async def test_the_reporter_heartbeats_on_its_own(live: str, bot: str) -> None:
    async with (
        client_of(live) as client,
        SessionReporter(client, bot, USER, heartbeat_interval=0.4, phone_number=PHONE) as reporter,
    ):
        result = await reporter.connected()
        assert result is not None and result.status is Phase.ACTIVE
        assert heartbeating(reporter)
        first = result.session.last_seen

        async def moved() -> bool:
            return await last_seen(client, bot) > first and reporter.heartbeats >= 2

        await eventually(moved, timeout=10)
        assert reporter.last_heartbeat is not None
        assert reporter.last_heartbeat.status is Phase.ACTIVE

        stopped = await reporter.disconnected()
        assert stopped is not None and stopped.status is Phase.INACTIVE
        assert not heartbeating(reporter)
        count = reporter.heartbeats
        await asyncio.sleep(1.0)
        assert reporter.heartbeats == count  # no heartbeats once disconnected


async def test_the_reporter_survives_an_api_restart(
    controlplane: ControlPlane,
    namespace: str,
    redis_server: RedisServer,
    database: Path,
    bot: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    with ExitStack() as first_api:
        url = first_api.enter_context(
            serving(controlplane, namespace, redis_server.url, database, port)
        )
        async with client_of(url, retry=RetryPolicy(budget=1.0)) as client:
            reporter = SessionReporter(client, bot, USER, heartbeat_interval=0.3)
            try:
                await reporter.connected()
                await eventually(lambda: _true(reporter.heartbeats >= 1), timeout=10)
                # the API goes away (its thread joins while the reporter goes on)
                await asyncio.to_thread(first_api.close)
                failures = _retries(caplog)
                await eventually(lambda: _true(_retries(caplog) >= failures + 2), timeout=10)
                assert heartbeating(reporter)
                beats = reporter.heartbeats
                before = datetime_of(reporter)

                with serving(controlplane, namespace, redis_server.url, database, port) as again:
                    assert again == url

                    async def resumed() -> bool:
                        return reporter.heartbeats >= beats + 2

                    await eventually(resumed, timeout=20)
                    assert heartbeating(reporter)
                    assert reporter.reestablished == 0  # Redis kept it: heartbeats only

                    async def moved() -> bool:
                        return await last_seen(client, bot) > before

                    await eventually(moved, timeout=10)
                    assert (await client.status(bot, USER)).status is Phase.ACTIVE
            finally:
                await reporter.aclose()


def datetime_of(reporter: SessionReporter) -> datetime:
    assert reporter.last_heartbeat is not None
    return reporter.last_heartbeat.last_seen


def _retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        "trying again in" in r.getMessage()
        for r in caplog.records
        if r.name == "botsession.reporter"
    )


async def _true(value: bool) -> bool:
    return value


async def test_a_lost_session_is_reported_connected_again(live: str, bot: str) -> None:
    async with (
        client_of(live) as client,
        SessionReporter(client, bot, USER, heartbeat_interval=0.3) as reporter,
    ):
        await reporter.connected()
        await eventually(lambda: _true(reporter.heartbeats >= 1), timeout=10)
        # what the operator does when the heartbeats stop (HeartbeatLost): the session
        # becomes inactive, and the bot's next heartbeat is answered 409 session_inactive
        async with client_of(live, REPORTER) as other:
            await other.report(bot, USER, ReportState.DISCONNECTED)

        await eventually(lambda: _true(reporter.reestablished >= 1), timeout=10)
        assert (await client.status(bot, USER)).status is Phase.ACTIVE
        assert reporter.last_result is not None
        assert [t.reason for t in reporter.last_result.transitions] == [Reason.CONNECTED]
        beats = reporter.heartbeats
        await eventually(lambda: _true(reporter.heartbeats > beats), timeout=10)


async def test_the_reporter_maps_a_connection_s_life(live: str, bot: str) -> None:
    """Baileys' connection.update as docs/bot-client.md maps it."""
    async with (
        client_of(live) as client,
        SessionReporter(client, bot, USER, heartbeat_interval=30) as reporter,
    ):
        assert (await reporter.connecting()) is not None  # connection: 'connecting'
        # connection: 'close' before it ever opened: the connect failed
        closed = await reporter.disconnected()
        assert closed is not None and closed.status is Phase.FAILED
        assert closed.transitions[-1].reason == Reason.CONNECT_FAILED
        assert (await reporter.connecting()) is not None  # Baileys reconnects
        opened = await reporter.connected()  # connection: 'open'
        assert opened is not None and opened.status is Phase.ACTIVE
        # close, statusCode 500 (connectionLost): reconnect
        dropped = await reporter.disconnected()
        assert dropped is not None and dropped.status is Phase.INACTIVE
        await reporter.connecting()
        await reporter.connected()
        # close with DisconnectReason.loggedOut
        out = await reporter.logged_out()
        assert out is not None and out.status is Phase.INACTIVE
        assert out.transitions[-1].reason == Reason.LOGGED_OUT
        assert not heartbeating(reporter)
        # a second close records nothing
        repeated = await reporter.logged_out()
        assert repeated is not None and repeated.transitions == []


async def test_a_report_the_api_cannot_take_now_is_delivered_later(
    controlplane: ControlPlane,
    namespace: str,
    redis_server: RedisServer,
    database: Path,
    bot: str,
) -> None:
    port = free_port()
    async with client_of(f"http://127.0.0.1:{port}", retry=RetryPolicy(budget=0.5)) as client:
        reporter = SessionReporter(client, bot, USER, heartbeat_interval=0.3)
        assert (await reporter.connected()) is None  # nothing listens yet
        assert pending(reporter)
        with serving(controlplane, namespace, redis_server.url, database, port):
            await eventually(lambda: _true(reporter.heartbeats >= 1), timeout=20)
            assert not pending(reporter)
            assert (await client.status(bot, USER)).status is Phase.ACTIVE
            await reporter.aclose()


def test_log_lines_hold_no_user_id(caplog: pytest.LogCaptureFixture) -> None:
    """The lines above name the bot and the fingerprint (the autouse fixture checks the phone
    number); this checks the whole userId too, on a line the reporter writes."""
    caplog.set_level(logging.INFO)
    client = BotSessionClient("http://127.0.0.1:9", REPORTER)
    reporter = SessionReporter(client, "bot-1", USER)
    assert USER not in repr(reporter) and REPORTER not in repr(client)


# --- docs/bot-client.md ----------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "bot-client.md"


def doc_blocks(url: str) -> dict[str, Any]:
    """Every Python block of the doc, run in one namespace, the API's URL put in."""
    text = DOC.read_text().replace("http://botsession-api:8000", url)
    namespace: dict[str, Any] = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    return namespace


async def test_the_doc_s_examples_run_against_the_api(
    live: str, bot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = doc_blocks(live)
    await namespace["main"](BOTH)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "True active ['Created', 'Connected']"
    assert printed[2] == "active failed [<Phase.INACTIVE: 'inactive'>]"

    async with client_of(live) as client:
        reporter = SessionReporter(client, bot, USER)
        handle = namespace["on_connection_update"]
        flow: list[tuple[dict[str, Any], Phase]] = [
            ({"connection": "connecting"}, Phase.CONNECTING),
            ({"qr": "2@..."}, Phase.CONNECTING),
            (close(515), Phase.CONNECTING),
            ({"connection": "open"}, Phase.ACTIVE),
            (close(408), Phase.INACTIVE),
            ({"connection": "connecting"}, Phase.CONNECTING),
            (close(428), Phase.FAILED),
            ({"connection": "connecting"}, Phase.CONNECTING),
            ({"connection": "open"}, Phase.ACTIVE),
            (close(401), Phase.INACTIVE),
        ]
        try:
            for update, status in flow:
                await handle(reporter, update)
                assert (await client.status(bot, USER)).status is status, update
            assert reporter.last_result is not None
            assert reporter.last_result.transitions[-1].reason == Reason.LOGGED_OUT
        finally:
            await reporter.aclose()


def close(status_code: int) -> dict[str, Any]:
    return {
        "connection": "close",
        "lastDisconnect": {"error": {"output": {"statusCode": status_code}}},
    }
