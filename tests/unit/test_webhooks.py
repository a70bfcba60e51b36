"""Webhook endpoints as configured (sessions.domain.webhooks) and the retry bound
(sessions.usecases.webhooks)."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sessions.adapters.redis.store import SessionEvent
from sessions.domain.model import SessionKey
from sessions.domain.settings import configured_webhooks, load_settings
from sessions.domain.webhooks import WebhookConfigError, WebhookEndpoint, parse_endpoints
from sessions.usecases.webhooks import body_of, event_moment

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def entry(**changes: object) -> dict[str, object]:
    return {"name": "crm", "url": "https://crm.example/hooks", "secret": SECRET, **changes}


def parsed(*entries: dict[str, object]) -> list[WebhookEndpoint]:
    return parse_endpoints(json.dumps(list(entries)), "test")


def test_an_entry_with_filters_is_read() -> None:
    [crm] = parsed(entry(bots=["shop-bot"], events=["transition.failed", "removed"]))
    assert (crm.name, crm.url, crm.secret) == ("crm", "https://crm.example/hooks", SECRET)
    assert crm.bots == {"shop-bot"}
    assert crm.events == {"transition.failed", "removed"}
    assert "whsec_" not in repr(crm)


def test_no_filter_wants_everything_and_filters_narrow_by_bot_type_and_status() -> None:
    [everything] = parsed(entry())
    [narrow] = parsed(entry(bots=["b1"], events=["transition.failed", "removed"]))
    assert everything.wants("transition", "any-bot", "active")
    assert narrow.wants("transition", "b1", "failed")
    assert narrow.wants("removed", "b1", "")
    assert not narrow.wants("transition", "b1", "active")
    assert not narrow.wants("transition", "b2", "failed")


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (entry(name="CRM!"), "name must be"),
        (entry(url="ftp://crm.example/"), "url must be"),
        (entry(url="https://"), "url must be"),
        (entry(url="https://crm.example:99999/"), "url must be"),
        (entry(secret="hunter2-but-longer-than-that"), "secret must be"),
        (entry(secret="whsec_" + base64.b64encode(b"short").decode()), "secret must be"),
        (entry(secret="whsec_not base64!"), "secret must be"),
        (entry(events=["transition.sleeping"]), "events must be among"),
        (entry(bots="shop-bot"), "bots must be a list"),
        (entry(colour="blue"), "unknown keys"),
    ],
)
def test_a_bad_entry_is_named_and_its_secret_never_shown(bad: dict[str, object], says: str) -> None:
    with pytest.raises(WebhookConfigError, match=says) as caught:
        parsed(bad)
    assert "entry 1" in str(caught.value)
    assert str(bad["secret"]) not in str(caught.value)


def test_the_list_may_be_wrapped_empty_or_wrong() -> None:
    assert parse_endpoints(json.dumps({"webhooks": [entry()]}), "t")[0].name == "crm"
    assert parse_endpoints("  ", "t") == []
    with pytest.raises(WebhookConfigError, match="not valid JSON"):
        parse_endpoints("[{", "t")
    with pytest.raises(WebhookConfigError, match="same name"):
        parsed(entry(), entry())


def test_the_shown_url_drops_credentials_query_and_fragment() -> None:
    [crm] = parsed(entry(url="https://user:pw@crm.example:8443/hooks?token=s3cret#x"))
    assert crm.shown_url == "https://crm.example:8443/hooks"


def test_settings_read_the_file_and_the_variable_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("BOTSESSION_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "webhooks.json"
    path.write_text(json.dumps([entry(name="from-file")]))
    monkeypatch.setenv("BOTSESSION_WEBHOOKS_FILE", str(path))
    monkeypatch.setenv("BOTSESSION_WEBHOOKS", json.dumps([entry(name="from-env")]))
    settings = load_settings()
    assert [e.name for e in configured_webhooks(settings)] == ["from-file", "from-env"]
    assert settings.webhook_retry_window == timedelta(hours=1)
    assert SECRET not in repr(settings)
    monkeypatch.setenv("BOTSESSION_WEBHOOKS", json.dumps([entry(name="from-file")]))
    with pytest.raises(WebhookConfigError, match="same name"):
        configured_webhooks(load_settings())
    monkeypatch.setenv("BOTSESSION_WEBHOOKS_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(WebhookConfigError, match="WEBHOOKS_FILE"):
        configured_webhooks(load_settings())


def test_the_body_is_the_stream_event_and_its_moment_is_its_id() -> None:
    item = SessionEvent(
        "1764638400123-4",
        "transition",
        SessionKey("shop-bot", "u1"),
        2,
        5,
        "connecting",
        "active",
        "Connected",
        "bots",
        "2026-12-02T01:20:00Z",
    )
    assert json.loads(body_of(item)) == item.payload()
    assert item.payload()["from"] == "connecting"
    assert event_moment(item) == datetime(2025, 12, 2, 1, 20, 0, 123_000, tzinfo=UTC)
