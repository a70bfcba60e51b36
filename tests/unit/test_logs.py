"""The JSON log formatter: the one-pass redaction and the cached time prefix."""

from __future__ import annotations

import json
import logging
import re

from hypothesis import given
from hypothesis import strategies as st

from sessions.logs import JsonFormatter, redact

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")
_DIGITS = re.compile(r"\d{7,}")


def redact_in_three_passes(text: str) -> str:
    """The plain statement of the rule (and the implementation before the one-pass one)."""
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _URL_PASSWORD.sub(r"\1[redacted]@", text)
    return _DIGITS.sub(lambda m: "*" * (len(m.group()) - 3) + m.group()[-3:], text)


def test_each_kind_of_secret_is_masked() -> None:
    assert redact("phone 4915112345678 ok 123456") == "phone **********678 ok 123456"
    assert redact('{"auth": "Bearer abc.def-1"}') == '{"auth": "Bearer [redacted]"}'
    assert redact("BEARER   tok, more") == "BEARER   [redacted], more"
    assert redact("redis://user:s3cret@host:6379/0") == "redis://user:[redacted]@host:6379/0"
    assert (
        redact("postgresql://4915112345678:pw@db/x") == "postgresql://**********678:[redacted]@db/x"
    )


pieces = st.sampled_from(
    ["Bearer ", "bearer\t", "://", ":", "@", "/", " ", '"', ",", "'", "x", "4915112345678", "12"]
)


@given(st.lists(pieces | st.text(max_size=5), max_size=12).map("".join))
def test_one_pass_masks_exactly_what_three_passes_mask(text: str) -> None:
    assert redact(text) == redact_in_three_passes(text)


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
