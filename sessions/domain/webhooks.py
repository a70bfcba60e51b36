"""Webhook endpoints: where the session events are POSTed (sessions.usecases.webhooks).

Configured as a JSON list (in BOTSESSION_WEBHOOKS_FILE or BOTSESSION_WEBHOOKS):

    [{"name": "crm",                                    # in metrics, logs and the API
      "url": "https://crm.example/botsession-events",
      "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8G",  # Standard Webhooks
      "bots": ["sales-bot"],                 # optional: only these bots' (default: all)
      "events": ["transition.failed", "removed"]}]       # optional (default: all)

`events` entries are an event type (`transition`, `removed`) or a transition to one status
(`transition.active`, `transition.inactive`, ...). A mapping `{"webhooks": [...]}` is
accepted too. Errors name the entry, never its secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sessions.domain.model import Phase

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
MIN_SECRET_BYTES = 24  # the Standard Webhooks specification's lower bound
EVENT_TYPES = frozenset(
    {"transition", "removed", *(f"transition.{phase.value}" for phase in Phase)}
)
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_KEYS = {"name", "url", "secret", "bots", "events"}


class WebhookConfigError(ValueError):
    """The webhook list is invalid; the message names the entry (never its secret)."""


@dataclass(frozen=True)
class WebhookEndpoint:
    name: str
    url: str
    secret: str = field(repr=False)
    bots: frozenset[str] = frozenset()  # empty: every bot
    events: frozenset[str] = frozenset()  # empty: every event

    def wants(self, event_type: str, bot_id: str, to_phase: str) -> bool:
        if self.bots and bot_id not in self.bots:
            return False
        if not self.events:
            return True
        return event_type in self.events or f"{event_type}.{to_phase}" in self.events

    @property
    def shown_url(self) -> str:
        """The URL without credentials, query or fragment (which may hold secrets)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_endpoints(text: str, source: str) -> list[WebhookEndpoint]:
    if not text.strip():
        return []
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WebhookConfigError(f"{source}: not valid JSON (line {exc.lineno})") from None
    if isinstance(data, dict) and set(data) == {"webhooks"}:
        data = data["webhooks"]
    if not isinstance(data, list):
        raise WebhookConfigError(f"{source}: expected a list of {{name, url, secret}}")
    endpoints = [_endpoint(entry, f"{source}: entry {n}") for n, entry in enumerate(data, 1)]
    names = [endpoint.name for endpoint in endpoints]
    if len(set(names)) != len(names):
        raise WebhookConfigError(f"{source}: two endpoints have the same name")
    return endpoints


def _endpoint(entry: Any, where: str) -> WebhookEndpoint:
    if not isinstance(entry, dict):
        raise WebhookConfigError(f"{where}: expected a mapping with name, url and secret")
    unknown = set(entry) - _KEYS
    if unknown:
        raise WebhookConfigError(f"{where}: unknown keys {sorted(map(str, unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise WebhookConfigError(f"{where}: name must be 1-63 of a-z, 0-9 and - (a DNS label)")
    where = f"{where} ({name})"
    url = entry.get("url")
    if not isinstance(url, str) or not _is_http(url):
        raise WebhookConfigError(f"{where}: url must be an http:// or https:// URL")
    secret = entry.get("secret")
    if not isinstance(secret, str) or not _valid_secret(secret):
        raise WebhookConfigError(
            f"{where}: secret must be {SECRET_PREFIX} followed by the base64 of "
            f"{MIN_SECRET_BYTES}-64 random bytes (e.g. "
            f'"{SECRET_PREFIX}$(head -c 32 /dev/urandom | base64)")'
        )
    bots = _strings(entry.get("bots", []), f"{where}: bots")
    events = _strings(entry.get("events", []), f"{where}: events")
    if events - EVENT_TYPES:
        raise WebhookConfigError(f"{where}: events must be among {', '.join(sorted(EVENT_TYPES))}")
    return WebhookEndpoint(name, url, secret, bots, events)


def _is_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # e.g. a port out of range
        return False


def _strings(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise WebhookConfigError(f"{where} must be a list of non-empty strings")
    return frozenset(value)


def _valid_secret(secret: str) -> bool:
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return False
    return MIN_SECRET_BYTES <= len(key) <= 64
