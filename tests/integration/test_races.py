"""The lifecycle's races, each with its interleaving injected so it happens every run: the
sweep against a reconnecting bot, the retention against a returning user, removals against
stale writers, writes against a deletion in progress. Real Redis, SQLite and PostgreSQL;
the BotSessions in memory and on the real API server."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.kubernetes.client import KubeClient
from sessions.adapters.redis.store import RedisStore
from sessions.domain.model import (
    HistoryEntry,
    Identity,
    Phase,
    Reason,
    ReportedState,
    SessionDeleting,
    SessionInactive,
    SessionKey,
)
from sessions.domain.records import BotSessionRecord, BotSessions
from sessions.usecases.housekeeping import retire_inactive
from sessions.usecases.service import ClearFlags, SessionService
from sessions.usecases.sweep import sweep
from tests.fakes import Clock, InMemoryBotSessions

pytestmark = pytest.mark.integration

KEY = SessionKey("bot-1", "4915112345678@c.us")
IDENTITY = Identity("4915112345678", "Jane", "session_123")


async def fetch(botsessions: BotSessions, key: SessionKey = KEY) -> BotSessionRecord:
    record = await botsessions.get(key)
    assert record is not None
    return record


async def test_a_bot_that_reconnects_after_the_sweep_removed_it_is_not_expired(
    service: SessionService, botsessions: BotSessions, redis_store: RedisStore, clock: Clock
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    clock.advance(hours=25)
    removed = (await sweep(redis_store, now=clock())).removed
    assert [(s.key, s.why, s.revision) for s in removed] == [(KEY, "expired", 2)]
    # between the sweep's removal and its follow-up, the bot process restarts and reports
    restarted = await service.report(KEY, ReportedState.CONNECTING)
    assert [e.reason for e in restarted.transitions] == [Reason.RESTARTED, Reason.RECONNECTING]
    assert await service.expire_swept(removed) == []
    record = await fetch(botsessions)
    assert (record.phase, record.revision) == (Phase.CONNECTING, 4)
    held = await redis_store.get(KEY)
    assert held is not None and (held.phase, held.revision) == (Phase.CONNECTING, 4)
    connected = await service.report(KEY, ReportedState.CONNECTED)
    assert connected.state.phase is Phase.ACTIVE


async def test_the_sweep_still_expires_what_it_removed(
    service: SessionService, botsessions: BotSessions, redis_store: RedisStore, clock: Clock
) -> None:
    """The same sweep without the reconnect: the session it removed becomes inactive."""
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    clock.advance(hours=25)
    removed = (await sweep(redis_store, now=clock())).removed
    expired = await service.expire_swept(removed)
    assert [(e.revision, e.reason) for e in expired] == [(3, Reason.EXPIRED)]
    assert (await fetch(botsessions)).phase is Phase.INACTIVE
    assert await redis_store.get(KEY) is None


async def test_a_heartbeat_after_the_sweep_removed_a_session_does_not_bring_it_back(
    service: SessionService, redis_store: RedisStore, clock: Clock
) -> None:
    """The BotSession still says active (the sweep's follow-up has not run): the heartbeat
    must not rewrite the keys the sweep has just removed."""
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    clock.advance(hours=25)
    assert len((await sweep(redis_store, now=clock())).removed) == 1
    with pytest.raises(SessionInactive):
        await service.heartbeat(KEY)
    assert await redis_store.get(KEY) is None
    assert await redis_store.client.exists(f"session:status:{KEY}") == 0


async def test_a_stale_writer_cannot_undo_a_clear(
    service: SessionService, redis_store: RedisStore
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    stale = await redis_store.get(KEY)
    assert stale is not None and stale.revision == 2
    await service.clear(KEY.bot_id, KEY.user_id, ClearFlags(session=False, database=False), "t")
    # a request that read revision 2 before the clear writes it back after
    assert not await redis_store.write(stale, timedelta(hours=24))
    assert await redis_store.get(KEY) is None
    with pytest.raises(SessionInactive):
        await service.heartbeat(KEY)
    assert await redis_store.get(KEY) is None


class ReconnectsBeforeTheDelete:
    """The BotSessions of the test, where the user reports again right between the
    retention's last check and its delete."""

    def __init__(self, inner: BotSessions, service: SessionService) -> None:
        self.inner = inner
        self.service = service

    async def get(self, key: SessionKey) -> BotSessionRecord | None:
        return await self.inner.get(key)

    async def delete_unchanged(self, record: BotSessionRecord) -> bool:
        await self.service.report(record.key, ReportedState.CONNECTING)
        return await self.inner.delete_unchanged(record)


async def test_retention_never_deletes_a_session_that_came_back(
    service: SessionService, botsessions: BotSessions, clock: Clock
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await service.report(KEY, ReportedState.DISCONNECTED)
    listed = await fetch(botsessions)  # the housekeeping's index, read before the sweep
    clock.advance(days=8)
    # 1. the user is back before the retention runs: its list is stale
    await service.report(KEY, ReportedState.CONNECTING)
    assert (
        await retire_inactive(botsessions, [listed], service.settings.inactive_retention, clock())
        == []
    )
    assert (await fetch(botsessions)).phase is Phase.CONNECTING
    # 2. inactive again and past the retention; the user comes back between the check and
    # the delete: the delete's preconditions refuse
    await service.report(KEY, ReportedState.FAILED)
    await service.report(KEY, ReportedState.CONNECTING)
    await service.report(KEY, ReportedState.CONNECTED)
    await service.report(KEY, ReportedState.DISCONNECTED)
    clock.advance(days=8)
    racing = ReconnectsBeforeTheDelete(botsessions, service)
    retention = service.settings.inactive_retention
    retired = await retire_inactive(racing, [await fetch(botsessions)], retention, clock())  # type: ignore[arg-type]
    assert retired == []
    assert (await fetch(botsessions)).phase is Phase.CONNECTING


async def test_retention_deletes_a_session_inactive_past_it(
    service: SessionService, botsessions: BotSessions, clock: Clock
) -> None:
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    await service.report(KEY, ReportedState.DISCONNECTED)
    clock.advance(days=8)
    assert await retire_inactive(
        botsessions, [await fetch(botsessions)], service.settings.inactive_retention, clock()
    ) == [KEY]
    assert await botsessions.get(KEY) is None


async def hold_deletion(botsessions: BotSessions, kube_client: KubeClient | None) -> None:
    """Delete the BotSession and keep it in deletion: a finalizer nobody removes (on the
    API server), or a pending delete (in memory)."""
    if isinstance(botsessions, InMemoryBotSessions):
        botsessions.pending_deletes.add(KEY)
    else:
        assert isinstance(botsessions, KubeBotSessions) and kube_client is not None
        record = await fetch(botsessions)
        await botsessions.objects.patch(
            record.name,
            {"metadata": {"finalizers": ["test.botsession.dev/hold"]}},
            "application/merge-patch+json",
        )
    await botsessions.delete(KEY, timedelta(0))
    assert (await fetch(botsessions)).deleting


async def release_deletion(botsessions: BotSessions, kube_client: KubeClient | None) -> None:
    if isinstance(botsessions, KubeBotSessions) and kube_client is not None:
        await botsessions.objects.patch(
            (await fetch(botsessions)).name,
            {"metadata": {"finalizers": None}},
            "application/merge-patch+json",
        )


async def test_a_botsession_being_deleted_takes_no_more_transitions(
    service: SessionService,
    botsessions: BotSessions,
    redis_store: RedisStore,
    request: pytest.FixtureRequest,
) -> None:
    kube_client = (
        request.getfixturevalue("kube_client") if isinstance(botsessions, KubeBotSessions) else None
    )
    await service.report(KEY, ReportedState.CONNECTED, identity=IDENTITY)
    before = await fetch(botsessions)
    await hold_deletion(botsessions, kube_client)
    try:
        with pytest.raises(SessionDeleting):
            await service.report(KEY, ReportedState.DISCONNECTED)
        # a writer that read the object before its deletion began loses its compare-and-swap,
        # so the finalizer may take revision + 1 for the ended row without a collision
        entry = HistoryEntry(
            KEY, 3, Phase.ACTIVE, Phase.INACTIVE, Reason.DISCONNECTED, "t", before.created_at
        )
        with pytest.raises(SessionDeleting):
            await botsessions.set_phase(
                replace(before, deleting=False), entry, before.created_at, before.created_at
            )
        assert (await fetch(botsessions)).revision == 2
        assert await service.make_inactive(KEY, Reason.CLEARED, "t") == []
    finally:
        await release_deletion(botsessions, kube_client)
