"""Keeping Redis and the database in step with the BotSessions, at a cost in proportion to
what changed rather than to the number of sessions (kopf-free):

- restore_if_lost: one GET per pass (Redis's sentinel); only when Redis lost its data
  (FLUSHALL, a failover to an empty replica) is every live session rewritten from its
  BotSession;
- audit: the full comparison, run rarely: Redis read for every live session, the database's
  versions in one bulk query; what is missing or older is rewritten;
- copy_last_seen: lastSeen copied from Redis to the BotSession and the database for the
  sessions that heartbeated (Redis keeps them in a set), the longest waiting first, each
  API-server write paced by the caller's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sessions.adapters.redis.store import RedisStore, key_of_member, member_of
from sessions.adapters.sql.store import SqlStore
from sessions.domain.logs import event
from sessions.domain.model import (
    InvalidSessionInput,
    Phase,
    SessionKey,
    SessionState,
    StoreUnavailable,
)
from sessions.domain.records import BotSessionRecord, BotSessions

log = logging.getLogger(__name__)
BATCH = 500  # sessions read from Redis per pipeline


@dataclass(frozen=True)
class Copied:
    looked_at: int  # sessions taken from the set (limit: maybe more are due)
    written: int  # BotSessions written


@dataclass
class Healed:
    redis: int = 0
    database: int = 0


def live(records: Sequence[BotSessionRecord]) -> list[BotSessionRecord]:
    return [
        r
        for r in records
        if r.phase is not None and r.phase is not Phase.INACTIVE and not r.deleting
    ]


async def restore_redis(
    botsessions: BotSessions,
    redis: RedisStore,
    records: Sequence[BotSessionRecord],
    ttl: timedelta,
) -> int:
    """Rewrite into Redis every live session it lacks or holds at an older version; returns
    how many. Reads every live session from Redis (pipelined, BATCH at a time)."""
    restored = 0
    candidates = live(records)
    for start in range(0, len(candidates), BATCH):
        chunk = candidates[start : start + BATCH]
        held = await redis.get_many([r.key for r in chunk])
        behind = [
            record
            for record, state in zip(chunk, held, strict=True)
            if state is None or state.version < record.version
        ]
        for current in await still_live(botsessions, behind):
            await redis.write(current.state(ttl), current.ttl(ttl), restore=True)
            restored += 1
    return restored


async def still_live(
    botsessions: BotSessions, records: Sequence[BotSessionRecord]
) -> list[BotSessionRecord]:
    """The BotSessions as the API server has them now, those still live. The index the
    records came from can lag by seconds: restoring Redis from it could bring back the keys
    of a session cleared or expired since, or an older phase. A healthy pass has nothing
    to restore and makes no request here."""
    current = await asyncio.gather(*(botsessions.get(r.key) for r in records))
    return live([r for r in current if r is not None])


async def restore_rows(
    botsessions: BotSessions,
    sql: SqlStore,
    records: Sequence[BotSessionRecord],
    ttl: timedelta,
) -> int:
    """Rewrite into the database every BotSession whose row is missing or older (with the
    transitions its status still lists); the versions come in one bulk query."""
    stored = await sql.versions()
    restored = 0
    for record in records:
        if record.phase is None or record.deleting:
            continue
        row = stored.get(record.key)
        if row is not None and row >= record.version:
            continue
        full = await botsessions.get(record.key)
        if full is not None and full.phase is not None:
            await sql.write(full.state(ttl), full.recent)
            restored += 1
    return restored


async def restore_if_lost(
    botsessions: BotSessions,
    redis: RedisStore,
    records: Callable[[], Sequence[BotSessionRecord]],
    ttl: timedelta,
) -> int | None:
    """One GET while Redis is intact (None). When its sentinel is gone, Redis lost its data:
    every live session is restored (the count returned), then the sentinel settled, unless
    Redis lost its data again meanwhile (the next pass restores again)."""
    if await redis.intact():
        return None
    token = await redis.begin_restore()
    restored = await restore_redis(botsessions, redis, records(), ttl)
    await redis.settle_restore(token)
    report_healed(Healed(redis=restored), "Redis had lost its data")
    return restored


async def audit(
    botsessions: BotSessions,
    redis: RedisStore,
    sql: SqlStore,
    records: Sequence[BotSessionRecord],
    ttl: timedelta,
) -> Healed:
    """The full comparison of every BotSession with Redis and the database."""
    healed = Healed(
        redis=await restore_redis(botsessions, redis, records, ttl),
        database=await restore_rows(botsessions, sql, records, ttl),
    )
    report_healed(healed, "audit")
    return healed


def report_healed(healed: Healed, why: str) -> None:
    if healed.redis or healed.database:
        event(
            log,
            "stores healed from BotSessions",
            logging.WARNING,
            why=why,
            redisRestored=healed.redis,
            rowsRestored=healed.database,
        )


async def copy_last_seen(
    redis: RedisStore,
    botsessions: BotSessions,
    sql: SqlStore,
    find: Callable[[SessionKey], BotSessionRecord | None],
    *,
    drift: timedelta,
    now: datetime,
    limit: int,
    pace: Callable[[], Awaitable[object]],
) -> Copied:
    """Copy lastSeen (and expiresAt) to the BotSession and the database for up to `limit`
    sessions whose first heartbeat not yet copied is older than `drift`, the oldest first.
    `pace` is awaited before each API-server write (the writes' budget); `find` is the
    operator's index.

    A session whose BotSession is gone, ended or already as recent is dropped from the set
    without a write; a heartbeat that comes in during the copy keeps it in the set."""
    due = await redis.unsynced(now - drift, limit)
    keys: list[SessionKey] = []
    done: list[tuple[str, datetime]] = []
    for member, _ in due:
        try:
            keys.append(key_of_member(member))
        except (InvalidSessionInput, ValueError):
            done.append((member, now))  # never ours (heartbeats write valid members only)
    copied: list[SessionState] = []
    try:
        for key, held in zip(keys, await redis.get_many(keys), strict=True):
            record = find(key)
            if held is None or record is None or not live([record]):
                done.append((member_of(key), now))
                continue
            if record.last_seen is None or held.last_seen > record.last_seen:
                await pace()
                await botsessions.touch(record, held.last_seen, held.expires_at)
                copied.append(held)
            done.append((member_of(key), held.last_seen))
    finally:  # what reached the BotSessions reaches the database and leaves the set
        with contextlib.suppress(StoreUnavailable):  # the database: at the next copy
            await sql.write_many(copied)
        await redis.forget_copied(done)
    return Copied(len(due), len(copied))
