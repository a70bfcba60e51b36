"""The hot copy of sessions in Redis: the contract keys, the project's indexes, Lua scripts.

Contract keys (other services may read them; names and fields are fixed by the requirements):
  session:<botId>:<userId>         hash: status, lastSeen, phoneNumber, displayName, sessionId,
                                   createdAt, expiresAt (+ revision, reason, ttlSeconds,
                                   incarnation, heartbeatTimeoutSeconds)
  session:status:<botId>:<userId>  string: the status, expiring with the session
  session:expiry:<botId>:<userId>  string: expiresAt, expiring with the session
Project keys, under a configurable prefix (BOTSESSION_REDIS_KEY_PREFIX, default botsession:,
so two installations can share one Redis), outside the session: prefix, so a scan of
session:* sees contract keys only:
  <prefix>expiry                   zset: member <botId>:<userId>, score = when it is due (ms)
  <prefix>bot:<botId>              zset: member <userId>, score = lastSeen (ms)
  <prefix>removed:<botId>:<userId> string "<incarnation>:<revision>": the newest version a
                                   removal took away (a tombstone, kept tombstone_ttl); writes
                                   at or below it are ignored, so removals stick
  <prefix>lock:<name>              string: a lease's holder (sessions.adapters.redis.lease)
  <prefix>sweep:last               string: when the last sweep ran (epoch ms)
  <prefix>unsynced                 zset: member <botId>:<userId>, score = the first heartbeat
                                   (ms) whose lastSeen the operator has not yet copied to
                                   the BotSession (oldest first: the most drifted)
  <prefix>heartbeat-deadline       zset: member <botId>:<userId>, score = when its heartbeat
                                   is lost (ms): active sessions that heartbeat, only those
  <prefix>api:alive                string: when an API replica last said it serves (ms)
  <prefix>heartbeat:hold-until     string: no heartbeat is taken for lost before this (ms),
                                   set after a time without any API replica
  <prefix>sync-wanted              hash: <botId>:<userId> -> "<incarnation>:<revision>",
                                   written here and not yet synced by the operator
  <prefix>ticket:<sha256>          string: the token name a stream ticket stands for
  <prefix>events                   stream: the session events, one entry per transition or
                                   removal (lua/_common.lua emit), kept events_retention
  <prefix>emitted:<botId>:<userId> string "<incarnation>:<revision>": the newest version
                                   emitted, so each event goes out once
  <prefix>sentinel                 string "intact:<token>" while Redis holds every session
                                   the operator restored or saw written; gone after a FLUSHALL
                                   or a failover to an empty replica ("healing:<token>" while
                                   a restore runs), so losing the data is noticed in one GET
RedisKeys is the one table of them all.

Every multi-key change is one Lua script (lua/ beside this module), so no reader sees half
a write.
No method here scans the keyspace.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import resources
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sessions.adapters.guard import GuardObserver, StoreGuard
from sessions.adapters.redis.batching import ReadBatcher
from sessions.adapters.redis.lease import RedisLease
from sessions.domain.model import (
    HistoryEntry,
    Identity,
    Phase,
    Reason,
    SessionKey,
    SessionState,
    StoreUnavailable,
    Version,
    parse_time,
    to_millis,
)

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 100
DEFAULT_PREFIX = "botsession:"
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class RedisKeys:
    """Every key the project reads or writes in Redis."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not _PREFIX.fullmatch(prefix) or prefix.startswith("session:"):
            raise ValueError("a key prefix is 1-64 of letters, digits and _ . : - (not session:)")
        self.prefix = prefix
        self.expiry_index = f"{prefix}expiry"
        self.sweep_mark = f"{prefix}sweep:last"
        self.unsynced = f"{prefix}unsynced"
        self.sentinel = f"{prefix}sentinel"
        self.heartbeat_deadlines = f"{prefix}heartbeat-deadline"
        self.api_beacon = f"{prefix}api:alive"
        self.heartbeat_hold = f"{prefix}heartbeat:hold-until"
        self.events = f"{prefix}events"
        self.sync_wanted = f"{prefix}sync-wanted"
        self.webhooks = f"{prefix}webhooks"  # name -> the endpoint as configured (shown)

    # the contract's keys: fixed by the requirements, never prefixed
    @staticmethod
    def hash(key: SessionKey) -> str:
        return f"session:{key.bot_id}:{key.user_id}"

    @staticmethod
    def status(key: SessionKey) -> str:
        return f"session:status:{key.bot_id}:{key.user_id}"

    @staticmethod
    def expiry(key: SessionKey) -> str:
        return f"session:expiry:{key.bot_id}:{key.user_id}"

    # the project's own keys
    def bot_index(self, bot_id: str) -> str:
        return f"{self.prefix}bot:{bot_id}"

    def tombstone(self, key: SessionKey) -> str:
        return f"{self.prefix}removed:{key.bot_id}:{key.user_id}"

    def lease(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def webhook(self, name: str) -> str:
        """An endpoint's deliveries: cursor, counts, last error (adapters.redis.webhooks)."""
        return f"{self.prefix}webhook:{name}"


EXPIRY_INDEX = RedisKeys().expiry_index  # with the default prefix
hash_key = RedisKeys.hash


def member_of(key: SessionKey) -> str:
    return f"{key.bot_id}:{key.user_id}"


def key_of_member(member: str) -> SessionKey:
    bot_id, user_id = member.split(":", 1)
    return SessionKey(bot_id, user_id)


def _load_script(name: str, keys: RedisKeys) -> str:
    folder = resources.files("sessions.adapters.redis") / "lua"
    text = (folder / "_common.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()
    return text.replace("__PREFIX__", keys.prefix)  # RedisKeys checked it holds no quote


@dataclass(frozen=True)
class Heartbeat:
    phase: Phase
    last_seen: datetime
    expires_at: datetime
    revision: int


MALFORMED = "malformed"  # the sweep script's status for an index member it could not read


class SweptSession(NamedTuple):
    """A session the sweep removed: `why` is inactive, expired or gone; or malformed, an
    index member that names no session (not <botId>:<userId>) whose entry was dropped. The
    claim of lost heartbeats (RedisStore.claim_heartbeat_lost) answers in the same shape.

    It holds the sweep script's reply as Redis sent it (only strings); `key`, `why`, `phase`,
    `last_seen` and `revision` are worked out when read. A sweep that removes 100,000
    sessions thus creates no SessionKey or datetime that its caller never reads (the
    operator reads key and last_seen of the expired ones only), and a value that does not
    parse fails where it is read, not in the middle of a batch Redis has already removed.
    """

    member: str  # <botId>:<userId>
    status: str  # the phase Redis held; "" when the hash was already gone; MALFORMED
    last_seen_text: str  # lastSeen as stored, "" when gone
    revision_text: str  # "" when gone
    incarnation_text: str  # "" when gone or written before incarnations

    @property
    def why(self) -> str:
        status = self.status
        if not status:
            return "gone"
        return status if status in ("inactive", MALFORMED) else "expired"

    @property
    def key(self) -> SessionKey:
        return key_of_member(self.member)

    @property
    def phase(self) -> Phase | None:
        return Phase(self.status) if self.status else None

    @property
    def last_seen(self) -> datetime | None:
        return parse_time(self.last_seen_text) if self.last_seen_text else None

    @property
    def revision(self) -> int | None:
        return int(self.revision_text) if self.revision_text else None

    @property
    def version(self) -> Version | None:
        """The version removed; None when Redis had already dropped the hash."""
        if not self.revision_text:
            return None
        return Version(int(self.incarnation_text or 0), int(self.revision_text))


def _swept(rows: list[str]) -> list[SweptSession]:
    """The sweep script's flat reply (member, status, lastSeen, revision, incarnation, ...)
    as sessions."""
    each = iter(rows)
    return list(map(SweptSession._make, zip(each, each, each, each, each, strict=True)))


def seconds_text(ttl: timedelta) -> str:
    """A TTL in seconds as plain decimal text: 1209600, or 0.4 (never 1.2096e+06)."""
    return format(ttl.total_seconds(), "f").rstrip("0").rstrip(".")


def connect(
    url: str, *, retries: int = 5, timeout: timedelta = timedelta(seconds=5)
) -> aioredis.Redis:
    """A client for redis://, rediss://, unix:// or redis+sentinel://h1:p,h2:p/service/db.

    Connection loss and timeouts are retried with exponential backoff and jitter.
    """
    retry = Retry(
        ExponentialWithJitterBackoff(base=0.05, cap=2.0),
        retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError, ReadOnlyError),
    )
    options: dict[str, Any] = {
        "retry": retry,
        "socket_timeout": timeout.total_seconds(),
        "socket_connect_timeout": timeout.total_seconds(),
        "decode_responses": True,
        "health_check_interval": 30,
    }
    if not url.startswith("redis+sentinel://"):
        # callers beyond the pool's size wait for a connection (within their time budget)
        # instead of failing with "Too many connections" (redis-py's default pool)
        pool = BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=timeout.total_seconds(), **options
        )
        return aioredis.Redis.from_pool(pool)
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("redis+sentinel:// URL needs a service name: .../<service>[/<db>]")
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    password = unquote(parts.password) if parts.password else None
    hosts = []
    for host in parts.netloc.rsplit("@", 1)[-1].split(","):
        name, _, port = host.partition(":")
        hosts.append((name, int(port or 26379)))
    query = parse_qs(parts.query)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        sentinel_kwargs={"password": query.get("sentinel_password", [None])[0]},
        password=password,
        db=db,
        **options,
    )
    client: aioredis.Redis = sentinel.master_for(service)
    return client


