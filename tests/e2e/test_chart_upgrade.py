"""`helm upgrade` to a new image tag while 20 bots keep reporting and heartbeating through
a port-forward. No session is lost: each BotSession, its Redis hash and its database row
hold the last phase its bot reported. Failed requests (5xx, broken connections) fall inside
the roll-out, and their window is measured and recorded with how many reports left a store
pending and how many history rows the database lacks afterwards (a store that was pending for
more than ten transitions misses the older ones: recorded, not asserted). No request is
refused (a heartbeat right after a report whose Redis write is pending is served from the
BotSession), and every BotSession ends marked synced at its own revision. The schema is not
migrated again."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from sessions.adapters.sql.migrate import head_revision
from tests.e2e.conftest import Record
from tests.e2e.load import BackgroundBots, Bots, measure
from tests.e2e.release import MIGRATED, Release, synced
from tests.e2e.waiting import poll

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(1800)]

SESSIONS = 20
NEW_TAG = "e2e-2"
QUIET = 3.0  # seconds without a failed request: before the upgrade, and to call it over
RECOVERY = 60.0  # the most seconds after the roll-out until requests stop failing


def quiet_since(bots: Bots, seconds: float) -> float | None:
    """Now, if no request failed in the last `seconds` and the bots ran that long."""
    now = time.monotonic()
    outcomes = list(bots.outcomes)
    if not outcomes or now - outcomes[0].started < seconds:
        return None
    recent = [o for o in outcomes if not o.ok and o.ended > now - seconds]
    return None if recent else now


def upgrade_under_load(release: Release, bots: Bots) -> dict[str, Any]:
    """Upgrade while the bots run; the figures of the roll-out."""
    with BackgroundBots(bots):
        poll(bots.connected_once, 90, "every bot connected once")
        begin = poll(lambda: quiet_since(bots, QUIET), 90, f"{QUIET:g} s without a failure")
        release.upgrade({"image": {"tag": NEW_TAG}})
        rolled = time.monotonic()
        poll(lambda: bots.each_succeeded_since(rolled), 60, "every bot served after the upgrade")
        poll(lambda: quiet_since(bots, QUIET), RECOVERY, "requests succeed after the roll-out")
    refused = [o for o in bots.outcomes if o.client_error]
    assert refused == [], f"refused requests: {refused[:5]}"
    during = [o for o in bots.outcomes if o.started >= begin and not o.client_error]
    figures = measure(during, begin)
    last = figures["lastFailureAt"]
    return {
        "rolloutSeconds": round(rolled - begin, 2),
        "sessions": len(bots.users),
        **figures,
        "failingAfterRolloutSeconds": max(0.0, round(last - (rolled - begin), 2)) if last else 0.0,
    }


def botsessions_of(release: Release, bot: str) -> dict[str, dict[str, Any]]:
    """The bot's BotSessions by userId."""
    return {o["spec"]["userId"]: o for o in release.botsessions() if o["spec"]["botId"] == bot}


def stores_disagree(release: Release, bot: str) -> list[str]:
    """The sessions whose Redis hash or database row does not hold the phase and revision
    of their BotSession (the source of truth)."""
    redis = release.redis()
    query = "SELECT bot_id, user_id, phase, revision FROM sessions"
    rows = {user: tuple(rest) for b, user, *rest in release.sql(query) if b == bot}
    wrong = []
    for user, body in botsessions_of(release, bot).items():
        want = (body["status"]["phase"], str(body["status"]["revision"]))
        stored = redis.hgetall(f"session:{bot}:{user}")
        held = (stored.get("status"), stored.get("revision"))
        if held != want or rows.get(user) != want:
            wrong.append(f"{user}: BotSession {want}, Redis {held}, database {rows.get(user)}")
    return wrong


def left_unsynced(release: Release, bot: str, timeout: float) -> list[dict[str, Any]]:
    """The BotSessions whose status still says an older revision is synced after
    `timeout` (a failed sync retries after a backoff of up to 60 s; a stale writer must
    never set an older syncedRevision over a newer one)."""
    behind: list[dict[str, Any]] = []

    def caught_up() -> bool:
        behind[:] = [o for o in botsessions_of(release, bot).values() if not synced(o)]
        return not behind

    with contextlib.suppress(AssertionError):
        poll(caught_up, timeout, "every BotSession synced", 1.0)
    return behind


def sessions_kept(release: Release, bots: Bots) -> dict[str, Any]:
    """Each bot's session, as its last successful report left it, in all three stores
    and each BotSession marked synced at its revision (asserted); how many transitions the
    database's history lacks (recorded)."""
    bodies = botsessions_of(release, bots.bot)
    assert sorted(bodies) == sorted(bots.users)
    for user, body in bodies.items():
        assert body["status"]["phase"] == bots.phase[user] == "active", user
    wrong: list[str] = []

    def agree() -> bool:  # a store that missed a write is healed within a resync (30 s)
        wrong[:] = stores_disagree(release, bots.bot)
        return not wrong

    try:
        poll(agree, 150, "Redis and the database hold every BotSession's revision", 1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {wrong[:5]}") from None
    query = "SELECT bot_id, user_id, revision FROM session_history"
    history = {(u, rev) for bot, u, rev in release.sql(query) if bot == bots.bot}
    revisions = sum(int(body["status"]["revision"]) for body in bodies.values())
    behind = left_unsynced(release, bots.bot, 90)
    assert behind == [], [
        {k: o["status"].get(k) for k in ("revision", "syncedRevision", "conditions")}
        for o in behind[:2]
    ]
    return {"historyRowsMissing": revisions - len(history)}


def migrated_once(release: Release) -> None:
    assert release.sql("SELECT version_num FROM alembic_version") == [[head_revision()]]
    for pod in release.pods():
        for container in pod["spec"]["containers"]:
            log = release.logs(pod["metadata"]["name"], container["name"])
            assert MIGRATED not in log and "Running upgrade" not in log, pod["metadata"]["name"]


def test_upgrade_under_load(release: Release, record_figure: Record) -> None:
    release.cluster.tag_image(release.image, f"{release.values['image']['repository']}:{NEW_TAG}")
    users = [f"user-{i:02d}" for i in range(SESSIONS)]
    bots = Bots(release.api_url(), release.tokens.bot_runner, f"load-{release.name}", users)
    figures = upgrade_under_load(release, bots)
    figures.update(sessions_kept(release, bots))
    record_figure(f"upgrade[{release.api_mode}]", figures)
    migrated_once(release)
