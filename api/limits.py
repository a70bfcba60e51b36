"""Bounds on what one request and one client may cost the API.

- BodyLimit (pure ASGI, outside everything else but the request log): a body larger than
  the limit is refused with 413 before it is parsed and before the token is checked: by
  its Content-Length when it sends one (nothing is read), else as soon as the bytes
  received pass the limit (at most the limit is buffered).
- RateLimiter: a token bucket per API token (its name), refilled at the token's rate, as
  configured in the tokens file (`rateLimit`) or by the default for non-admin tokens.
  Buckets are per API replica. An empty bucket answers 429 with Retry-After.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from api import metrics
from api.errors import ASGIApp, Message, Receive, Scope, Send, error_body


@dataclass(frozen=True)
class Rate:
    """`per_second` requests a second on average, up to `burst` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate needs perSecond > 0 and burst >= 1")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        # read it here, at most max_bytes + one chunk, and hand it on whole: the app (FastAPI
        # turns any error while reading a body into a 400) never sees an oversized one
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: wait for a disconnect, as usual
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        metrics.BODY_TOO_LARGE.inc()
        body = json.dumps(
            error_body(
                "payload_too_large",
                f"the request body is larger than {self.max_bytes} bytes",
                limit=self.max_bytes,
            )
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimiter:
    """Token buckets by API token name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, updated)

    def admit(self, name: str, rate: Rate | None) -> float | None:
        """None when the request may go on; else the seconds until it may (Retry-After)."""
        if rate is None:
            return None
        now = self._clock()
        tokens, updated = self._buckets.get(name, (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - updated) * rate.per_second)
        if tokens >= 1:
            self._buckets[name] = (tokens - 1, now)
            return None
        self._buckets[name] = (tokens, now)
        return max(1.0, math.ceil((1 - tokens) / rate.per_second))