class RedisStore:
    """Session state in Redis. Every method raises StoreUnavailable when Redis is down."""

    def __init__(
        self,
        client: aioredis.Redis,
        tombstone_ttl: timedelta = timedelta(hours=1),
        *,
        budget: timedelta = timedelta(milliseconds=500),
        probe_interval: timedelta = timedelta(seconds=1),
        observer: GuardObserver | None = None,
        keys: RedisKeys | None = None,
        events_retention: timedelta = timedelta(hours=24),
    ) -> None:
        self.client = client
        self.keys = keys or RedisKeys()
        self.tombstone_ms = int(tombstone_ttl.total_seconds() * 1000)
        self.events_ms = _millis(events_retention)
        self.guard = StoreGuard(
            "redis",
            budget.total_seconds(),
            client.ping,
            probe_interval=probe_interval.total_seconds(),
            observer=observer,
        )
        self.reads = ReadBatcher(client)
        self._write = client.register_script(_load_script("write_state", self.keys))
        self._heartbeat = client.register_script(_load_script("heartbeat", self.keys))
        self._remove = client.register_script(_load_script("remove", self.keys))
        self._sweep = client.register_script(_load_script("sweep", self.keys))
        self._most_recent = client.register_script(_load_script("most_recent", self.keys))
        self._copied = client.register_script(_load_script("copied", self.keys))
        self._settle = client.register_script(_load_script("sentinel", self.keys))
        self._heartbeat_lost = client.register_script(_load_script("heartbeat_lost", self.keys))
        self._api_beacon = client.register_script(_load_script("api_beacon", self.keys))
        self._emit = client.register_script(_load_script("emit", self.keys))
        self._sync_done = client.register_script(_load_script("sync_done", self.keys))

    async def _call(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """One operation within the store's time budget (sessions.adapters.guard)."""
        return await self.guard.call(what, lambda: self._mapped(what, op))

    guarded = _call  # for the store's companions in this package (webhooks)

    def script(self, name: str) -> AsyncScript:
        """A script of lua/ (with the shared helpers and this store's key prefix)."""
        return self.client.register_script(_load_script(name, self.keys))

    @staticmethod
    async def _mapped(what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await op()
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError) as exc:
            log.warning("redis %s failed: %s", what, exc)
            raise StoreUnavailable("redis", f"{what}: {exc}") from exc
        except RedisError as exc:
            log.error("redis %s failed: %s", what, exc)
            raise StoreUnavailable("redis", f"{what}: {exc}") from exc

    async def write(
        self,
        state: SessionState,
        ttl: timedelta,
        history: Sequence[HistoryEntry] = (),
        *,
        restore: bool = False,
    ) -> bool:
        """Write a state; False (ignored) when Redis holds a newer version, or a removal
        took away this version or a newer one (the tombstone). In the same step, the
        session's events for `history` (its transitions, those not emitted yet), and a new
        version is noted as wanting the operator's sync, unless this is a `restore` of what
        the BotSession already says."""
        ident = state.identity
        args: list[str | int] = [
            member_of(state.key),
            state.revision,
            state.phase.value,
            state.reason.value if state.reason else "",
            to_millis(state.last_seen),
            _millis(ttl),
            to_millis(state.created_at),
            ident.phone_number,
            ident.display_name,
            ident.session_id,
            seconds_text(ttl),
            state.incarnation,
            "" if state.heartbeat_timeout_seconds is None else state.heartbeat_timeout_seconds,
            self.events_ms,
            "0" if restore else "1",
            *transition_events(history),
        ]
        written, _stored = await self._call("write", lambda: self._write(args=args))
        return bool(written)

    async def put_ticket(self, digest: str, holder: str, ttl: timedelta) -> None:
        key = f"{self.keys.prefix}ticket:{digest}"
        await self._call("put_ticket", lambda: self.client.set(key, holder, px=_millis(ttl)))

    async def ticket_holder(self, digest: str) -> str | None:
        key = f"{self.keys.prefix}ticket:{digest}"
        holder: str | None = await self._call("ticket", lambda: self.client.get(key))
        return holder

    async def sync_wanted(self, limit: int) -> list[SessionKey]:
        """Some sessions written at a version the operator has not marked synced (one HSCAN
        page of about `limit`)."""
        _, found = await self._call(
            "sync_wanted", lambda: self.client.hscan(self.keys.sync_wanted, 0, count=limit)
        )
        return [key_of_member(member) for member in found]

    async def sync_done(self, key: SessionKey, version: Version | None) -> None:
        """The operator synced `key` up to `version` (None: forget it whatever it was)."""
        args: list[str | int] = [member_of(key), "", ""]
        if version is not None:
            args[1:] = [version.incarnation, version.revision]
        await self._call("sync_done", lambda: self._sync_done(args=args))

    async def emit(self, key: SessionKey, events: Sequence[str | int]) -> int:
        """Emit events (transition_events, removal_event) without writing the state;
        returns how many were new."""
        if not events:
            return 0
        args: list[str | int] = [member_of(key), self.events_ms, *events]
        added: int = await self._call("emit", lambda: self._emit(args=args))
        return added

    async def events(self, after: str, count: int) -> list[SessionEvent]:
        """Up to `count` events after the id `after` ("0": from the oldest kept), in order."""
        rows = await self._call(
            "events", lambda: self.client.xrange(self.keys.events, f"({after}", "+", count)
        )
        return [SessionEvent.of(entry_id, fields) for entry_id, fields in rows]

    async def wait_for_events(self, after: str, block: timedelta, count: int) -> list[SessionEvent]:
        """The events after `after`, waiting up to `block` for one to come (XREAD BLOCK, so
        outside the store's time budget, bounded by block + budget instead)."""
        wait = self.guard.budget + block.total_seconds()

        async def op() -> Any:
            async with asyncio.timeout(wait):
                return await self.client.xread({self.keys.events: after}, count, _millis(block))

        try:
            reply = await self._mapped("wait_for_events", op)
        except TimeoutError:
            raise StoreUnavailable(
                "redis", f"wait_for_events: no answer within {wait:g} s"
            ) from None
        rows = reply[0][1] if reply else []
        return [SessionEvent.of(entry_id, fields) for entry_id, fields in rows]

    async def event_kept(self, event_id: str) -> bool:
        rows = await self._call(
            "event_kept", lambda: self.client.xrange(self.keys.events, event_id, event_id, 1)
        )
        return bool(rows)

    async def events_span(self) -> tuple[str | None, str | None]:
        """The ids of the oldest and the newest event kept; None when there is none."""
        first, last = await self._call(
            "events_span",
            lambda: asyncio.gather(
                self.client.xrange(self.keys.events, "-", "+", 1),
                self.client.xrevrange(self.keys.events, "+", "-", 1),
            ),
        )
        return (first[0][0] if first else None), (last[0][0] if last else None)

    async def heartbeat(
        self,
        key: SessionKey,
        now: datetime,
        timeout: timedelta = timedelta(0),
        *,
        arm: bool = True,
    ) -> Heartbeat | None:
        """Refresh a live session's lastSeen and expiry; None when Redis does not hold it.
        An active one's heartbeat deadline moves to now + its own heartbeat timeout, else
        `timeout` (0: none); with arm=False (a report of the current phase, not a heartbeat)
        only a deadline a heartbeat set moves."""
        args: list[str | int] = [member_of(key), to_millis(now), _millis(timeout), int(arm)]
        result = await self._call("heartbeat", lambda: self._heartbeat(args=args))
        if result is None:
            return None
        status, last_seen, expires_at, revision = result
        return Heartbeat(
            Phase(status), parse_time(last_seen), parse_time(expires_at), int(revision)
        )

    async def remove(self, key: SessionKey, floor: Version | None = None) -> int:
        """Remove the contract keys and index entries; returns how many keys were deleted.
        The tombstone holds the removed hash's version, or `floor` when that is newer (a
        caller that knows the BotSession has moved past what Redis held)."""
        args: list[str | int] = [member_of(key), self.tombstone_ms]
        if floor is not None:
            args += [floor.incarnation, floor.revision]
        deleted: int = await self._call("remove", lambda: self._remove(args=args))
        return deleted

    async def get(self, key: SessionKey) -> SessionState | None:
        fields: dict[str, str] = await self._call(
            "get", lambda: self.reads.call("HGETALL", self.keys.hash(key))
        )
        return _state_from_hash(key, fields)

    async def get_many(self, keys: Sequence[SessionKey]) -> list[SessionState | None]:
        async def op() -> list[dict[str, str]]:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(self.keys.hash(key))
                rows: list[dict[str, str]] = await pipe.execute()
                return rows

        rows = await self._call("get_many", op)
        return [_state_from_hash(key, row) for key, row in zip(keys, rows, strict=True)]

    async def most_recent(self, bot_id: str) -> SessionState | None:
        """The bot's most recently seen session Redis holds (one script call)."""

        async def op() -> Any:
            try:  # batched with the other reads; the script object loads it when Redis lacks it
                return await self.reads.call("EVALSHA", self._most_recent.sha, 0, bot_id)
            except NoScriptError:
                return await self._most_recent(args=[bot_id])

        found = await self._call("most_recent", op)
        if found is None:
            return None
        user_id, flat = found
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return _state_from_hash(SessionKey(bot_id, user_id), fields)

    async def sweep_due(self, now: datetime, limit: int) -> list[SweptSession]:
        """Remove up to `limit` sessions due at `now`, oldest first, in one script call.

        The script takes them from the index and removes them in the same atomic step, so a
        heartbeat can never fall between the two. Fewer than `limit` means nothing more is due.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        args = [to_millis(now), limit, self.tombstone_ms]
        rows = await self._call("sweep", lambda: self._sweep(args=args))
        return _swept(rows)

    async def claim_heartbeat_lost(self, now: datetime, limit: int) -> list[SweptSession]:
        """Up to `limit` active sessions whose heartbeat deadline is at or before `now`, their
        deadlines removed in the same atomic step (lua/heartbeat_lost.lua): a heartbeat that
        came first moved its deadline and is not claimed."""
        args = [to_millis(now), limit]
        rows = await self._call("heartbeat_lost", lambda: self._heartbeat_lost(args=args))
        return _swept(rows)

    async def heartbeat_deadline(self, key: SessionKey) -> datetime | None:
        """When the session's heartbeat is lost; None when it has no deadline."""
        score = await self._call(
            "heartbeat_deadline",
            lambda: self.client.zscore(self.keys.heartbeat_deadlines, member_of(key)),
        )
        return None if score is None else datetime.fromtimestamp(score / 1000, UTC)

    async def api_alive(
        self, now: datetime, stale: timedelta, hold: timedelta, keep: timedelta
    ) -> datetime | None:
        """An API replica is serving (lua/api_beacon.lua). Returns the end of the hold on
        heartbeat-loss detection this call set (the last word of any replica was older than
        `stale`), else None."""
        args = [to_millis(now), _millis(stale), _millis(hold), _millis(keep)]
        held: int = await self._call("api_alive", lambda: self._api_beacon(args=args))
        return datetime.fromtimestamp(held / 1000, UTC) if held else None

    async def heartbeat_signal(self) -> tuple[datetime | None, datetime | None]:
        """(when an API replica last said it serves, when the hold on heartbeat-loss
        detection ends); None where there is none."""
        beacon, hold = await self._call(
            "heartbeat_signal",
            lambda: self.client.mget(self.keys.api_beacon, self.keys.heartbeat_hold),
        )
        return _moment(beacon), _moment(hold)

    async def heartbeat_deadline_count(self) -> int:
        """Active sessions that heartbeat (one ZCARD)."""
        count: int = await self._call(
            "heartbeat_deadlines", lambda: self.client.zcard(self.keys.heartbeat_deadlines)
        )
        return count

    async def session_keys(self) -> AsyncIterator[str]:
        """The `<botId>:<userId>` of every session:<botId>:<userId> hash in Redis, ours or not
        (the status and expiry strings left out). It scans the keyspace: never call it from
        a request path."""

        cursor: int = 0
        while True:  # one SCAN call at a time, each within the budget
            cursor, keys = await self._call("scan", partial(self._scan_page, cursor))
            for key in keys:
                rest = key[len("session:") :]
                if rest.count(":") == 1:
                    yield rest
            if cursor == 0:
                return

    async def _scan_page(self, cursor: int) -> tuple[int, list[str]]:
        cursor, keys = await self.client.scan(cursor, match="session:*", count=1000)
        return cursor, [str(key) for key in keys]  # decode_responses: already str

    async def last_sweep(self) -> int | None:
        """When the last sweep ran (epoch ms), across replicas; None before the first."""
        value = await self._call("last_sweep", lambda: self.client.get(self.keys.sweep_mark))
        return int(value) if value is not None else None

    async def mark_sweep(self, at: datetime) -> None:
        await self._call("mark_sweep", lambda: self.client.set(self.keys.sweep_mark, to_millis(at)))

    async def unsynced(self, seen_before: datetime, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` sessions with a heartbeat not yet copied to their BotSession from
        before `seen_before`, oldest first: (<botId>:<userId>, that heartbeat in epoch ms)."""
        rows = await self._call(
            "unsynced",
            lambda: self.client.zrangebyscore(
                self.keys.unsynced, "-inf", to_millis(seen_before), 0, limit, withscores=True
            ),
        )
        return [(str(member), int(score)) for member, score in rows]

    async def forget_copied(self, copied: Sequence[tuple[str, datetime]]) -> int:
        """Forget the heartbeats copied up to each lastSeen; returns how many sessions stay,
        heartbeated again since (copied.lua)."""
        if not copied:
            return 0
        args: list[str | int] = []
        for member, last_seen in copied:
            args += [member, to_millis(last_seen)]
        stayed: int = await self._call("forget_copied", lambda: self._copied(args=args))
        return stayed

    async def unsynced_count(self) -> int:
        count: int = await self._call(
            "unsynced_count", lambda: self.client.zcard(self.keys.unsynced)
        )
        return count

    async def intact(self) -> bool:
        """Whether Redis still holds what it held when the sentinel was settled (one GET)."""
        value = await self._call("sentinel", lambda: self.client.get(self.keys.sentinel))
        return bool(value) and str(value).startswith("intact:")

    async def begin_restore(self) -> str:
        """Mark a full restore as running; returns the token that settles it."""
        token = secrets.token_hex(8)
        await self._call(
            "sentinel", lambda: self.client.set(self.keys.sentinel, f"healing:{token}")
        )
        return token

    async def settle_restore(self, token: str) -> bool:
        """Mark Redis intact, unless it lost its data again while the restore ran."""
        settled = await self._call("sentinel", lambda: self._settle(args=[token]))
        return bool(settled)

    def lease(self, name: str, ttl: timedelta, holder: str) -> RedisLease:
        return RedisLease(self.client, self.keys.lease(name), ttl, holder)

    async def live_count(self, bot_id: str | None = None) -> int:
        """Sessions Redis holds (for one bot, or all): one ZCARD."""
        key = self.keys.bot_index(bot_id) if bot_id else self.keys.expiry_index
        count: int = await self._call("live_count", lambda: self.client.zcard(key))
        return count

    async def ping(self) -> bool:
        return bool(await self._call("ping", self.client.ping))

    async def close(self) -> None:
        await self.guard.close()
        await self.reads.close()
        await self.client.aclose()


def _state_from_hash(key: SessionKey, fields: dict[str, str]) -> SessionState | None:
    if not fields or "status" not in fields:
        return None
    return SessionState(
        key=key,
        phase=Phase(fields["status"]),
        revision=int(fields.get("revision") or 0),
        reason=Reason(fields["reason"]) if fields.get("reason") else None,
        last_seen=parse_time(fields["lastSeen"]),
        expires_at=parse_time(fields["expiresAt"]),
        created_at=parse_time(fields.get("createdAt") or fields["lastSeen"]),
        identity=Identity(
            fields.get("phoneNumber", ""),
            fields.get("displayName", ""),
            fields.get("sessionId", ""),
        ),
        incarnation=int(fields.get("incarnation") or 0),
        heartbeat_timeout_seconds=_int_or_none(fields.get("heartbeatTimeoutSeconds")),
    )


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """One entry of the session events: `id` orders all of them (the stream's id); the
    session key, incarnation and revision identify it."""

    id: str
    type: str  # transition, removed
    key: SessionKey
    incarnation: int
    revision: int
    from_phase: str  # "" for the first phase
    to_phase: str  # "" for a removal
    reason: str
    actor: str
    at: str  # ISO 8601 UTC, as the contract's times

    def payload(self) -> dict[str, Any]:
        """The event as the clients get it (the stream's data, a webhook's body)."""
        return {
            "id": self.id,
            "type": self.type,
            "botId": self.key.bot_id,
            "userId": self.key.user_id,
            "incarnation": self.incarnation,
            "revision": self.revision,
            "from": self.from_phase or None,
            "to": self.to_phase or None,
            "reason": self.reason or None,
            "actor": self.actor,
            "at": self.at,
        }

    @classmethod
    def of(cls, entry_id: str, fields: dict[str, str]) -> SessionEvent:
        bot_id, _, user_id = fields["session"].partition(":")
        return cls(
            entry_id,
            fields["type"],
            SessionKey(bot_id, user_id),
            int(fields["incarnation"]),
            int(fields["revision"]),
            fields["from"],
            fields["to"],
            fields["reason"],
            fields["actor"],
            fields["at"],
        )


def transition_events(history: Sequence[HistoryEntry]) -> list[str | int]:
    """The emit arguments of transitions (lua/_common.lua emit), oldest first."""
    args: list[str | int] = []
    for entry in sorted(history, key=lambda e: e.version):
        args += [
            "transition",
            entry.incarnation,
            entry.revision,
            entry.from_phase.value if entry.from_phase else "",
            entry.to_phase.value,
            entry.reason.value,
            entry.actor,
            to_millis(entry.at),
        ]
    return args


def removal_event(
    version: Version, phase: Phase | None, actor: str, at: datetime
) -> list[str | int]:
    """The emit arguments of a session's removal (its BotSession deleted): one version past
    its last transition, as the database's ended row."""
    phase_text = phase.value if phase else ""
    return [
        "removed",
        version.incarnation,
        version.revision + 1,
        phase_text,
        "",
        "",
        actor,
        to_millis(at),
    ]


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text else None


def _moment(millis: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(millis) / 1000, UTC) if millis else None


def _millis(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000)
