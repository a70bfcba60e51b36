"""Structured logging: one JSON object per line, with secrets and phone numbers redacted.

Use `event(logger, "message", botId=..., userId=...)`: the keyword fields become JSON keys.
The formatter masks every run of 7+ digits (phone numbers) and bearer tokens in whatever it
prints, as a last line of defence: callers should not log such values in the first place.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

_DIGITS = re.compile(r"\d{7,}")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")


def redact(text: str) -> str:
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _URL_PASSWORD.sub(r"\1[redacted]@", text)
    return _DIGITS.sub(lambda m: "*" * (len(m.group()) - 3) + m.group()[-3:], text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str, ensure_ascii=False))


JsonFormatter.converter = __import__("time").gmtime


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
