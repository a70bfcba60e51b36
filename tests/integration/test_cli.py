from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sessions.adapters.sql.migrate import head_revision

pytestmark = pytest.mark.integration


def botsession(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )


def test_migrate_by_hand_then_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    first = botsession("migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"schema: empty -> {head_revision()}"
    again = botsession("migrate", "--database-url", url)
    assert again.stdout.strip() == f"schema: {head_revision()} -> {head_revision()}"


def test_a_bad_setting_stops_with_its_name(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "BOTSESSION_SESSION_TTL": "forever"}
    result = botsession("migrate", env=env)
    assert result.returncode == 2
    assert "BOTSESSION_SESSION_TTL" in result.stderr


def test_fingerprint_prints_what_the_logs_carry_for_a_user() -> None:
    import os

    from sessions.domain import privacy

    env = {**os.environ, "BOTSESSION_FINGERPRINT_KEY": "the-installations-key"}
    result = botsession("fingerprint", "4915112345678@c.us", "jane", env=env)
    assert result.returncode == 0, result.stderr
    privacy.configure("the-installations-key")
    expected = [privacy.user_fingerprint("4915112345678@c.us"), privacy.user_fingerprint("jane")]
    assert result.stdout.split() == expected
    without = {k: v for k, v in os.environ.items() if k != "BOTSESSION_FINGERPRINT_KEY"}
    refused = botsession("fingerprint", "jane", env=without)
    assert refused.returncode == 2 and "BOTSESSION_FINGERPRINT_KEY" in refused.stderr
