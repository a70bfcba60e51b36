"""No phone number, user id, token or password in any log line of any component.

A whole scenario runs against real processes: a private etcd + kube-apiserver logging every
request's URL (--v=3), Redis, the operator and the API (each a subprocess writing its own log
at INFO): first reports of users whose ids are phone numbers and e-mail addresses, heartbeats,
a refused transition, an unknown token, a body that is too large, the sweep expiring a
session, the retention deleting it, a clear, a deletion with kubectl. Then every line every
component wrote is searched for each secret in every common spelling."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import httpx
import pytest

from devstack.controlplane import ControlPlane
from devstack.kubectl import install_crds, kubectl
from devstack.operator_process import OperatorProcess
from devstack.redis_server import RedisServer
from devstack.stack import ApiProcess
from sessions.domain import privacy
from sessions.domain.privacy import user_fingerprint
from tests.conftest import REPO, eventually

pytestmark = pytest.mark.integration

BOT = "bot-privacy"
PHONE = "4915112345678"
PHONE_SPELLINGS = [
    PHONE,
    "+" + PHONE,
    "+49 151 12345678",
    "+49-151-1234-5678",
    "0151 12345678",
    "15112345678",
    "12345678",
]
USERS = [f"{PHONE}@c.us", "jane.doe@example.com", "4917098765432"]
NAMESPACE = "privacy"


def spellings_of(user: str) -> list[str]:
    local = user.split("@")[0]
    return [user, local, local.replace(".", " ")] if "@" in user else [user, "+" + user]


async def scenario(api: httpx.AsyncClient, reporter: str, admin: str) -> None:
    def as_(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    identity = {"phoneNumber": PHONE, "displayName": "Jane", "sessionId": "s-1"}
    for user in USERS:
        path = f"/v1/whatsapp/sessions/{BOT}/{user}"
        first = await api.post(
            f"{path}/report", json={"state": "connected", **identity}, headers=as_(reporter)
        )
        assert first.status_code == 201, first.text
        assert (await api.post(f"{path}/heartbeat", headers=as_(reporter))).status_code == 200
        refused = await api.post(f"{path}/report", json={"state": "failed"}, headers=as_(reporter))
        assert refused.status_code == 409
    status = await api.get(
        f"/v1/whatsapp/session-status/{BOT}", params={"userId": USERS[0]}, headers=as_(admin)
    )
    assert status.status_code == 200
    assert (
        await api.get(f"/v1/whatsapp/sessions/{BOT}", headers=as_("not-a-token"))
    ).status_code == 401
    big = {"state": "connecting", "displayName": PHONE * 6000}
    assert (
        await api.post(
            f"/v1/whatsapp/sessions/{BOT}/{USERS[1]}/report", json=big, headers=as_(reporter)
        )
    ).status_code == 413
    cleared = await api.post(
        f"/v1/whatsapp/clear-session/{BOT}", json={"userId": USERS[1]}, headers=as_(admin)
    )
    assert cleared.status_code in (200, 202), cleared.text


async def test_no_component_logs_a_phone_number_user_id_token_or_password(
    tmp_path: Path,
) -> None:
    key = secrets.token_urlsafe(32)
    tokens = {"reporter": secrets.token_urlsafe(24), "admin": secrets.token_urlsafe(24)}
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(
        json.dumps(
            [
                {"name": "bot-runner", "token": tokens["reporter"], "scopes": ["report"]},
                {"name": "ops", "token": tokens["admin"], "scopes": ["admin"]},
            ]
        )
    )
    env = {
        "BOTSESSION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}",
        "BOTSESSION_FINGERPRINT_KEY": key,
        "BOTSESSION_SESSION_TTL": "3s",
        "BOTSESSION_CLEANUP_INTERVAL": "1s",
        "BOTSESSION_INACTIVE_RETENTION": "2s",
        "BOTSESSION_RESYNC_INTERVAL": "1s",
        "BOTSESSION_METRICS_PORT": "0",
        "BOTSESSION_LOG_LEVEL": "INFO",
    }
    with ControlPlane(tmp_path / "plane", apiserver_verbosity=3) as plane, RedisServer() as redis:
        install_crds(plane.kubeconfig, REPO / "crds")
        kubectl(plane.kubeconfig, "create", "namespace", NAMESPACE)
        env["BOTSESSION_REDIS_URL"] = redis.url
        operator = OperatorProcess(plane.kubeconfig, NAMESPACE, env, workdir=tmp_path / "op")
        api_env = {k: v for k, v in env.items() if k != "BOTSESSION_METRICS_PORT"}
        server = ApiProcess(tmp_path / "api", plane.kubeconfig, NAMESPACE, api_env, tokens_file)
        with operator, server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
                await scenario(api, tokens["reporter"], tokens["admin"])
                # the sweep expires them (TTL 3 s), the retention deletes them (2 s after)
                await eventually(lambda: _all_gone(plane), timeout=90, interval=1)
                # and one more user, deleted with kubectl while live
                path = f"/v1/whatsapp/sessions/{BOT}/{USERS[2]}/report"
                headers = {"Authorization": f"Bearer {tokens['reporter']}"}
                again = await api.post(path, json={"state": "connecting"}, headers=headers)
                assert again.status_code == 201
            kubectl(plane.kubeconfig, "delete", "bs", "--all", "-n", NAMESPACE, "--wait=true")
            await asyncio.sleep(1)
            logs = {
                "operator": operator.output(),
                "api": server.log_path.read_text(errors="replace"),
                "kube-apiserver": plane.apiserver.log_path.read_text(errors="replace"),
            }
    assert "URI=" in logs["kube-apiserver"] or '"HTTP"' in logs["kube-apiserver"]  # it logged
    assert "session removed from redis" in logs["operator"]  # the sweep ran and logged
    # lines about a user carry its fingerprint, the same in every process of the install
    privacy.configure(key)
    assert user_fingerprint(USERS[0]) in logs["operator"]
    assert user_fingerprint(USERS[1]) in logs["api"] + logs["operator"]
    secrets_ = [*PHONE_SPELLINGS, *tokens.values(), plane.token, key]
    for user in USERS:
        secrets_ += spellings_of(user)
    found = {
        (component, secret)
        for component, text in logs.items()
        for secret in secrets_
        if secret in text
    }
    assert found == set()


async def _all_gone(plane: ControlPlane) -> bool:
    out = kubectl(plane.kubeconfig, "get", "bs", "-n", NAMESPACE, "-o", "json").stdout
    items: list[object] = json.loads(out)["items"]
    return items == []
