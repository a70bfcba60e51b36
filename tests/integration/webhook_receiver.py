"""A real webhook receiver for the tests: an aiohttp server on 127.0.0.1 that verifies every
signature twice (with the Standard Webhooks library, as a receiver would, and by hand, as
docs/api.md says), can fail the first attempts of each message, or hang, and records what it
took, in order."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from devstack.process import free_port
from tests.conftest import eventually

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def signed_by_hand(secret: str, headers: Any, body: bytes) -> bool:
    """docs/api.md "Webhooks": HMAC-SHA256, keyed with the secret's base64 after whsec_, of
    "<webhook-id>.<webhook-timestamp>.<body>", base64, after "v1,"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    given = [s.partition(",")[2] for s in headers["webhook-signature"].split(" ")]
    return any(hmac.compare_digest(expected, g) for g in given)


@dataclass
class Receiver:
    secret: str = SECRET
    fail_first: int = 0  # attempts of each message answered 503 before it is taken
    status: int = 200  # the answer once taken (set to 500 to fail everything)
    answering: asyncio.Event = field(default_factory=asyncio.Event)  # cleared: hang
    port: int = field(default_factory=free_port)
    attempts: Counter[str] = field(default_factory=Counter)
    taken: list[dict[str, Any]] = field(default_factory=list)  # bodies, in the order taken
    taken_ids: list[str] = field(default_factory=list)
    forged: int = 0  # attempts whose signature did not verify
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks?token=in-the-query"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
            verified = signed_by_hand(self.secret, request.headers, body)
        except (WebhookVerificationError, KeyError):
            verified = False
        if not verified:
            self.forged += 1
            return web.Response(status=401)
        message = request.headers["webhook-id"]
        self.attempts[message] += 1
        await self.answering.wait()
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # the sender gave up waiting: not taken
        if self.attempts[message] <= self.fail_first or self.status >= 300:
            return web.Response(status=503 if self.status < 300 else self.status)
        self.taken.append(json.loads(body))
        self.taken_ids.append(message)
        return web.Response(status=self.status)

    def hang(self) -> None:
        """Attempts get no answer (until answer())."""
        self.answering.clear()

    def answer(self) -> None:
        self.answering.set()

    async def start(self) -> Receiver:
        self.answer()
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.answer()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        """Until `count` different messages were taken."""

        async def enough() -> bool:
            return len(set(self.taken_ids)) >= count

        await eventually(enough, timeout, interval=0.05)
