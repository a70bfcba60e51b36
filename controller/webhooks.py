"""Webhook deliveries on the housekeeping leader (sessions.usecases.webhooks): one loop per
configured endpoint, idle on the other replicas. The leader names the endpoints in Redis
when it takes the lease, for GET /v1/whatsapp/webhooks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from controller import metrics
from controller.steps import guarded
from sessions.adapters.redis.lease import RedisLease
from sessions.adapters.redis.webhooks import WebhookError, WebhookLedger
from sessions.adapters.tasks import stop
from sessions.adapters.webhooks import WebhookSender
from sessions.domain.logs import event
from sessions.domain.webhooks import WebhookEndpoint
from sessions.runtime import Runtime
from sessions.usecases.webhooks import EndpointDeliveries, NotLeading, RetryPolicy

BLOCK = timedelta(seconds=1)  # how long a step waits for new events
IDLE = 1.0  # seconds between looks at the lease while another replica leads

log = logging.getLogger(__name__)


class WebhookDelivery:
    def __init__(
        self,
        runtime: Runtime,
        endpoints: list[WebhookEndpoint],
        lease: RedisLease,
        leading: Callable[[], bool],
        policy: RetryPolicy | None = None,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.endpoints = endpoints
        self.leading = leading
        self.ledger = WebhookLedger(runtime.redis)
        self.sender = WebhookSender(settings.webhook_timeout)
        self.policy = policy or RetryPolicy(window=settings.webhook_retry_window)
        self.deliveries = [
            EndpointDeliveries(
                endpoint,
                runtime.redis,
                self.ledger,
                self.sender,
                lease,
                leading,
                self.policy,
                on_failure=self.failure_noter(endpoint.name),
            )
            for endpoint in endpoints
        ]
        for deliveries in self.deliveries:
            metrics.WEBHOOK_WAITING.labels(deliveries.endpoint.name).set_function(
                deliveries.waiting_seconds
            )

    @staticmethod
    def failure_noter(name: str) -> Callable[[WebhookError], None]:
        def noted(error: WebhookError) -> None:
            metrics.WEBHOOK_FAILED_ATTEMPTS.labels(name).inc()
            event(
                log,
                "webhook attempt failed",
                logging.WARNING,
                endpoint=name,
                error=error.message,
                event_id=error.event_id,
            )

        return noted

    async def run(self) -> None:
        """Also without endpoints: the leader then publishes none, so endpoints removed
        from the configuration leave GET /v1/whatsapp/webhooks."""
        loops = [
            asyncio.create_task(self.deliver(d), name=f"webhook {d.endpoint.name}")
            for d in self.deliveries
        ]
        try:
            await self.publish_when_leading()
        finally:
            await stop(*loops)
            await self.sender.close()

    async def publish_when_leading(self) -> None:
        async def publish() -> bool:
            await self.ledger.publish(self.endpoints)
            return True

        published = False
        while True:
            if not self.leading():
                published = False
            elif not published:
                published = bool(await guarded("webhooks", publish))
            await asyncio.sleep(IDLE)

    async def deliver(self, deliveries: EndpointDeliveries) -> None:
        name = deliveries.endpoint.name

        async def step() -> bool:
            try:
                outcome = await deliveries.step(BLOCK)
            except NotLeading:
                await asyncio.sleep(IDLE)
                return True
            metrics.WEBHOOK_DELIVERED.labels(name).inc(outcome.delivered)
            metrics.WEBHOOK_GIVEN_UP.labels(name).inc(outcome.given_up)
            if outcome.given_up:
                event(
                    log,
                    "webhook events given up",
                    logging.ERROR,
                    endpoint=name,
                    count=outcome.given_up,
                )
            return True

        while True:
            if await guarded(f"webhook {name}", step) is None:
                await asyncio.sleep(IDLE)  # failed: a store down, most likely
