"""The JSON log formatter: the one-pass redaction and the cached time prefix."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions.domain.logs import JsonFormatter, redact


def test_each_kind_of_secret_is_masked() -> None:
    assert redact("phone 4915112345678 ok 123456") == "phone **********678 ok 123456"
    assert redact('{"auth": "Bearer abc.def-1"}') == '{"auth": "Bearer [redacted]"}'
    assert redact("BEARER   tok, more") == "BEARER   [redacted], more"
    assert redact("redis://user:s3cret@host:6379/0") == "redis://user:[redacted]@host:6379/0"
    assert (
        redact("postgresql://4915112345678:pw@db/x") == "postgresql://**********678:[redacted]@db/x"
    )
    assert redact("GET /x?password=hunter2&a=1") == "GET /x?password=[redacted]&a=1"
    assert redact("token=abc123 secret=x;") == "token=[redacted] secret=[redacted];"
    assert redact("to jane.doe+bots@example.co.uk now") == "to [redacted-address] now"
    assert redact("user 4915112345678@c.us") == "user [redacted-address]"


@pytest.mark.parametrize(
    "spelling",
    [
        "+49-151-1234-5678",
        "49.151.123.456.78",
        "+49 (0) 151 1234 5678",
        "(0151) 1234 5678",
        "0151/12345678",
        "+4915112345678",
        "0151 123 45 67",
    ],
)
def test_phone_numbers_in_common_spellings_keep_only_three_digits(spelling: str) -> None:
    masked = redact(f'{{"note": "call {spelling} now"}}')
    assert sum(c.isdigit() for c in masked) == 3, masked
    assert masked.endswith(f'{spelling[-3:]} now"}}')


def test_times_versions_and_small_numbers_are_left_alone() -> None:
    for text in (
        '{"time": "2026-12-01T04:59:22.280Z", "ms": 12.5}',
        "kube-apiserver v1.36.3 on 10.0.0.1:6443, revision 42, 2026-12-01",
        "lastSeen 2025-01-01T00:00:00Z expires 2025-01-02T00:00:00Z",
    ):
        assert redact(text) == text


phones = st.lists(st.integers(0, 9), min_size=8, max_size=15).map(lambda ds: "".join(map(str, ds)))
separators = st.sampled_from(["", " ", "-", ".", "/", " - "])


@given(phones, separators, st.integers(2, 4), st.booleans())
def test_a_phone_number_however_grouped_shows_three_digits_at_most(
    digits: str, sep: str, group: int, plus: bool
) -> None:
    spelled = ("+" if plus else "") + sep.join(
        digits[i : i + group] for i in range(0, len(digits), group)
    )
    masked = redact(f"number: {spelled}.")
    assert sum(c.isdigit() for c in masked) <= 3, masked


def test_a_line_has_the_time_to_the_millisecond_in_utc() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("api", logging.INFO, __file__, 1, "request", None, None)
    for created, expected in [
        (1_795_000_000.125, "2026-11-18T11:06:40.125Z"),
        (1_795_000_000.75, "2026-11-18T11:06:40.750Z"),
        (1_795_000_001.0, "2026-11-18T11:06:41.000Z"),  # the next second: a new prefix
        (1_795_000_000.5, "2026-11-18T11:06:40.500Z"),  # and back (a record from another thread)
    ]:
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert json.loads(formatter.format(record))["time"] == expected


def test_a_user_fingerprint_is_never_masked_and_holds_no_digit() -> None:
    from sessions.domain.privacy import user_fingerprint

    for user in ("4915112345678@c.us", "jane", "x" * 128):
        line = json.dumps({"message": "session transition", "user": user_fingerprint(user)})
        assert redact(line) == line
        assert not any(c.isdigit() for c in user_fingerprint(user))
