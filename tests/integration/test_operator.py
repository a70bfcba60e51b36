"""The operator, running for real, against the real control plane, Redis and database."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import pytest

from devstack.controlplane import ControlPlane
from devstack.kubectl import kubectl, kubectl_binary
from devstack.operator_process import OperatorProcess
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.botsessions import KubeBotSessions
from sessions.adapters.redis.store import RedisStore, connect
from sessions.adapters.sql.store import SqlStore, create_engine
from sessions.domain.model import HistoryEntry, Identity, Phase, Reason, SessionKey, utcnow
from sessions.domain.records import BotSessionRecord, DeleteOutcome
from tests.conftest import OperatorEnv, eventually

pytestmark = pytest.mark.integration

KEY = SessionKey("bot-1", "4915112345678@c.us")
IDENTITY = Identity("4915112345678", "Jane", "session_123")


async def phase_of(env: OperatorEnv, key: SessionKey = KEY) -> BotSessionRecord | None:
    return await env.botsessions.get(key)


async def move(
    env: OperatorEnv, record: BotSessionRecord, to: Phase, reason: Reason
) -> BotSessionRecord:
    """Change the phase as the API does, but write nothing else: the operator must."""
    now = utcnow().replace(microsecond=0)
    entry = HistoryEntry(record.key, record.revision + 1, record.phase, to, reason, "test", now)
    return await env.botsessions.set_phase(record, entry, now, now + timedelta(hours=24))


def events(controlplane: ControlPlane, namespace: str) -> list[dict[str, str]]:
    out = kubectl(controlplane.kubeconfig, "get", "events", "-n", namespace, "-o", "json")
    return [
        {
            "type": e["type"],
            "reason": e["reason"],
            "message": e["message"],
            "object": e["involvedObject"]["name"],
        }
        for e in json.loads(out.stdout)["items"]
    ]


async def synced(env: OperatorEnv, revision: int, key: SessionKey = KEY) -> bool:
    record = await env.botsessions.get(key)
    return record is not None and record.synced_revision == revision


async def test_a_new_botsession_gets_its_first_phase_and_fills_redis_and_the_database(
    operator_env: OperatorEnv, controlplane: ControlPlane
) -> None:
    created, _ = await operator_env.botsessions.create(KEY, IDENTITY)
    assert created.phase is None
    await eventually(lambda: synced(operator_env, 1))
    record = await phase_of(operator_env)
    assert record is not None
    assert (record.phase, record.reason, record.revision) == (Phase.CONNECTING, Reason.CREATED, 1)
    hash_ = await operator_env.redis.client.hgetall(f"session:{KEY}")
    assert hash_["status"] == "connecting" and hash_["phoneNumber"] == "4915112345678"
    assert await operator_env.redis.client.get(f"session:status:{KEY}") == "connecting"
    assert await operator_env.redis.client.exists(f"session:expiry:{KEY}") == 1
    row = await operator_env.sql.get(KEY)
    assert row is not None and (row.phase, row.revision) == (Phase.CONNECTING, 1)
    assert [(e.revision, e.to_phase) for e in await operator_env.sql.history(KEY)] == [
        (1, Phase.CONNECTING)
    ]
    table = kubectl(
        controlplane.kubeconfig, "get", "bs", "-n", operator_env.namespace, "-o", "wide"
    ).stdout
    assert "connecting" in table.splitlines()[1] and table.splitlines()[1].split()[-1] == "True"
    body = json.loads(
        kubectl(
            controlplane.kubeconfig,
            "get",
            "bs",
            record.name,
            "-n",
            operator_env.namespace,
            "-o",
            "json",
        ).stdout
    )
    conditions = {c["type"]: c for c in body["status"]["conditions"]}
    assert conditions["Synced"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert body["metadata"]["finalizers"] == ["botsession.dev/cleanup"]
    assert {
        "type": "Normal",
        "reason": "Created",
        "object": record.name,
        "message": "(none) -> connecting (revision 1, by operator)",
    } in events(controlplane, operator_env.namespace)


async def test_phase_changes_reach_redis_the_database_and_history_once_each(
    operator_env: OperatorEnv, controlplane: ControlPlane
) -> None:
    await operator_env.botsessions.create(KEY, IDENTITY)
    await eventually(lambda: synced(operator_env, 1))
    record = await phase_of(operator_env)
    assert record is not None
    record = await move(operator_env, record, Phase.ACTIVE, Reason.CONNECTED)
    record = await move(operator_env, record, Phase.INACTIVE, Reason.LOGGED_OUT)
    record = await move(operator_env, record, Phase.CONNECTING, Reason.RECONNECTING)
    await eventually(lambda: synced(operator_env, 4))
    assert (await operator_env.redis.client.hget(f"session:{KEY}", "status")) == "connecting"
    history = await operator_env.sql.history(KEY)
    assert [(e.revision, e.from_phase, e.to_phase, e.reason) for e in history] == [
        (4, Phase.INACTIVE, Phase.CONNECTING, Reason.RECONNECTING),
        (3, Phase.ACTIVE, Phase.INACTIVE, Reason.LOGGED_OUT),
        (2, Phase.CONNECTING, Phase.ACTIVE, Reason.CONNECTED),
        (1, None, Phase.CONNECTING, Reason.CREATED),
    ]
    reasons = [
        e["reason"] for e in events(controlplane, operator_env.namespace) if e["type"] == "Normal"
    ]
    assert sorted(reasons) == sorted(["Created", "Connected", "LoggedOut", "Reconnecting"])


async def test_a_handmade_botsession_is_labelled_and_found_by_key(
    operator_env: OperatorEnv, controlplane: ControlPlane
) -> None:
    manifest = f"""
