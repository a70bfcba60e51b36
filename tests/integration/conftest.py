"""Fixtures shared by the integration tests: the use-cases on real stores with the
BotSessions in memory or on the real API server, and the operator stack (operator_stack)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devstack.controlplane import ControlPlane
from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.redis.store import RedisStore
from sessions.adapters.sql.store import SqlStore
from sessions.domain.records import BotSessions
from sessions.domain.settings import load_settings
from sessions.usecases.service import SessionService
from tests.fakes import Clock, InMemoryBotSessions
from tests.integration.operator_stack import Stack, open_stack


@pytest.fixture
async def stack(controlplane: ControlPlane, namespace: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(controlplane, namespace, tmp_path) as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "kubernetes"])
def botsessions(request: pytest.FixtureRequest) -> BotSessions:
    """Every use-case runs on the in-memory BotSessions and on the real API server."""
    if request.param == "memory":
        return InMemoryBotSessions()
    kube: KubeBotSessions = request.getfixturevalue("kube_botsessions")
    kube.poll_interval = 0.05
    return kube


@pytest.fixture
def memory_botsessions() -> InMemoryBotSessions:
    """For the failure cases that the fake can inject (the real ones are in test_resources)."""
    return InMemoryBotSessions()


@pytest.fixture
def memory_service(
    memory_botsessions: InMemoryBotSessions,
    redis_store: RedisStore,
    sql_store: SqlStore,
    clock: Clock,
) -> SessionService:
    return SessionService(
        memory_botsessions,
        redis_store,
        sql_store,
        load_settings(session_ttl="24h", clear_wait="1s"),
        clock,
    )


@pytest.fixture
async def service(
    botsessions: BotSessions, redis_store: RedisStore, sql_store: SqlStore, clock: Clock
) -> SessionService:
    return SessionService(
        botsessions,
        redis_store,
        sql_store,
        load_settings(session_ttl="24h", clear_wait="1s"),
        clock,
    )
