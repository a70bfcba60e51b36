"""The operator's self-healing (sessions.usecases.housekeeping.resync) on the real API server, Redis
and the database. It works from kopf's index, which can lag the API server by seconds."""

from __future__ import annotations

import pytest

from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.redis.store import RedisStore
from sessions.adapters.sql.store import SqlStore
from sessions.domain.model import Identity, Phase, ReportedState, SessionKey
from sessions.domain.settings import load_settings
from sessions.usecases.housekeeping import resync
from sessions.usecases.service import ClearFlags, SessionService

pytestmark = pytest.mark.integration

IDENTITY = Identity("4915112345678", "Jane", "session_123")
REDIS_ONLY = ClearFlags(session=False, redis=True, database=False)


@pytest.fixture
def service(
    kube_botsessions: KubeBotSessions, redis_store: RedisStore, sql_store: SqlStore
) -> SessionService:
    return SessionService(
        kube_botsessions, redis_store, sql_store, load_settings(session_ttl="24h")
    )


async def test_a_lagging_index_never_brings_back_a_cleared_sessions_keys(
    service: SessionService, kube_botsessions: KubeBotSessions
) -> None:
    key = SessionKey("bot-1", "cleared")
    await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    stale = await kube_botsessions.get(key)  # active: what the index still holds
    assert stale is not None and stale.phase is Phase.ACTIVE
    await service.clear(key.bot_id, key.user_id, REDIS_ONLY, actor="test")
    assert await service.redis.client.keys("session:*") == []

    report = await resync(kube_botsessions, service.redis, service.sql, [stale], service.settings)

    assert report.redis_restored == 0
    assert await service.redis.client.keys("session:*") == []


async def test_a_session_redis_lost_is_restored_from_the_current_botsession(
    service: SessionService, kube_botsessions: KubeBotSessions
) -> None:
    key = SessionKey("bot-1", "lost")
    await service.report(key, ReportedState.CONNECTING, identity=IDENTITY)
    stale = await kube_botsessions.get(key)  # connecting: the index has not seen the connect
    await service.report(key, ReportedState.CONNECTED, identity=IDENTITY)
    await service.redis.client.flushall()

    report = await resync(
        kube_botsessions, service.redis, service.sql, [stale] if stale else [], service.settings
    )

    restored = await service.redis.get(key)
    assert report.redis_restored == 1
    assert restored is not None and (restored.phase, restored.revision) == (Phase.ACTIVE, 2)
