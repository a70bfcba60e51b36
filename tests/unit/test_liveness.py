"""When silence proves a bot is gone (sessions.usecases.liveness.paused_because)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sessions.usecases.liveness import BEACON_STALE, paused_because

pytestmark = pytest.mark.unit

NOW = datetime(2031, 5, 17, 10, 0, tzinfo=UTC)


def test_an_api_heard_lately_and_no_hold_let_silence_count() -> None:
    assert paused_because(NOW, NOW - BEACON_STALE, None) is None
    assert paused_because(NOW, NOW - timedelta(seconds=1), NOW) is None  # a hold just ended


def test_no_api_ever_is_no_reason_to_wait() -> None:
    assert paused_because(NOW, None, None) is None


def test_an_api_unheard_for_longer_than_the_stale_limit_pauses() -> None:
    why = paused_because(NOW, NOW - BEACON_STALE - timedelta(seconds=1), None)
    assert why is not None and "no API replica" in why


def test_a_hold_pauses_until_it_ends() -> None:
    why = paused_because(NOW, NOW, NOW + timedelta(seconds=1))
    assert why is not None and "held until 2031-05-17T10:00:01Z" in why
