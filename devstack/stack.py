"""The whole stack on one machine: control plane (or the current cluster), Redis, SQLite,
the CRDs, the operator and the API, each a real process. `botsession up` runs it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Self

from devstack.controlplane import ControlPlane
from devstack.kubectl import install_crds
from devstack.operator_process import OperatorProcess
from devstack.process import Lifecycle, ManagedProcess, free_port, wait_until
from devstack.redis_server import RedisServer
from sessions.adapters.kubernetes.crd import render

DEMO = [  # (userId, reports in order) -> one session in every phase
    ("demo-connecting", [{"state": "connecting"}]),
    (
        "demo-active",
        [
            {
                "state": "connected",
                "phoneNumber": "4915100000001",
                "displayName": "Active Demo",
                "sessionId": "session_active",
            }
        ],
    ),
    ("demo-failed", [{"state": "connecting"}, {"state": "failed"}]),
    ("demo-inactive", [{"state": "connected"}, {"state": "disconnected", "reason": "LoggedOut"}]),
]


class ApiProcess(ManagedProcess):
    name = "api"

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        namespace: str,
        env: dict[str, str],
        tokens_file: Path,
        port: int | None = None,
    ) -> None:
        super().__init__(workdir)
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.env = env
        self.tokens_file = tokens_file
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._spawn(
            [
                sys.executable,
                "-m",
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--namespace",
                self.namespace,
                "--kubeconfig",
                str(self.kubeconfig),
                "--tokens-file",
                str(self.tokens_file),
                "--migrate",
            ],
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )

        def ready() -> bool:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)

        wait_until(ready, 90, "the API", self.proc, self.log_path)
        return self


class LocalStack(Lifecycle):
    def __init__(
        self,
        *,
        kubeconfig: Path | None = None,
        namespace: str = "default",
        api_port: int | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="botsession-stack-"))
        self.use_cluster = kubeconfig
        self.namespace = namespace
        self.api_port = api_port
        self.metrics_port = metrics_port or free_port()
        self.token = secrets.token_urlsafe(24)
        self.plane: ControlPlane | None = None
        self.redis: RedisServer | None = None
        self.operator: OperatorProcess | None = None
        self.api: ApiProcess | None = None

    @property
    def kubeconfig(self) -> Path:
        if self.use_cluster is not None:
            return self.use_cluster
        assert self.plane is not None
        return self.plane.kubeconfig

    def start(self) -> Self:
        if self.use_cluster is None:
            self.plane = ControlPlane(self.workdir / "controlplane").start()
        crd = self.workdir / "botsessions.yaml"
        crd.write_text(render())
        install_crds(self.kubeconfig, crd)
        self.redis = RedisServer(workdir=self.workdir / "redis").start()
        tokens = self.workdir / "tokens.json"
        tokens.write_text(
            json.dumps([{"name": "local-admin", "token": self.token, "scopes": ["admin"]}])
        )
        tokens.chmod(0o600)
        env = {
            "BOTSESSION_REDIS_URL": self.redis.url,
            "BOTSESSION_DATABASE_URL": f"sqlite+aiosqlite:///{self.workdir / 'db.sqlite3'}",
            "BOTSESSION_METRICS_PORT": str(self.metrics_port),
            # one key for the operator and the API: their log lines' user fingerprints match
            "BOTSESSION_FINGERPRINT_KEY": secrets.token_urlsafe(32),
        }
        self.operator = OperatorProcess(
            self.kubeconfig, self.namespace, env, workdir=self.workdir / "operator"
        ).start()
        self.api = ApiProcess(
            self.workdir / "api",
            self.kubeconfig,
            self.namespace,
            {k: v for k, v in env.items() if k != "BOTSESSION_METRICS_PORT"},
            tokens,
            self.api_port,
        ).start()
        return self

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.api is not None
        request = urllib.request.Request(  # noqa: S310 - our own loopback API
            self.api.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            answer: dict[str, Any] = json.load(resp)
            return answer

    def demo(self, bot_id: str = "demo-bot") -> None:
        """Sessions in every phase, so the dashboard and kubectl show something real."""
        for user_id, reports in DEMO:
            for report in reports:
                self.request("POST", f"/v1/whatsapp/sessions/{bot_id}/{user_id}/report", report)

    def banner(self) -> str:
        assert self.api is not None
        api = self.api.url
        return "\n".join(
            [
                "botsession-operator is running locally.",
                f"  API:        {api}   (docs: {api}/docs, dashboard: {api}/dashboard)",
                f"  token:      {self.token}   (scope: admin)",
                f"  metrics:    http://127.0.0.1:{self.metrics_port}/metrics",
                f"  KUBECONFIG: {self.kubeconfig}",
                "",
                "Try:",
                f"  export KUBECONFIG={self.kubeconfig}",
                f"  kubectl get bs -n {self.namespace} -o wide",
                f"  curl -H 'Authorization: Bearer {self.token}' "
                f"{api}/v1/whatsapp/session-status/demo-bot",
                f"  curl -X POST -H 'Authorization: Bearer {self.token}' "
                "-H 'Content-Type: application/json' -d '{\"state\": \"connecting\"}' "
                f"{api}/v1/whatsapp/sessions/my-bot/my-user/report",
                "",
                "Ctrl-C stops everything and removes its data.",
            ]
        )

    def close(self) -> None:
        for part in (self.api, self.operator, self.redis):
            if part is not None:
                part.close()
        if self.plane is not None:
            self.plane.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
