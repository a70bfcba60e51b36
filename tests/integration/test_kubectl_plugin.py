"""`kubectl botsession` (issue 22, item 3) as a real subprocess, against the real API server
(etcd + kube-apiserver with the CRD), a real redis-server and a real uvicorn API; also run
by the real `kubectl` binary as a plugin. BotSessions are seeded as the API and the operator
write them (KubeBotSessions: the first phase, compare-and-swap transitions, the sync's
status)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.controlplane import ControlPlane
from devstack.kubectl import kubectl_binary
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.botsessions import KubeBotSessions, resource_name
from sessions.adapters.kubernetes.client import CustomObjects, KubeClient
from sessions.adapters.kubernetes.crd import FINALIZER
from sessions.adapters.kubernetes.events import post_operator_warning
from sessions.adapters.redis.store import RedisKeys, RedisStore
from sessions.domain.model import (
    HistoryEntry,
    Identity,
    Phase,
    Reason,
    SessionKey,
    format_time,
    utcnow,
)
from sessions.domain.records import BotSessionRecord
from tests.integration.test_api import TOKENS, V1, auth, session_settings
from tests.integration.test_api import serving as serving_app

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
PLUGIN = BIN / "kubectl-botsession"
PHONE = "4915112345678"
IDENTITY = Identity(PHONE, "Jane", "session_123")
PATHS: dict[Phase | None, list[tuple[Phase, Reason]]] = {
    None: [],
    Phase.CONNECTING: [(Phase.CONNECTING, Reason.CREATED)],
    Phase.ACTIVE: [(Phase.CONNECTING, Reason.CREATED), (Phase.ACTIVE, Reason.CONNECTED)],
    Phase.FAILED: [(Phase.CONNECTING, Reason.CREATED), (Phase.FAILED, Reason.CONNECT_FAILED)],
}


def lost_path() -> list[tuple[Phase, Reason]]:
    return [*PATHS[Phase.ACTIVE], (Phase.INACTIVE, Reason.HEARTBEAT_LOST)]


async def seed(
    botsessions: KubeBotSessions,
    bot: str,
    user: str,
    path: list[tuple[Phase, Reason]],
    *,
    minutes_ago: float = 10,
    synced: bool = True,
) -> BotSessionRecord:
    """A BotSession walked along `path` (one minute apart, ending `minutes_ago` ago), as the
    API writes it; `synced`: with the status the operator's sync writes."""
    record, _ = await botsessions.create(SessionKey(bot, user), IDENTITY)
    start = utcnow().replace(microsecond=0) - timedelta(minutes=minutes_ago + len(path) - 1)
    for step, (to, reason) in enumerate(path):
        at = start + timedelta(minutes=step)
        entry = HistoryEntry(
            record.key, record.revision + 1, record.phase, to, reason, "bot-runner", at,
            incarnation=1_800_000_000_000,
        )  # fmt: skip
        record = await botsessions.set_phase(record, entry, at, at + timedelta(days=1))
    if synced and path:
        status = {"syncedRevision": record.revision, "observedGeneration": record.generation}
        assert await botsessions.set_sync_status(record, status)
    return record


def plugin(
    controlplane: ControlPlane,
    namespace: str,
    *args: str,
    stdin: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [str(PLUGIN), *args, "--kubeconfig", str(controlplane.kubeconfig), "-n", namespace]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BOTSESSION_")}
    result = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **(env or {})},
        check=False,
    )
    assert PHONE not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def rows(text: str) -> list[list[str]]:
    """A table's lines split on its column gaps (three spaces or more)."""
    import re

    return [re.split(r"\s{3,}", line.strip()) for line in text.strip().splitlines() if line]


