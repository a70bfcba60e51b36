"""Stream tickets: a browser's EventSource cannot send the Authorization header, so a page
trades its token for a ticket (POST .../session-events/tickets) and opens the stream with
`?ticket=`. A ticket is random, stands for the token that asked for it (checked again on
every use, so a revoked token's tickets stop working), is kept in Redis (any replica
honours it) by its digest, and lasts TICKET_TTL. Request logs never hold query strings
(api.middleware.RequestLog), so the ticket does not end up in them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from api.auth import ApiToken, Scope, TokenRegistry
from sessions.adapters.redis.store import RedisStore

TICKET_TTL = timedelta(hours=1)


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue(redis: RedisStore, token: ApiToken, now: datetime) -> tuple[str, datetime]:
    ticket = secrets.token_urlsafe(32)
    await redis.put_ticket(_digest(ticket), token.name, TICKET_TTL)
    return ticket, now + TICKET_TTL


async def redeem(redis: RedisStore, registry: TokenRegistry, ticket: str) -> ApiToken | None:
    """The token a ticket stands for, if the ticket is live and the token still allows
    reading; None otherwise."""
    if not 20 <= len(ticket) <= 100:
        return None
    name = await redis.ticket_holder(_digest(ticket))
    token = registry.named(name) if name else None
    return token if token is not None and token.allows(Scope.READ) else None
