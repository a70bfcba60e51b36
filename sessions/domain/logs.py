"""Structured logging: one JSON object per line, with secrets and phone numbers redacted.

Use `event(logger, "message", botId=..., userId=...)`: the keyword fields become JSON keys,
except `userId`, which becomes `user`, its keyed fingerprint (sessions.domain.privacy): no log line
holds a raw user id. The formatter masks, in whatever it prints, as a last line of defence
(callers should not log such values in the first place): bearer tokens, passwords in URLs,
`password=`/`token=`/`secret=`-style parameters, e-mail-like addresses (WhatsApp ids such as
4915112345678@c.us too), and phone numbers in any common spelling (7+ digits, possibly
separated by spaces, dots, dashes, slashes or parentheses, with or without a +); dates
(2026-12-01) are left alone.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from sessions.domain.privacy import user_fingerprint

# Each kind has its own pattern, tried only when a cheap test says the line may hold one:
# every line of the API is redacted, so this is on its hot path (about 10 us a line).
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")
_PARAMETER = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)=[^&\s\"',;]+")
_ADDRESS = re.compile(r"(?i)[\w.%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+")
# a phone number candidate: digits, possibly with + ( ) . / - and spaces between them
_NUMBER = re.compile(r"[+\d][\d ./()-]{5,}\d")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _mask_number(match: re.Match[str]) -> str:
    """Every digit but the last three becomes *, separators stay: +**-***-****-*678. Fewer
    than 7 digits, or a date, stay as they are."""
    text = match.group()
    date = _DATE.match(text)
    if date:
        return date.group() + _NUMBER.sub(_mask_number, text[date.end() :])
    keep = sum(c.isdigit() for c in text) - 3
    if keep < 4:
        return text
    out = []
    for char in text:
        if char.isdigit() and keep > 0:
            out.append("*")
            keep -= 1
        else:
            out.append(char)
    return "".join(out)


def _mask_url_password(match: re.Match[str]) -> str:
    return f"{_NUMBER.sub(_mask_number, match.group(1))}[redacted]@"


def redact(text: str) -> str:
    """Mask tokens, passwords, addresses and phone numbers (see the module docstring)."""
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(r"\1[redacted]", text)
    if "://" in text:
        text = _URL_PASSWORD.sub(_mask_url_password, text)
    if "=" in text:
        text = _PARAMETER.sub(r"\1=[redacted]", text)
    if "@" in text:
        text = _ADDRESS.sub("[redacted-address]", text)
    return _NUMBER.sub(_mask_number, text)


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


# Libraries that log SQL parameters, URLs (BotSession names, label selectors) or payloads at
# INFO or DEBUG: never below WARNING, whatever the log level.
DATA_LOGGERS = (
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "aiosqlite",
    "asyncpg",
    "httpx",
    "httpcore",
    "hpack",
    "kubernetes",  # kubernetes.client.rest logs every response body at DEBUG
    "urllib3",
    "uvicorn.access",
)


def configure(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines; hold the data loggers at
    WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_data_loggers()


def quiet_data_loggers() -> None:
    for name in DATA_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:  # NOTSET (0) included
            logger.setLevel(logging.WARNING)


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    log_fields(logger, message, fields, level)


def log_fields(
    logger: logging.Logger, message: str, fields: Mapping[str, Any], level: int = logging.INFO
) -> None:
    """Like event(), for field names that are not Python identifiers (e.g. "from")."""
    if not logger.isEnabledFor(level):
        return
    values = dict(fields)
    user = values.pop("userId", None)
    if user is not None:
        values["user"] = user_fingerprint(str(user))
    logger.log(level, message, extra={"fields": values})