apiVersion: botsession.dev/v1alpha1
kind: BotSession
metadata: {{name: by-hand, namespace: {operator_env.namespace}}}
spec: {{botId: "bot+x", userId: u1}}
"""
    subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(controlplane.kubeconfig), "apply", "-f", "-"],
        input=manifest,
        text=True,
        check=True,
        capture_output=True,
    )
    key = SessionKey("bot+x", "u1")
    record = await eventually(lambda: operator_env.botsessions.get(key))
    assert record is not None and record.name == "by-hand"
    await eventually(lambda: synced(operator_env, 1, key))


async def test_deleting_cleans_redis_and_the_database_and_leaves_no_finalizer(
    operator_env: OperatorEnv,
) -> None:
    await operator_env.botsessions.create(KEY, IDENTITY)
    await eventually(lambda: synced(operator_env, 1))
    outcome = await operator_env.botsessions.delete(KEY, timedelta(seconds=20))
    assert outcome is DeleteOutcome.DELETED
    assert await operator_env.redis.client.keys("session:*") == []
    row = await operator_env.sql.get(KEY)
    assert row is not None and (row.phase, row.reason) == (Phase.INACTIVE, Reason.CLEARED)
    newest = (await operator_env.sql.history(KEY))[0]
    assert (newest.to_phase, newest.reason) == (Phase.INACTIVE, Reason.CLEARED)


async def test_deleting_while_redis_is_down_waits_for_it_and_leaks_nothing(
    controlplane: ControlPlane, namespace: str, kube_botsessions: KubeBotSessions, tmp_path: object
) -> None:
    from pathlib import Path

    database_url = f"sqlite+aiosqlite:///{Path(str(tmp_path)) / 'op.sqlite3'}"
    with (
        RedisServer(persistent=True) as redis_server,
        OperatorProcess(
            controlplane.kubeconfig,
            namespace,
            {
                "BOTSESSION_REDIS_URL": redis_server.url,
                "BOTSESSION_DATABASE_URL": database_url,
                "BOTSESSION_REDIS_RETRIES": "0",
                "BOTSESSION_REDIS_TIMEOUT": "1s",
            },
        ),
    ):
        redis = RedisStore(connect(redis_server.url, retries=3))
        await kube_botsessions.create(KEY, IDENTITY)
        await eventually(lambda: _synced(kube_botsessions, 1))
        assert await redis.client.exists(f"session:{KEY}") == 1
        redis_server.stop()
        outcome = await kube_botsessions.delete(KEY, timedelta(seconds=3))
        assert outcome is DeleteOutcome.PENDING
        record = await kube_botsessions.get(KEY)
        assert record is not None and record.deleting
        await eventually(lambda: _warned(controlplane, namespace), timeout=30)
        redis_server.start()  # the append-only file brings the keys back
        assert await redis.client.exists(f"session:{KEY}") == 1
        await eventually(lambda: _gone(kube_botsessions), timeout=90)
        assert await redis.client.keys("session:*") == []
        sql = SqlStore(create_engine(database_url))
        row = await sql.get(KEY)
        assert row is not None and row.phase is Phase.INACTIVE
        await sql.close()
        await redis.close()


async def _synced(botsessions: KubeBotSessions, revision: int) -> bool:
    record = await botsessions.get(KEY)
    return record is not None and record.synced_revision == revision


async def _gone(botsessions: KubeBotSessions) -> bool:
    return await botsessions.get(KEY) is None


async def _warned(controlplane: ControlPlane, namespace: str) -> bool:
    return any(
        e["type"] == "Warning" and e["reason"] == "CleanupPending"
        for e in events(controlplane, namespace)
    )
