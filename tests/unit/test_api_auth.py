"""API tokens: parsing (YAML/JSON), validation without leaking tokens, scopes, reloading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from api.auth import Scope, TokenError, TokenRegistry, parse_tokens
from api.settings import ApiSettings, load_api_settings
from sessions.domain.settings import SettingsError

pytestmark = pytest.mark.unit

SECRET = "s3cret-token-0123456789"
OTHER = "another-token-9876543210"


def entries(*items: tuple[str, str, list[str] | str]) -> list[dict[str, object]]:
    return [{"name": n, "token": t, "scopes": s} for n, t, s in items]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(entries(("frontend", SECRET, ["read", "report"]))),
        yaml.safe_dump(entries(("frontend", SECRET, ["read", "report"]))),
        json.dumps({"tokens": entries(("frontend", SECRET, ["read", "report"]))}),
    ],
    ids=["json", "yaml", "mapping"],
)
def test_the_formats(text: str) -> None:
    (token,) = parse_tokens(text, "test")
    assert token.name == "frontend"
    assert token.scopes == {Scope.READ, Scope.REPORT}
    assert SECRET not in repr(token)  # only the digest is kept


def test_admin_implies_every_scope() -> None:
    admin, reader = parse_tokens(
        json.dumps(entries(("ops", SECRET, ["admin"]), ("ui", OTHER, "read"))), "test"
    )  # a single scope may be a plain string
    assert all(admin.allows(scope) for scope in Scope)
    assert reader.allows(Scope.READ)
    assert not reader.allows(Scope.REPORT) and not reader.allows(Scope.ADMIN)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (entries(("ui", "short", ["read"])), r"16\+ characters"),
        (entries(("ui", "has a space in it 123", ["read"])), "whitespace"),
        (entries(("ui", SECRET, ["write"])), "among read, report, admin"),
        (entries(("ui", SECRET, [])), "non-empty list"),
        (entries(("bad name!", SECRET, ["read"])), "name must be"),
        ([{"name": "ui", "token": SECRET, "scopes": ["read"], "extra": 1}], "unknown keys"),
        ([{"name": "ui", "scopes": ["read"]}], r"16\+ characters"),
        ({"name": "ui"}, "expected a list"),
        (["just a string"], "expected a mapping"),
    ],
)
def test_invalid_entries_are_refused_without_showing_the_token(data: object, message: str) -> None:
    with pytest.raises(TokenError, match=message) as caught:
        parse_tokens(json.dumps(data), "tokens.yaml")
    assert SECRET not in str(caught.value)
    assert "tokens.yaml" in str(caught.value)


def test_invalid_yaml_names_the_line_only() -> None:
    with pytest.raises(TokenError, match="at line") as caught:
        parse_tokens(f"- name: ui\n  token: [{SECRET}\n", "tokens.yaml")
    assert SECRET not in str(caught.value)


def test_names_and_tokens_must_be_unique_across_env_and_file(tmp_path: Path) -> None:
    file = tmp_path / "tokens.yaml"
    file.write_text(yaml.safe_dump(entries(("ui", OTHER, ["read"]))))
    env = json.dumps(entries(("ui", SECRET, ["read"])))
    with pytest.raises(TokenError, match="unique"):
        TokenRegistry(env, file)
    env = json.dumps(entries(("other", OTHER, ["read"])))
    with pytest.raises(TokenError, match="same token") as caught:
        TokenRegistry(env, file)
    assert OTHER not in str(caught.value)


def test_no_tokens_at_all_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="no API tokens configured"):
        TokenRegistry(None, None)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(TokenError, match="no API tokens configured"):
        TokenRegistry(None, empty)
    with pytest.raises(TokenError, match="cannot read token file"):
        TokenRegistry(None, tmp_path / "missing.yaml")


def test_authenticate() -> None:
    registry = TokenRegistry(
        json.dumps(entries(("ui", SECRET, ["read"]), ("ops", OTHER, ["admin"])))
    )
    assert registry.authenticate(SECRET) is not None
    assert registry.authenticate(SECRET).name == "ui"  # type: ignore[union-attr]
    assert registry.authenticate(OTHER).name == "ops"  # type: ignore[union-attr]
    for wrong in ("", SECRET[:-1], SECRET + "x", SECRET.upper(), "\ud800"):
        assert registry.authenticate(wrong) is None


def test_the_token_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    file = tmp_path / "tokens.yaml"
    file.write_text(yaml.safe_dump(entries(("ui", SECRET, ["read"]))))
    clock = Clock()
    registry = TokenRegistry(None, file, reload_interval=5, clock=clock)
    assert registry.authenticate(SECRET) is not None
    # rotated, as a mounted Secret is (a new file swapped in)
    rotated = tmp_path / "rotated.yaml"
    rotated.write_text(yaml.safe_dump(entries(("ui", OTHER, ["read"]))))
    os.replace(rotated, file)
    clock.now = 1  # not checked again before the interval
    assert registry.authenticate(SECRET) is not None
    clock.now = 6
    assert registry.authenticate(SECRET) is None
    assert registry.authenticate(OTHER) is not None
    # a broken new version keeps the previous tokens
    file.write_text("- name: [broken\n")
    clock.now = 12
    assert registry.authenticate(OTHER) is not None
    file.write_text("")  # no tokens at all: keeps the previous ones too
    clock.now = 18
    assert registry.authenticate(OTHER) is not None


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOTSESSION_API_TOKENS", json.dumps(entries(("ui", SECRET, ["read"]))))
    monkeypatch.setenv("BOTSESSION_API_TOKENS_FILE", str(tmp_path / "tokens.yaml"))
    monkeypatch.setenv("BOTSESSION_API_PORT", "9000")
    settings = load_api_settings()
    assert settings.tokens is not None and settings.tokens.get_secret_value().startswith("[")
    assert SECRET not in repr(settings)
    assert (settings.tokens_file, settings.port) == (tmp_path / "tokens.yaml", 9000)
    monkeypatch.setenv("BOTSESSION_API_PORT", "0")
    with pytest.raises(SettingsError, match="BOTSESSION_API_PORT") as caught:
        load_api_settings()
    assert SECRET not in str(caught.value)


def test_defaults() -> None:
    settings = ApiSettings.model_validate({})
    assert (settings.port, settings.migrate, settings.history_limit) == (8000, False, 20)
