"""End to end, as a user: the one-command stack (`botsession up --demo`) driven through the
REST API and kubectl, then stopped with Ctrl-C. With BOTSESSION_E2E_API, _TOKEN,
_KUBECONFIG and _NAMESPACE set (scripts/kind-e2e.sh does), the same tests run against that
cluster instead of a local stack."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.kubectl import kubectl

pytestmark = pytest.mark.e2e


@dataclass
class Target:
    api: str
    token: str
    kubeconfig: Path
    namespace: str
    process: subprocess.Popen[str] | None = None

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.request(method, self.api + path, json=body, headers=headers, timeout=30)


def port_open(url: str) -> bool:
    host, port = re.match(r"https?://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    if os.environ.get("BOTSESSION_E2E_API"):
        yield Target(
            os.environ["BOTSESSION_E2E_API"],
            os.environ["BOTSESSION_E2E_TOKEN"],
            Path(os.environ["BOTSESSION_E2E_KUBECONFIG"]),
            os.environ.get("BOTSESSION_E2E_NAMESPACE", "default"),
        )
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 180
    while not any(line.startswith("Ctrl-C stops") for line in banner):
        line = process.stdout.readline()
        assert line or process.poll() is None, "".join(banner)
        banner.append(line)
        assert time.monotonic() < deadline, "".join(banner)
    text = "".join(banner)
    found = {
        key: re.search(rf"{key}:\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        for key in ("API", "token", "KUBECONFIG")
    }
    yield Target(found["API"], found["token"], Path(found["KUBECONFIG"]), "default", process)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def test_the_demo_sessions_show_in_kubectl(target: Target) -> None:
    out = kubectl(target.kubeconfig, "get", "bs", "-n", target.namespace, "-o", "json").stdout
    phases = {
        item["spec"]["userId"]: item["status"]["phase"]
        for item in json.loads(out)["items"]
        if item["spec"]["botId"] == "demo-bot"
    }
    assert phases == {
        "demo-connecting": "connecting",
        "demo-active": "active",
        "demo-failed": "failed",
        "demo-inactive": "inactive",
    }
    table = kubectl(target.kubeconfig, "get", "bs", "-n", target.namespace).stdout
    assert "demo-bot" in table and "connecting" in table


def test_a_bot_lifecycle_through_the_rest_api(target: Target) -> None:
    base = "/v1/whatsapp/sessions/e2e-bot/4915112345678@c.us"
    created = target.call(
        "POST",
        base + "/report",
        {
            "state": "connecting",
            "phoneNumber": "4915112345678",
            "displayName": "E2E",
            "sessionId": "session_e2e",
        },
    )
    assert created.status_code == 201, created.text
    assert target.call("POST", base + "/report", {"state": "connected"}).status_code == 200
    assert target.call("POST", base + "/heartbeat").status_code == 200
    status = target.call("GET", "/v1/whatsapp/session-status/e2e-bot?userId=4915112345678@c.us")
    assert status.status_code == 200
    assert status.json() == {
        "success": True,
        "status": "active",
        "lastSeen": status.json()["lastSeen"],
        "phoneNumber": "4915112345678",
        "displayName": "E2E",
        "sessionId": "session_e2e",
    }
    refused = target.call("POST", base + "/report", {"state": "failed"})
    assert refused.status_code == 409 and refused.json()["success"] is False
    assert (
        target.call("GET", "/v1/whatsapp/session-status/e2e-bot", token="not-a-token").status_code
        == 401
    )
    cleared = target.call(
        "POST", "/v1/whatsapp/clear-session/e2e-bot", {"userId": "4915112345678@c.us"}
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["cleared"]["session"] == 1
    gone = target.call("GET", "/v1/whatsapp/session-status/e2e-bot?userId=4915112345678@c.us")
    assert gone.status_code == 404


def test_ctrl_c_stops_everything(target: Target) -> None:
    if target.process is None:
        pytest.skip("an external cluster is not ours to stop")  # only with BOTSESSION_E2E_*
    kubeconfig = target.kubeconfig.read_text()
    server = re.search(r"server: (\S+)", kubeconfig).group(1)  # type: ignore[union-attr]
    target.process.send_signal(signal.SIGINT)
    target.process.send_signal(signal.SIGINT)  # an impatient second Ctrl-C changes nothing
    assert target.process.wait(60) == 0
    assert not port_open(target.api)
    assert not port_open(server)
    assert not target.kubeconfig.exists()  # the stack's temp dir is gone
