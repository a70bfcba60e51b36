"""Structured logging: one JSON object per line, with secrets and phone numbers redacted.

Use `event(logger, "message", botId=..., userId=...)`: the keyword fields become JSON keys.
The formatter masks every run of 7+ digits (phone numbers) and bearer tokens in whatever it
prints, as a last line of defence: callers should not log such values in the first place.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

_DIGITS = re.compile(r"\d{7,}")
# one pass for all three (every line of the API is redacted, so it is on the hot path):
# a bearer token, a password in a URL, a run of 7+ digits
_SECRETS = re.compile(r"(?i)(bearer\s+)[^\s\"',]+|(://[^:/@\s]*:)[^@/\s]+@|\d{7,}")


def _mask_digits(match: re.Match[str]) -> str:
    digits = match.group()
    return "*" * (len(digits) - 3) + digits[-3:]


def _mask(match: re.Match[str]) -> str:
    bearer, url_user = match.group(1, 2)
    if bearer is not None:
        return f"{bearer}[redacted]"
    if url_user is not None:
        return f"{_DIGITS.sub(_mask_digits, url_user)}[redacted]@"
    return _mask_digits(match)


def redact(text: str) -> str:
    """Mask bearer tokens, URL passwords and the first digits of every run of 7+ digits."""
    return _SECRETS.sub(_mask, text)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        """2026-11-25T08:01:32.123Z; strftime once per second, not once per line."""
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str, ensure_ascii=False))


def configure(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    log_fields(logger, message, fields, level)


def log_fields(
    logger: logging.Logger, message: str, fields: Mapping[str, Any], level: int = logging.INFO
) -> None:
    """Like event(), for field names that are not Python identifiers (e.g. "from")."""
    logger.log(level, message, extra={"fields": dict(fields)})
