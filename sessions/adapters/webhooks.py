"""POSTs one webhook message, signed as the Standard Webhooks specification says
(https://www.standardwebhooks.com; docs/api.md "Webhooks"): headers `webhook-id` (the
idempotency key), `webhook-timestamp` (Unix seconds) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`), so a receiver can verify it with
the specification's libraries, in any language, or with a few lines of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
from standardwebhooks import Webhook

from sessions.domain.webhooks import WebhookEndpoint

USER_AGENT = "botsession-operator-webhooks/1"


class DeliveryFailed(Exception):
    """One attempt failed: no answer in time, no connection, or an answer other than 2xx."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WebhookSender:
    def __init__(self, timeout: timedelta) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout.total_seconds())
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def send(
        self, endpoint: WebhookEndpoint, message_id: str, body: str, now: datetime | None = None
    ) -> int:
        """POST `body`; returns the 2xx status, raises DeliveryFailed otherwise. Redirects
        are not followed (a signed message goes where it was configured to, or fails)."""
        moment = now or datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(endpoint.secret).sign(message_id, moment, body),
        }
        try:
            async with self.session().post(
                endpoint.url, data=body.encode(), headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self.timeout.total:g} s") from None
        except aiohttp.ClientError as exc:  # its text may hold the URL: shown without secrets
            text = str(exc).replace(endpoint.url, endpoint.shown_url)
            raise DeliveryFailed(f"{type(exc).__name__}: {text}"[:300]) from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}", status)
        return status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