async def test_status_history_and_top_as_tables_and_json(
    controlplane: ControlPlane, namespace: str, kube_botsessions: KubeBotSessions
) -> None:
    await seed(kube_botsessions, "bot-a", "u-active", PATHS[Phase.ACTIVE])
    await seed(kube_botsessions, "bot-a", "u-connecting", PATHS[Phase.CONNECTING], minutes_ago=30)
    await seed(kube_botsessions, "bot-a", "u-lost", lost_path())
    await seed(kube_botsessions, "bot-a", "u-failed", PATHS[Phase.FAILED], synced=False)
    await seed(kube_botsessions, "bot-b", "u-1", PATHS[Phase.CONNECTING], minutes_ago=20)
    await kube_botsessions.create(SessionKey("bot-b", "u-new"), IDENTITY)  # no phase yet

    # status of a bot: a table, one line per session, sorted by user
    result = plugin(controlplane, namespace, "status", "bot-a")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table[0][:6] == ["BOT", "USER", "STATUS", "REASON", "REVISION", "SYNCED"]
    by_user = {line[1]: line for line in table[1:]}
    assert list(by_user) == ["u-active", "u-connecting", "u-failed", "u-lost"]
    assert by_user["u-active"][2:6] == ["active", "Connected", "2", "yes"]
    assert by_user["u-lost"][2:6] == ["inactive", "HeartbeatLost", "3", "yes"]
    assert by_user["u-failed"][2:6] == ["failed", "ConnectFailed", "2", "no"]
    assert by_user["u-connecting"][6] == "30m"  # last seen
    assert by_user["u-active"][-1] == resource_name(SessionKey("bot-a", "u-active"))

    # one session as JSON
    document = as_json(plugin(controlplane, namespace, "status", "bot-a", "u-lost", "-o", "json"))
    assert document["kind"] == "SessionStatus" and document["namespace"] == namespace
    [session] = document["sessions"]
    assert session["botId"] == "bot-a" and session["userId"] == "u-lost"
    assert session["status"] == "inactive" and session["reason"] == "HeartbeatLost"
    assert session["revision"] == 3 and session["syncedRevision"] == 3
    assert session["inStep"] is True and session["deletionTimestamp"] is None
    assert "phoneNumber" not in session and "displayName" not in session

    # unknown: exit 1 with a message on stderr; a bot without sessions: empty, exit 0
    missing = plugin(controlplane, namespace, "status", "bot-a", "nobody")
    assert missing.returncode == 1 and "no BotSession" in missing.stderr
    empty = plugin(controlplane, namespace, "status", "bot-z", "-o", "json")
    assert empty.returncode == 0 and as_json(empty)["sessions"] == []

    # history from status.recentTransitions, oldest first
    result = plugin(controlplane, namespace, "history", "bot-a", "u-lost")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table[0] == ["REVISION", "FROM", "TO", "REASON", "ACTOR", "AT", "AGE"]
    assert [line[:4] for line in table[1:]] == [
        ["1", "-", "connecting", "Created"],
        ["2", "connecting", "active", "Connected"],
        ["3", "active", "inactive", "HeartbeatLost"],
    ]
    assert table[-1][-1] == "10m"
    document = as_json(plugin(controlplane, namespace, "history", "bot-a", "u-lost", "-o", "json"))
    assert document["source"] == "kubernetes" and document["status"] == "inactive"
    assert [t["to"] for t in document["transitions"]] == ["connecting", "active", "inactive"]
    assert document["transitions"][0]["from"] is None
    assert document["transitions"][2]["actor"] == "bot-runner"

    # top: per bot, by status, the oldest connecting and the lost heartbeats
    result = plugin(controlplane, namespace, "top")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert table[0] == [
        "BOT", "SESSIONS", "CONNECTING", "ACTIVE", "INACTIVE", "FAILED", "NO PHASE",
        "DELETING", "OLDEST CONNECTING", "HEARTBEAT LOST",
    ]  # fmt: skip
    assert table[1] == ["bot-a", "4", "1", "1", "1", "1", "0", "0", "30m", "1"]
    assert table[2] == ["bot-b", "2", "1", "0", "0", "0", "1", "0", "20m", "0"]
    document = as_json(plugin(controlplane, namespace, "top", "-o", "json"))
    assert document["kind"] == "SessionTop"
    bot_a, bot_b = document["bots"]
    assert bot_a["byStatus"] == {
        "connecting": 1, "active": 1, "inactive": 1, "failed": 1, "none": 0
    }  # fmt: skip
    assert bot_a["heartbeatLost"] == 1
    assert bot_a["oldestConnecting"]["userId"] == "u-connecting"
    assert 1790 <= bot_a["oldestConnecting"]["ageSeconds"] <= 1900
    assert bot_b["sessions"] == 2 and bot_b["byStatus"]["none"] == 1


