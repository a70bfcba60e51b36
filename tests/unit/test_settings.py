from __future__ import annotations

from datetime import timedelta

import pytest

from sessions.domain.settings import SettingsError, load_settings, parse_duration

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BOTSESSION_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]


def test_defaults_match_the_requirements() -> None:
    settings = load_settings()
    assert settings.session_ttl == timedelta(hours=24)
    assert settings.cleanup_interval == timedelta(hours=1)
    assert settings.database_url.startswith("sqlite+aiosqlite:///")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTSESSION_SESSION_TTL", "30m")
    monkeypatch.setenv("BOTSESSION_CLEANUP_INTERVAL", "90")
    monkeypatch.setenv("BOTSESSION_REDIS_URL", "redis+sentinel://s1:26379,s2:26379/main/0")
    settings = load_settings()
    assert settings.session_ttl == timedelta(minutes=30)
    assert settings.cleanup_interval == timedelta(seconds=90)
    assert settings.redis_url.startswith("redis+sentinel://")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOTSESSION_SESSION_TTL", "soon"),
        ("BOTSESSION_CLEANUP_INTERVAL", "0"),
        ("BOTSESSION_REDIS_URL", "http://x"),
        ("BOTSESSION_DATABASE_URL", "sqlite:///x.db"),
        ("BOTSESSION_SWEEP_BATCH_SIZE", "0"),
    ],
)
def test_a_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_secrets_in_urls_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTSESSION_DATABASE_URL", "mysql://user:hunter2@db/x")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("1.5h", 5400), ("7d", 604800), ("250ms", 0.25), (12, 12)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
