"""GET /v1/whatsapp/webhooks: where each webhook endpoint's deliveries stand (the operator's
leader delivers them: sessions.usecases.webhooks), read from Redis by any replica."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from api.routes import V1, Reader
from api.schemas import errors
from sessions.adapters.redis.webhooks import WebhookLedger, WebhookStatus
from sessions.domain.model import format_time
from sessions.runtime import Runtime

router = APIRouter(prefix=V1, tags=["webhooks"])


class WebhookErrorOut(BaseModel):
    message: str = Field(description="e.g. HTTP 503, or no answer within 10 s")
    status: int | None = Field(description="the HTTP status the endpoint answered, if any")
    at: str
    eventId: str = Field(description="the event whose delivery failed")


class WebhookOut(BaseModel):
    name: str
    url: str = Field(description="without credentials or query")
    bots: list[str] = Field(description="only these bots' events; empty: all")
    events: list[str] = Field(description="only these event types; empty: all")
    cursor: str | None = Field(description="the last event the endpoint is done with")
    delivered: int
    failedAttempts: int = Field(description="each was retried")
    givenUp: int = Field(description="events given up after the retry window")
    lastDeliveredAt: str | None
    lastError: WebhookErrorOut | None
    waitingSince: str | None = Field(
        description="when the oldest event not taken yet happened, while an attempt failed; "
        "null: caught up"
    )

    @classmethod
    def of(cls, status: WebhookStatus) -> WebhookOut:
        error = status.last_error
        return cls(
            name=status.name,
            url=status.url,
            bots=status.bots,
            events=status.events,
            cursor=status.cursor,
            delivered=status.delivered,
            failedAttempts=status.failed_attempts,
            givenUp=status.given_up,
            lastDeliveredAt=_time(status.last_delivered_at),
            lastError=None
            if error is None
            else WebhookErrorOut(
                message=error.message,
                status=error.status,
                at=format_time(error.at),
                eventId=error.event_id,
            ),
            waitingSince=_time(status.waiting_since),
        )


class WebhookList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "webhooks": [
                        {
                            "name": "crm",
                            "url": "https://crm.example/botsession-events",
                            "bots": [],
                            "events": ["transition.failed", "removed"],
                            "cursor": "1764638400123-0",
                            "delivered": 1520,
                            "failedAttempts": 3,
                            "givenUp": 0,
                            "lastDeliveredAt": "2026-12-02T01:20:00Z",
                            "lastError": {
                                "message": "HTTP 503",
                                "status": 503,
                                "at": "2026-12-02T01:10:02Z",
                                "eventId": "1764637800045-0",
                            },
                            "waitingSince": None,
                        }
                    ],
                }
            ]
        }
    )

    success: Literal[True] = True
    webhooks: list[WebhookOut]


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


@router.get(
    "/webhooks",
    summary="The webhook endpoints and where their deliveries stand, last error included",
    response_model=WebhookList,
    responses=errors(401, 403, 503),
)
async def list_webhooks(request: Request, _token: Reader) -> WebhookList:
    """The endpoints the operator's leader last published (an empty list before it has, or
    without webhooks configured), each with its counts and its last error."""
    runtime: Runtime = request.app.state.runtime
    statuses = await WebhookLedger(runtime.redis).statuses()
    return WebhookList(webhooks=[WebhookOut.of(status) for status in statuses])