async def test_top_pages_through_a_long_list(
    controlplane: ControlPlane, namespace: str, kube_botsessions: KubeBotSessions
) -> None:
    for n in range(7):
        await seed(kube_botsessions, "bot-p", f"u-{n}", PATHS[Phase.ACTIVE])
    document = as_json(plugin(controlplane, namespace, "top", "-o", "json", "--chunk-size", "2"))
    assert document["bots"][0]["sessions"] == 7
    assert document["bots"][0]["byStatus"]["active"] == 7


async def test_it_runs_as_a_kubectl_plugin(
    controlplane: ControlPlane, namespace: str, kube_botsessions: KubeBotSessions
) -> None:
    await seed(kube_botsessions, "bot-k", "u-1", PATHS[Phase.ACTIVE])
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSESSION_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["KUBECONFIG"] = str(controlplane.kubeconfig)  # the plugin reads kubectl's variable
    listed = subprocess.run(
        [kubectl_binary(), "plugin", "list"], capture_output=True, text=True, env=env, check=False
    )
    assert str(PLUGIN) in listed.stdout
    kubectl = [kubectl_binary(), "botsession"]
    result = subprocess.run(
        [*kubectl, "status", "bot-k", "-n", namespace],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout)[1][:4] == ["bot-k", "u-1", "active", "Connected"]
    result = subprocess.run(
        [*kubectl, "top", "-o", "json", "-n", namespace],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bots"][0]["botId"] == "bot-k"
    # BOTSESSION_NAMESPACE stands in for -n
    result = subprocess.run(
        [*kubectl, "status", "bot-k", "u-1", "-o", "json"],
        capture_output=True, text=True, env={**env, "BOTSESSION_NAMESPACE": namespace},
        check=False, timeout=60,
    )  # fmt: skip
    assert json.loads(result.stdout)["sessions"][0]["status"] == "active"


async def test_doctor_finds_pending_syncs_and_a_stuck_finalizer(
    controlplane: ControlPlane,
    namespace: str,
    kube_client: KubeClient,
    kube_botsessions: KubeBotSessions,
) -> None:
    await seed(kube_botsessions, "bot-d", "u-ok", PATHS[Phase.ACTIVE])
    healthy = plugin(controlplane, namespace, "doctor")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.strip().endswith("OK")
    levels = {line[1]: line[0] for line in rows(healthy.stdout)[1:-1]}
    assert levels["finalizers"] == "OK" and levels["syncs"] == "OK"
    assert levels["operator"] == "INFO"  # no KopfPeering: standalone, or none

    # a change the operator has not synced: WARN, still exit 0
    behind = await seed(kube_botsessions, "bot-d", "u-behind", PATHS[Phase.FAILED], synced=False)
    result = plugin(controlplane, namespace, "doctor", "--sync-grace", "0", "-o", "json")
    assert result.returncode == 0, result.stderr
    document = as_json(result)
    assert document["kind"] == "Doctor" and document["overall"] == "WARN"
    checks = {c["name"]: c for c in document["checks"]}
    assert checks["syncs"]["level"] == "WARN"
    assert checks["syncs"]["details"]["pending"] == [behind.name]

    # what the cluster shows of the operator: kopf's peering, SweepFailed Events
    now = utcnow().replace(microsecond=0)
    peers = {
        "botsession-operator-0": {"priority": 1000, "lifetime": 60, "lastseen": format_time(now)},
        "botsession-operator-1": {
            "priority": 999, "lifetime": 60, "lastseen": format_time(now - timedelta(minutes=5))
        },
    }  # fmt: skip
    peerings = CustomObjects(kube_client, "kopf.dev", "v1", namespace, "kopfpeerings")
    await peerings.create(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "botsession-operator", "namespace": namespace},
            "status": peers,
        }
    )
    await post_operator_warning(
        kube_client, namespace, reason="SweepFailed", message="redis: connection refused"
    )
    checks = {
        c["name"]: c
        for c in as_json(plugin(controlplane, namespace, "doctor", "-o", "json"))["checks"]
    }
    assert checks["operator"]["level"] == "OK"
    assert checks["operator"]["details"] == {
        "holder": "botsession-operator-0", "peers": ["botsession-operator-0"]
    }  # fmt: skip
    assert checks["sweep"]["level"] == "WARN" and "connection refused" in checks["sweep"]["message"]

    # a BotSession with the operator's finalizer, deleted while no operator runs
    finalized = KubeBotSessions(kube_client, namespace, finalizer=FINALIZER)
    stuck = await seed(finalized, "bot-d", "u-stuck", PATHS[Phase.ACTIVE])
    await finalized.objects.delete(stuck.name, {"propagationPolicy": "Background"})
    soon = plugin(controlplane, namespace, "doctor", "-o", "json")
    assert soon.returncode == 0  # deleting for less than --stuck-after (60 s)
    assert {c["name"]: c for c in as_json(soon)["checks"]}["finalizers"]["level"] == "OK"
    time.sleep(2)
    result = plugin(controlplane, namespace, "doctor", "--stuck-after", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.strip().endswith("FAIL")
    line = next(line for line in rows(result.stdout) if line[1:2] == ["finalizers"])
    assert line[0] == "FAIL" and stuck.name in line[2]
    document = as_json(
        plugin(controlplane, namespace, "doctor", "--stuck-after", "1", "-o", "json")
    )
    checks = {c["name"]: c for c in document["checks"]}
    assert document["overall"] == "FAIL"
    assert [s["name"] for s in checks["finalizers"]["details"]["stuck"]] == [stuck.name]
    # a deleting object is no pending sync
    assert stuck.name not in checks["syncs"]["details"]["pending"]
    await finalized.objects.patch(
        stuck.name, {"metadata": {"finalizers": []}}, "application/merge-patch+json"
    )


async def test_doctor_reads_the_lease_and_the_sweep_from_redis(
    controlplane: ControlPlane,
    namespace: str,
    redis_server: RedisServer,
    redis_store: RedisStore,
    kube_botsessions: KubeBotSessions,
) -> None:
    await seed(kube_botsessions, "bot-r", "u-1", PATHS[Phase.ACTIVE])
    holder = f"{namespace}/botsession-operator-0"
    lease = redis_store.lease("housekeeping", timedelta(seconds=30), holder)
    assert await lease.acquire()  # as the operator's housekeeping loop takes it
    await redis_store.mark_sweep(utcnow() - timedelta(minutes=20))
    env = {"BOTSESSION_REDIS_URL": redis_server.url}
    result = plugin(controlplane, namespace, "doctor", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line[1]: line for line in rows(result.stdout)[1:-1]}
    assert lines["lease"][0] == "OK" and holder in lines["lease"][2]
    assert lines["sweep"][0] == "OK" and "20m ago" in lines["sweep"][2]
    assert result.stdout.strip().endswith("OK")

    # a stale sweep warns
    await redis_store.mark_sweep(utcnow() - timedelta(hours=5))
    document = as_json(plugin(controlplane, namespace, "doctor", "-o", "json", env=env))
    checks = {c["name"]: c for c in document["checks"]}
    assert document["overall"] == "WARN" and checks["sweep"]["level"] == "WARN"
    assert checks["lease"]["details"]["holder"] == holder

    # another installation's prefix: its own lease, and here nobody holds one
    other = RedisStore(redis_store.client, keys=RedisKeys("shard-b:"))
    assert await other.lease("housekeeping", timedelta(seconds=30), "bots-b/op-0").acquire()
    await lease.release()
    result = plugin(controlplane, namespace, "doctor", "-o", "json", env=env)
    assert result.returncode == 1
    checks = {c["name"]: c for c in as_json(result)["checks"]}
    assert checks["lease"]["level"] == "FAIL" and checks["lease"]["details"]["holder"] is None
    result = plugin(
        controlplane, namespace, "doctor", "--redis", redis_server.url,
        "--redis-key-prefix", "shard-b:", "-o", "json",
    )  # fmt: skip
    checks = {c["name"]: c for c in as_json(result)["checks"]}
    assert checks["lease"]["details"]["holder"] == "bots-b/op-0"
    assert checks["sweep"]["level"] == "WARN"  # that prefix never swept

    # Redis unreachable: FAIL, and the URL's password is not printed
    result = plugin(
        controlplane, namespace, "doctor", "--redis", "redis://:hunter22secret@127.0.0.1:1/0"
    )
    assert result.returncode == 1 and "hunter22secret" not in result.stdout + result.stderr
    assert next(line for line in rows(result.stdout) if line[1:2] == ["redis"])[0] == "FAIL"


async def test_clear_directly_deletes_the_botsessions(
    controlplane: ControlPlane,
    namespace: str,
    kube_client: KubeClient,
    kube_botsessions: KubeBotSessions,
) -> None:
    one = await seed(kube_botsessions, "bot-c", "u-1", PATHS[Phase.ACTIVE])
    finalized = KubeBotSessions(kube_client, namespace, finalizer=FINALIZER)
    two = await seed(finalized, "bot-c", "u-2", PATHS[Phase.ACTIVE])
    three = await seed(kube_botsessions, "bot-c", "u-3", PATHS[Phase.CONNECTING])

    # flags it cannot honour without the API
    refused = plugin(controlplane, namespace, "clear", "bot-c", "u-1", "--keep-redis")
    assert refused.returncode == 1 and "--keep-redis needs the API" in refused.stderr
    assert await kube_botsessions.get(one.key) is not None

    result = plugin(controlplane, namespace, "clear", "bot-c", "u-1")
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout)[1] == [one.name, "bot-c", "u-1", "deleted"]
    assert "finalizer" in result.stdout
    assert await kube_botsessions.get(one.key) is None

    # every session of the bot: asks first
    declined = plugin(controlplane, namespace, "clear", "bot-c", stdin="n\n")
    assert declined.returncode == 1 and "Delete all 2 BotSession(s)" in declined.stderr
    assert await kube_botsessions.get(three.key) is not None
    result = plugin(controlplane, namespace, "clear", "bot-c", "--wait", "1", "-o", "json",
                    stdin="y\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = as_json(result)
    assert document["kind"] == "ClearResult" and document["mode"] == "direct"
    states = {s["userId"]: s["state"] for s in document["sessions"]}
    assert states == {"u-2": "deleting", "u-3": "deleted"}  # u-2 waits for its finalizer
    assert "finalizer" in document["note"]
    assert await kube_botsessions.get(three.key) is None
    left = await kube_botsessions.get(two.key)
    assert left is not None and left.deleting
    await finalized.objects.patch(
        two.name, {"metadata": {"finalizers": []}}, "application/merge-patch+json"
    )
    again = plugin(controlplane, namespace, "clear", "bot-c", "--yes")
    assert again.returncode == 1 and "no BotSession of bot 'bot-c'" in again.stderr


async def test_clear_and_history_through_the_api(
    controlplane: ControlPlane,
    namespace: str,
    redis_server: RedisServer,
    redis_store: RedisStore,
    kube_botsessions: KubeBotSessions,
    tmp_path: Path,
) -> None:
    settings = session_settings(
        namespace,
        redis_server.url,
        f"sqlite+aiosqlite:///{tmp_path / 'api.sqlite3'}",
        clear_wait="2s",
    )
    admin_token = TOKENS["admin"][1]
    with serving_app(controlplane.kubeconfig, settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for user in ("u-1", "u-2"):
                for state in ("connecting", "connected", "disconnected"):
                    answer = await client.post(
                        f"{V1}/sessions/bot-api/{user}/report",
                        json={"state": state, "phoneNumber": PHONE},
                        headers=auth("reporter"),
                    )
                    assert answer.status_code in (200, 201), answer.text
        env = {"BOTSESSION_API_URL": url, "BOTSESSION_TOKEN": admin_token}

        # history: the API's, from the database
        result = plugin(controlplane, namespace, "history", "bot-api", "u-1", "-o", "json", env=env)
        assert result.returncode == 0, result.stderr
        document = as_json(result)
        assert document["source"] == "api" and document["historySource"] == "database"
        assert [t["to"] for t in document["transitions"]] == ["connecting", "active", "inactive"]
        assert document["transitions"][0]["actor"] == "bot-runner"
        table = plugin(controlplane, namespace, "history", "bot-api", "u-1", "--api", url,
                       env={"BOTSESSION_TOKEN": admin_token})  # fmt: skip
        assert [line[2] for line in rows(table.stdout)[1:]] == ["connecting", "active", "inactive"]
        no_token = plugin(controlplane, namespace, "history", "bot-api", "u-1", "--api", url)
        assert no_token.returncode == 1 and "needs a token" in no_token.stderr
        wrong = plugin(controlplane, namespace, "history", "bot-api", "u-1", "--api", url,
                       "--token", "not-a-real-token-123456")  # fmt: skip
        assert wrong.returncode == 1 and "401" in wrong.stderr
        assert "not-a-real-token-123456" not in wrong.stderr

        # clear one session, keeping its database rows
        result = plugin(controlplane, namespace, "clear", "bot-api", "u-1", "--keep-database",
                        "-o", "json", env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        document = as_json(result)
        assert document["mode"] == "api" and document["httpStatus"] == 200
        assert document["requested"] == {
            "clearSession": True, "clearRedis": True, "clearDatabase": False, "userId": "u-1"
        }  # fmt: skip
        assert document["cleared"]["session"] == 1 and document["cleared"]["databaseRows"] == 0
        assert await kube_botsessions.get(SessionKey("bot-api", "u-1")) is None
        assert admin_token not in result.stdout + result.stderr

        # every session of the bot: asks first, then clears through the API
        declined = plugin(controlplane, namespace, "clear", "bot-api", env=env, stdin="\n")
        assert declined.returncode == 1
        assert await kube_botsessions.get(SessionKey("bot-api", "u-2")) is not None
        result = plugin(controlplane, namespace, "clear", "bot-api", "--yes", env=env)
        assert result.returncode == 0, result.stderr
        assert "cleared bot bot-api (every session) through the API: 1 BotSession(s)" in (
            result.stdout
        )
        assert await kube_botsessions.get(SessionKey("bot-api", "u-2")) is None

        # only an admin token may clear a whole bot: the API's refusal is shown
        reporter = {"BOTSESSION_API_URL": url, "BOTSESSION_TOKEN": TOKENS["reporter"][1]}
        result = plugin(controlplane, namespace, "clear", "bot-api", "--yes", env=reporter)
        assert result.returncode == 1 and "422 invalid_input: userId is required" in result.stderr
        nothing = plugin(controlplane, namespace, "clear", "bot-api", "u-2", "--keep-redis",
                         "--keep-database", "--keep-session", env=env)  # fmt: skip
        assert nothing.returncode == 1 and "nothing to clear" in nothing.stderr


def test_the_plugin_imports_neither_kopf_nor_fastapi() -> None:
    probe = (
        "import sys, cli.kubectl_plugin; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'kopf', 'fastapi', 'starlette', 'uvicorn', 'sqlalchemy'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
