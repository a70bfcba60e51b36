"""The SQL store on SQLite and on a real PostgreSQL: every test runs against both."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from sessions.adapters.sql import schema as sql_schema
from sessions.adapters.sql.migrate import _config, head_revision, is_current, upgrade
from sessions.adapters.sql.store import ClearAudit, SqlStore, SweepRun, create_engine
from sessions.domain.model import HistoryEntry, Phase, Reason, SessionKey, StoreUnavailable, Version
from tests.conftest import make_state

pytestmark = pytest.mark.integration

T0 = datetime(2031, 5, 17, 10, 30, 0, tzinfo=UTC)
KEY = SessionKey("bot-1", "user-1")


def entry(revision: int, frm: Phase | None, to: Phase, reason: Reason) -> HistoryEntry:
    return HistoryEntry(KEY, revision, frm, to, reason, "test", T0 + timedelta(seconds=revision))


async def test_migrations_from_empty_and_rerun_on_current(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert not await is_current(engine)
        assert await upgrade(engine) == (None, head_revision())
        assert await is_current(engine)
        assert await upgrade(engine) == (head_revision(), head_revision())

        def tables(connection: sa.Connection) -> set[str]:
            return set(sa.inspect(connection).get_table_names())

        async with engine.connect() as connection:
            names = await connection.run_sync(tables)
        assert names == set(sql_schema.metadata.tables) | {"alembic_version"}
    finally:
        await engine.dispose()


async def test_concurrent_migrations_run_once(database_url: str) -> None:
    engines = [create_engine(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(upgrade(e) for e in engines))
        assert sorted(results, key=str) == sorted(
            [(None, head_revision())] + [(head_revision(), head_revision())] * 2, key=str
        )
    finally:
        for engine in engines:
            await engine.dispose()


async def test_round_trip(sql_store: SqlStore) -> None:
    state = make_state(last_seen=T0, phase=Phase.ACTIVE, revision=2, reason=Reason.CONNECTED)
    await sql_store.write(state)
    assert await sql_store.get(KEY) == state
    assert await sql_store.get(SessionKey("bot-1", "nobody")) is None


async def test_an_older_revision_does_not_overwrite(sql_store: SqlStore) -> None:
    await sql_store.write(make_state(last_seen=T0, phase=Phase.ACTIVE, revision=3))
    await sql_store.write(make_state(last_seen=T0, phase=Phase.CONNECTING, revision=2))
    stored = await sql_store.get(KEY)
    assert stored is not None and (stored.phase, stored.revision) == (Phase.ACTIVE, 3)


async def test_last_seen_never_moves_backwards(sql_store: SqlStore) -> None:
    await sql_store.write(make_state(last_seen=T0 + timedelta(minutes=5), revision=1))
    await sql_store.write(make_state(last_seen=T0, revision=1))
    stored = await sql_store.get(KEY)
    assert stored is not None and stored.last_seen == T0 + timedelta(minutes=5)


async def test_write_many_applies_the_same_rules_row_by_row(sql_store: SqlStore) -> None:
    newer, older, fresh = (SessionKey("bot-1", user) for user in ("newer", "older", "fresh"))
    await sql_store.write(make_state(user="newer", last_seen=T0, revision=2))
    await sql_store.write(make_state(user="older", last_seen=T0, revision=5))
    later = T0 + timedelta(minutes=2)
    await sql_store.write_many(
        [
            make_state(user="newer", last_seen=later, revision=2),
            make_state(user="older", last_seen=later, phase=Phase.CONNECTING, revision=4),
            make_state(user="fresh", last_seen=later, revision=1),
        ]
    )
    got_newer, got_older = await sql_store.get(newer), await sql_store.get(older)
    assert got_newer is not None and got_newer.last_seen == later
    assert got_older is not None and (got_older.revision, got_older.last_seen) == (5, T0)
    assert await sql_store.get(fresh) == make_state(user="fresh", last_seen=later, revision=1)
    await sql_store.write_many([])


async def test_the_same_revision_twice_writes_one_history_row(sql_store: SqlStore) -> None:
    state = make_state(last_seen=T0, phase=Phase.CONNECTING, revision=1)
    first = entry(1, None, Phase.CONNECTING, Reason.CREATED)
    for _replay in range(3):
        await sql_store.write(state, [first])
    assert await sql_store.history(KEY) == [first]


async def test_history_is_newest_first(sql_store: SqlStore) -> None:
    entries = [
        entry(1, None, Phase.CONNECTING, Reason.CREATED),
        entry(2, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED),
        entry(3, Phase.ACTIVE, Phase.INACTIVE, Reason.LOGGED_OUT),
    ]
    await sql_store.write(make_state(phase=Phase.INACTIVE, revision=3), entries)
    assert await sql_store.history(KEY, limit=2) == entries[::-1][:2]


async def test_list_bot_filters_and_paginates(sql_store: SqlStore) -> None:
    for i in range(7):
        phase = Phase.ACTIVE if i % 2 else Phase.INACTIVE
        await sql_store.write(
            make_state(user=f"u{i}", phase=phase, last_seen=T0 + timedelta(minutes=i))
        )
    await sql_store.write(make_state(bot="other", user="x", last_seen=T0))
    page, total = await sql_store.list_bot("bot-1", limit=3, offset=0)
    assert total == 7
    assert [s.key.user_id for s in page] == ["u6", "u5", "u4"]
    active, total_active = await sql_store.list_bot("bot-1", Phase.ACTIVE, limit=2, offset=2)
    assert total_active == 3 and [s.key.user_id for s in active] == ["u1"]
    most_recent = await sql_store.most_recent("bot-1")
    assert most_recent is not None and most_recent.key.user_id == "u6"


async def test_delete_removes_row_and_history(sql_store: SqlStore) -> None:
    await sql_store.write(
        make_state(last_seen=T0),
        [
            entry(1, None, Phase.CONNECTING, Reason.CREATED),
            entry(2, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED),
        ],
    )
    await sql_store.write(make_state(user="other", last_seen=T0))
    assert await sql_store.delete(KEY) == 3
    assert await sql_store.delete(KEY) == 0
    assert await sql_store.get(SessionKey("bot-1", "other")) is not None


async def test_cleanup_runs_and_clear_audits(sql_store: SqlStore) -> None:
    run = SweepRun(T0, T0 + timedelta(seconds=1), 5, 3, 2, True, None, "pod-a")
    failed = SweepRun(T0 + timedelta(hours=1), None, 0, 0, 0, False, "redis down", "pod-a")
    await sql_store.record_cleanup_run(run)
    await sql_store.record_cleanup_run(failed)
    assert await sql_store.cleanup_runs() == [failed, run]
    audit = ClearAudit("frontend", "bot-1", "abc", "session", (True, False, True), 1, 0, 4)
    await sql_store.record_clear(audit)
    assert await sql_store.clear_audits("bot-1") == [audit]


async def test_unreachable_database_raises_store_unavailable() -> None:
    store = SqlStore(create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none"))
    with pytest.raises(StoreUnavailable, match="database is unavailable"):
        await store.get(KEY)
    await store.close()


async def test_a_new_incarnation_replaces_the_row_and_keeps_both_histories(
    sql_store: SqlStore,
) -> None:
    old = replace(make_state(phase=Phase.INACTIVE, revision=9), incarnation=1000)
    await sql_store.write(
        old,
        [replace(entry(9, Phase.ACTIVE, Phase.INACTIVE, Reason.DISCONNECTED), incarnation=1000)],
    )
    new = replace(make_state(phase=Phase.CONNECTING, revision=1), incarnation=2000)
    await sql_store.write(
        new, [replace(entry(1, None, Phase.CONNECTING, Reason.CREATED), incarnation=2000)]
    )
    row = await sql_store.get(new.key)
    assert row is not None and (row.phase, row.version) == (Phase.CONNECTING, Version(2000, 1))
    history = await sql_store.history(new.key)
    assert [(e.incarnation, e.revision) for e in history] == [(2000, 1), (1000, 9)]
    # a late write of the last incarnation changes nothing
    await sql_store.write(replace(old, revision=10))
    row = await sql_store.get(new.key)
    assert row is not None and row.version == Version(2000, 1)
    assert (await sql_store.versions())[new.key] == Version(2000, 1)
    # the finalizer of the last incarnation does not mark the new one ended
    assert not await sql_store.mark_ended(new.key, Reason.CLEARED, Version(1000, 10), T0, "op")
    assert await sql_store.mark_ended(new.key, Reason.CLEARED, Version(2000, 2), T0, "op")
    row = await sql_store.get(new.key)
    assert row is not None and (row.phase, row.version) == (Phase.INACTIVE, Version(2000, 2))


async def test_rows_from_before_incarnations_are_incarnation_0_after_the_migration(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda c: command.upgrade(_config(c), "0001"))
            await connection.execute(
                sa.text(
                    "INSERT INTO session_history (bot_id, user_id, revision, to_phase, reason,"
                    " actor, at) VALUES ('bot-1', 'user-1', 1, 'connecting', 'Created', 'api',"
                    " :at)"
                ),
                {"at": T0.replace(tzinfo=None)},
            )
        assert await upgrade(engine) == ("0001", head_revision())
        store = SqlStore(engine)
        old = await store.history(KEY)
        assert [(e.incarnation, e.revision) for e in old] == [(0, 1)]
        await store.write(
            make_state(revision=2), [entry(2, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED)]
        )
        await store.write(
            make_state(revision=2), [entry(2, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED)]
        )
        assert [e.revision for e in await store.history(KEY)] == [2, 1]
    finally:
        await engine.dispose()
