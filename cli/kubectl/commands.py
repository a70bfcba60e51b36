"""The commands of `kubectl botsession`: each returns a Result, a JSON document (the
`-o json` shape, docs/kubectl-plugin.md) and its text table, and the exit code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cli.kubectl.output import age, since, table
from cli.kubectl.sources import (
    Cluster,
    PluginError,
    RedisView,
    RestApi,
    Session,
    api_error,
    read_redis,
)
from sessions.adapters.kubernetes.crd import FINALIZER
from sessions.domain.model import Phase, Reason, format_time, parse_time

PHASES = [p.value for p in Phase]  # connecting, active, inactive, failed
KIND = "botsession.dev/v1alpha1"  # the `apiVersion` of the documents the plugin prints


@dataclass
class Result:
    document: dict[str, Any]
    text: str
    code: int = 0
    note: str = ""  # for stderr (e.g. "No BotSessions found"), in table output only


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment else None


def _document(kind: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": KIND, "kind": kind, **fields}


# --- status --------------------------------------------------------------------------------


def session_json(session: Session) -> dict[str, Any]:
    synced = session.conditions.get("Synced", {}).get("status")
    return {
        "name": session.name,
        "botId": session.bot_id,
        "userId": session.user_id,
        "status": session.phase,
        "reason": session.reason,
        "revision": session.revision,
        "syncedRevision": session.synced_revision,
        "inStep": session.in_step,
        "synced": None if synced is None else synced == "True",
        "lastSeen": _time(session.last_seen),
        "expiresAt": _time(session.expires_at),
        "createdAt": _time(session.created),
        "deletionTimestamp": _time(session.deleted_at),
    }


def _until(moment: datetime | None, now: datetime) -> str | None:
    if moment is None:
        return None
    if moment <= now:
        return "expired"
    return f"in {age((moment - now).total_seconds())}"


async def status(cluster: Cluster, bot_id: str, user_id: str | None, now: datetime) -> Result:
    if user_id is not None:
        found = await cluster.one(bot_id, user_id)
        if found is None:
            raise PluginError(
                f"no BotSession of bot {bot_id!r} and that user in namespace {cluster.namespace!r}"
            )
        sessions = [found]
    else:
        sessions = await cluster.of_bot(bot_id)
    rows = [
        [
            s.bot_id,
            s.user_id,
            (s.phase or "<none>") + (" (deleting)" if s.deleted_at else ""),
            s.reason,
            s.revision,
            "yes" if s.in_step else "no",
            since(s.last_seen, now),
            _until(s.expires_at, now),
            since(s.created, now),
            s.name,
        ]
        for s in sessions
    ]
    headers = ["bot", "user", "status", "reason", "revision", "synced", "last seen", "expires",
               "age", "name"]  # fmt: skip
    note = (
        "" if sessions else f"No BotSessions of bot {bot_id!r} in namespace {cluster.namespace!r}."
    )
    return Result(
        _document(
            "SessionStatus",
            namespace=cluster.namespace,
            botId=bot_id,
            sessions=[session_json(s) for s in sessions],
        ),
        table(headers, rows) if sessions else "",
        note=note,
    )


# --- history -------------------------------------------------------------------------------


def _transition(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "revision": int(item.get("revision") or 0),
        "from": item.get("from") or None,
        "to": item.get("to"),
        "reason": item.get("reason"),
        "actor": item.get("actor") or None,
        "at": item.get("at"),
    }


async def history(
    cluster: Callable[[], Cluster], api: RestApi | None, bot_id: str, user_id: str, now: datetime
) -> Result:
    """From the API (the database's full history) when given one, else the last ten
    transitions the BotSession keeps. Oldest first."""
    if api is not None:
        path = f"/v1/whatsapp/sessions/{api.quoted(bot_id)}/{api.quoted(user_id)}?history=100"
        answer = api.request("GET", path)
        if answer.status != 200:
            raise PluginError(api_error(answer))
        transitions = [_transition(t) for t in reversed(answer.body.get("history") or [])]
        source, history_source = "api", answer.body.get("historySource")
        current = (answer.body.get("session") or {}).get("status")
    else:
        found = await cluster().one(bot_id, user_id)
        if found is None:
            raise PluginError(
                f"no BotSession of bot {bot_id!r} and that user in namespace "
                f"{cluster().namespace!r} (its full history: --api)"
            )
        transitions = [_transition(t) for t in found.transitions]
        source, history_source, current = "kubernetes", "kubernetes", found.phase
    rows = [
        [
            t["revision"],
            t["from"] or "-",
            t["to"],
            t["reason"],
            t["actor"],
            t["at"],
            since(parse_time(t["at"]), now) if t["at"] else None,
        ]
        for t in transitions
    ]
    headers = ["revision", "from", "to", "reason", "actor", "at", "age"]
    what = "the API (database history)" if source == "api" else "status.recentTransitions"
    return Result(
        _document(
            "SessionHistory",
            botId=bot_id,
            userId=user_id,
            status=current,
            source=source,
            historySource=history_source,
            transitions=transitions,
        ),
        table(headers, rows) if rows else "",
        note=f"{len(rows)} transition(s) from {what}.",
    )


# --- top -----------------------------------------------------------------------------------


async def top(cluster: Cluster, now: datetime) -> Result:
    per_bot: dict[str, list[Session]] = {}
    for session in await cluster.sessions():
        per_bot.setdefault(session.bot_id, []).append(session)
    bots: list[dict[str, Any]] = []
    for bot_id in sorted(per_bot):
        sessions = per_bot[bot_id]
        counts = {phase: sum(1 for s in sessions if s.phase == phase) for phase in PHASES}
        counts["none"] = sum(1 for s in sessions if not s.phase)
        connecting = [(s.connecting_since, s) for s in sessions if s.connecting_since]
        oldest = min(connecting, key=lambda pair: pair[0]) if connecting else None
        bots.append(
            {
                "botId": bot_id,
                "sessions": len(sessions),
                "byStatus": counts,
                "deleting": sum(1 for s in sessions if s.deleted_at),
                "oldestConnecting": None
                if oldest is None
                else {
                    "name": oldest[1].name,
                    "userId": oldest[1].user_id,
                    "since": format_time(oldest[0]),
                    "ageSeconds": int((now - oldest[0]).total_seconds()),
                },
                "heartbeatLost": sum(
                    1 for s in sessions if s.reason == Reason.HEARTBEAT_LOST.value
                ),
            }
        )
    rows = [
        [
            b["botId"],
            b["sessions"],
            *(b["byStatus"][p] for p in [*PHASES, "none"]),
            b["deleting"],
            age(b["oldestConnecting"]["ageSeconds"]) if b["oldestConnecting"] else "-",
            b["heartbeatLost"],
        ]
        for b in bots
    ]
    headers = ["bot", "sessions", *PHASES, "no phase", "deleting", "oldest connecting",
               "heartbeat lost"]  # fmt: skip
    return Result(
        _document(
            "SessionTop", namespace=cluster.namespace, generatedAt=format_time(now), bots=bots
        ),
        table(headers, rows) if rows else "",
        note="" if rows else f"No BotSessions in namespace {cluster.namespace!r}.",
    )


# --- doctor --------------------------------------------------------------------------------

OK, INFO, WARN, FAIL = "OK", "INFO", "WARN", "FAIL"
_RANK = {OK: 0, INFO: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class Limits:
    stuck_after: timedelta = timedelta(minutes=1)
    sync_grace: timedelta = timedelta(minutes=1)
    sweep_stale_after: timedelta = timedelta(hours=3)


def _check(name: str, level: str, message: str, **details: Any) -> dict[str, Any]:
    return {"name": name, "level": level, "message": message, "details": details}


def _names(sessions: list[Session], limit: int = 5) -> str:
    shown = ", ".join(s.name for s in sessions[:limit])
    return shown + (f" and {len(sessions) - limit} more" if len(sessions) > limit else "")


def _peer_check(
    peerings: list[dict[str, Any]] | None, now: datetime, with_redis: bool
) -> dict[str, Any]:
    """The operator as kopf's peering shows it: the live peers and the active one (kopf's
    rule: the highest priority among those seen within their lifetime)."""
    unknown = "" if with_redis else " (the lease holder: --redis)"
    if peerings is None:
        return _check("operator", INFO, f"no kopf peering CRD: a standalone operator{unknown}")
    live: list[tuple[int, str, str]] = []
    for peering in peerings:
        for identity, info in (peering.get("status") or {}).items():
            if not isinstance(info, dict):
                continue
            seen = parse_time(info["lastseen"]) if info.get("lastseen") else None
            lifetime = timedelta(seconds=int(info.get("lifetime", 60)))
            if seen is not None and seen + lifetime > now:
                live.append((int(info.get("priority", 0)), identity, peering["metadata"]["name"]))
    if not peerings:
        return _check(
            "operator", INFO, f"no KopfPeering object: a standalone operator, or none{unknown}"
        )
    if not live:
        return _check("operator", FAIL, "no live operator in the kopf peering",
                      peerings=[p["metadata"]["name"] for p in peerings])  # fmt: skip
    live.sort(reverse=True)
    priority, identity, peering_name = live[0]
    return _check(
        "operator",
        OK,
        f"active peer {identity} (priority {priority}, peering {peering_name}); {len(live)} live",
        holder=identity,
        peers=[p[1] for p in live],
    )


def _lease_check(view: RedisView) -> dict[str, Any]:
    if view.lease_holder is None:
        return _check("lease", FAIL, "nobody holds the housekeeping lease: no operator is "
                      "sweeping, timing out or healing sessions", holder=None)  # fmt: skip
    ttl = f", {view.lease_ttl_ms / 1000:.0f}s left" if view.lease_ttl_ms is not None else ""
    return _check(
        "lease",
        OK,
        f"housekeeping lease held by {view.lease_holder}{ttl}",
        holder=view.lease_holder,
        ttlSeconds=None if view.lease_ttl_ms is None else view.lease_ttl_ms / 1000,
    )


def _sweep_check(view: RedisView, limits: Limits, now: datetime) -> dict[str, Any]:
    if view.last_sweep_ms is None:
        return _check("sweep", WARN, "no sweep has run yet (under this key prefix)", last=None)
    last = datetime.fromtimestamp(view.last_sweep_ms / 1000, UTC)
    level = WARN if now - last > limits.sweep_stale_after else OK
    return _check(
        "sweep",
        level,
        f"last sweep {since(last, now)} ago ({format_time(last)})"
        + (
            f": older than {age(limits.sweep_stale_after.total_seconds())}" if level == WARN else ""
        ),
        last=format_time(last),
    )


def _event_sweep_check(
    events: list[dict[str, Any]], now: datetime, limits: Limits
) -> dict[str, Any]:
    def stamp(event: dict[str, Any]) -> datetime:
        text = event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
        return parse_time(text) if text else datetime.min.replace(tzinfo=UTC)

    recent = [e for e in events if now - stamp(e) <= limits.sweep_stale_after]
    if recent:
        newest = max(recent, key=stamp)
        return _check(
            "sweep",
            WARN,
            f"{len(recent)} SweepFailed event(s), the last {since(stamp(newest), now)} ago: "
            f"{newest.get('message', '')}",
            failures=len(recent),
        )
    return _check("sweep", INFO, "no SweepFailed events (the last sweep's time: --redis)",
                  failures=0)  # fmt: skip


async def doctor(
    cluster: Cluster, redis_url: str | None, prefix: str, limits: Limits, now: datetime
) -> Result:
    checks: list[dict[str, Any]] = []
    sessions = await cluster.sessions()
    checks.append(_check("botsessions", OK, f"{len(sessions)} BotSession(s) in namespace "
                         f"{cluster.namespace}", count=len(sessions)))  # fmt: skip
    view: RedisView | None = None
    if redis_url:
        try:
            view = await read_redis(redis_url, prefix)
        except PluginError as exc:
            checks.append(_check("redis", FAIL, str(exc)))
        else:
            checks.append(_check("redis", OK, f"readable (key prefix {prefix})", prefix=prefix))
            checks.append(_lease_check(view))
            checks.append(_sweep_check(view, limits, now))
    checks.append(_peer_check(await cluster.peerings(), now, redis_url is not None))
    if view is None:
        checks.append(_event_sweep_check(await cluster.events("SweepFailed"), now, limits))

    live = [s for s in sessions if s.deleted_at is None]
    behind = [s for s in live if not s.in_step and now - s.changed_at > limits.sync_grace]
    unsynced = [s for s in live if s.conditions.get("Synced", {}).get("status") == "False"]
    wanted = f"; Redis lists {view.sync_wanted} write(s) not yet synced" if view else ""
    if behind:
        checks.append(
            _check(
                "syncs",
                WARN,
                f"{len(behind)} BotSession(s) not synced for over "
                f"{age(limits.sync_grace.total_seconds())}: {_names(behind)}{wanted}",
                pending=[s.name for s in behind],
                syncedFalse=[s.name for s in unsynced],
                redisSyncWanted=view.sync_wanted if view else None,
            )
        )
    else:
        recent = sum(1 for s in live if not s.in_step)
        checks.append(
            _check(
                "syncs",
                OK,
                f"no pending syncs ({recent} within the grace period){wanted}",
                pending=[],
                syncedFalse=[s.name for s in unsynced],
                redisSyncWanted=view.sync_wanted if view else None,
            )
        )

    deleting = [s for s in sessions if s.deleted_at is not None and s.finalizer_held]
    stuck = [s for s in deleting if s.deleted_at and now - s.deleted_at > limits.stuck_after]
    if stuck:
        checks.append(
            _check(
                "finalizers",
                FAIL,
                f"{len(stuck)} BotSession(s) deleting for over "
                f"{age(limits.stuck_after.total_seconds())} with {FINALIZER}: {_names(stuck)} "
                '(docs/operations.md, "Stuck finalizers")',
                stuck=[{"name": s.name, "deletionTimestamp": _time(s.deleted_at)} for s in stuck],
            )
        )
    else:
        checks.append(_check("finalizers", OK, f"no stuck finalizers ({len(deleting)} deleting)",
                             stuck=[]))  # fmt: skip

    overall = max((c["level"] for c in checks), key=lambda level: _RANK[level])
    overall = OK if overall == INFO else overall
    rows = [[c["level"], c["name"], c["message"]] for c in checks]
    return Result(
        _document(
            "Doctor",
            namespace=cluster.namespace,
            generatedAt=format_time(now),
            overall=overall,
            checks=checks,
        ),
        table(["level", "check", "message"], rows) + f"\n\n{overall}",
        code=1 if overall == FAIL else 0,
    )


# --- clear ---------------------------------------------------------------------------------

CLEANUP_NOTE = (
    "the operator's finalizer removes their Redis keys and marks their database rows ended"
)


@dataclass(frozen=True)
class ClearFlags:
    keep_redis: bool = False
    keep_database: bool = False
    keep_session: bool = False


def clear_through_api(api: RestApi, bot_id: str, user_id: str | None, flags: ClearFlags) -> Result:
    body: dict[str, Any] = {
        "clearSession": not flags.keep_session,
        "clearRedis": not flags.keep_redis,
        "clearDatabase": not flags.keep_database,
    }
    if not any(body.values()):
        raise PluginError(
            "nothing to clear: --keep-session, --keep-redis and --keep-database all given"
        )
    if user_id is not None:
        body["userId"] = user_id
    answer = api.request("POST", f"/v1/whatsapp/clear-session/{api.quoted(bot_id)}", body)
    if answer.status not in (200, 202):
        raise PluginError(api_error(answer))
    cleared = answer.body.get("cleared") or {}
    pending = list(answer.body.get("pending") or [])
    who = f"bot {bot_id}" + (f", user {user_id}" if user_id is not None else " (every session)")
    lines = [
        f"cleared {who} through the API: {cleared.get('session', 0)} BotSession(s), "
        f"{cleared.get('redisKeys', 0)} Redis key(s), {cleared.get('databaseRows', 0)} "
        "database row(s)"
    ]
    lines += [f"pending: {p} (finishes by itself)" for p in pending]
    return Result(
        _document(
            "ClearResult",
            mode="api",
            botId=bot_id,
            userId=user_id,
            requested=body,
            httpStatus=answer.status,
            cleared=cleared,
            pending=pending,
        ),
        "\n".join(lines),
    )


async def clear_directly(
    cluster: Cluster,
    bot_id: str,
    user_id: str | None,
    flags: ClearFlags,
    wait: timedelta,
    confirm: Callable[[str], bool],
) -> Result:
    """Delete the BotSession(s); the operator's finalizer cleans Redis and the database."""
    kept = [
        name
        for name, on in (
            ("--keep-redis", flags.keep_redis),
            ("--keep-database", flags.keep_database),
            ("--keep-session", flags.keep_session),
        )
        if on
    ]
    if kept:
        raise PluginError(
            f"{', '.join(kept)} needs the API (--api URL and --token, or BOTSESSION_API_URL and "
            "BOTSESSION_TOKEN): deleting the BotSession directly always lets the operator's "
            "finalizer remove the Redis keys and end the database row"
        )
    if user_id is not None:
        found = await cluster.one(bot_id, user_id)
        targets = [found] if found else []
    else:
        targets = await cluster.of_bot(bot_id)
    if not targets:
        raise PluginError(
            f"no BotSession of bot {bot_id!r}"
            + (" and that user" if user_id is not None else "")
            + f" in namespace {cluster.namespace!r}"
        )
    if user_id is None and not confirm(
        f"Delete all {len(targets)} BotSession(s) of bot {bot_id!r} in namespace "
        f"{cluster.namespace!r}?"
    ):
        raise PluginError("not confirmed: nothing deleted")
    outcome: dict[str, str] = {}
    for target in targets:
        outcome[target.name] = "deleting" if await cluster.delete(target.name) else "deleted"
    deadline = asyncio.get_running_loop().time() + wait.total_seconds()
    while True:
        for name in [n for n, state in outcome.items() if state == "deleting"]:
            if await cluster.get(name) is None:
                outcome[name] = "deleted"
        if "deleting" not in outcome.values() or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.2)
    rows = [[t.name, t.bot_id, t.user_id, outcome[t.name]] for t in targets]
    left = sum(1 for state in outcome.values() if state == "deleting")
    note = f"deleted directly: {CLEANUP_NOTE}."
    if left:
        note += (
            f" {left} still deleting after {age(wait.total_seconds())}: they finish once the "
            "operator has cleaned up (`kubectl botsession doctor` shows stuck ones)."
        )
    return Result(
        _document(
            "ClearResult",
            mode="direct",
            botId=bot_id,
            userId=user_id,
            sessions=[
                {"name": t.name, "userId": t.user_id, "state": outcome[t.name]} for t in targets
            ],
            note=note,
        ),
        table(["name", "bot", "user", "state"], rows) + "\n" + note,
        code=0,
    )
