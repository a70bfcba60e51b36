"""The Kubernetes client against a real kube-apiserver: the kubeconfigs that managed clusters
hand out (an exec plugin whose token expires, a CA file beside the kubeconfig), kopf logging
in through the same library, and a watch that is given up."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.controlplane import ControlPlane
from sessions.adapters.kubernetes.client import (
    CustomObjects,
    KubeClient,
    load_config,
    load_kubeconfig,
)
from sessions.adapters.kubernetes.crd import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.integration

# An exec credential plugin as EKS/GKE/AKS kubeconfigs use one (`aws eks get-token`, ...): it
# prints an ExecCredential whose token expires after TTL seconds and counts its runs.
PLUGIN = """#!{python}
import json, sys
from datetime import datetime, timedelta, timezone
runs = {runs!r}
with open(runs, "a") as out:
    out.write("run\\n")
expires = datetime.now(timezone.utc) + timedelta(seconds={ttl})
print(json.dumps({{
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {{"token": {token!r}, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}},
}}))
"""


def exec_kubeconfig(plane: ControlPlane, directory: Path, ttl: int) -> tuple[Path, Path]:
    """A kubeconfig whose user is an exec plugin; returns it and the plugin's run log."""
    runs = directory / "runs.log"
    plugin = directory / "get-token"
    plugin.write_text(
        PLUGIN.format(python=sys.executable, runs=str(runs), ttl=ttl, token=plane.token)
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    config = plane.kubeconfig_dict()
    config["users"] = [
        {
            "name": "admin",
            "user": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": str(plugin),
                    "interactiveMode": "Never",
                }
            },
        }
    ]
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path, runs


def runs_of(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


async def list_one(client: KubeClient) -> dict[str, Any]:
    return await CustomObjects(client, GROUP, VERSION, "default", PLURAL).list(limit=1)


async def test_an_exec_plugin_token_is_used_and_renewed_when_it_expires(
    controlplane: ControlPlane, tmp_path: Path
) -> None:
    path, runs = exec_kubeconfig(controlplane, tmp_path, ttl=1)
    client = KubeClient(load_config(str(path)))
    try:
        assert (await list_one(client))["kind"] == "BotSessionList"
        first = runs_of(runs)
        assert first >= 1
        await asyncio.sleep(2.5)  # the token has expired: the next call runs the plugin again
        assert (await list_one(client))["kind"] == "BotSessionList"
        assert runs_of(runs) > first
    finally:
        await client.close()


def test_kopf_logs_in_through_the_same_library_with_the_exec_plugin(
    controlplane: ControlPlane, tmp_path: Path
) -> None:
    """In a process of its own: the library reads $KUBECONFIG when it is imported."""
    path, runs = exec_kubeconfig(controlplane, tmp_path, ttl=600)
    script = (
        "import json, logging, kopf\n"
        "from controller.handlers import login\n"
        "info = login(logger=logging.getLogger('t'), settings=kopf.OperatorSettings(), memo=None)\n"
        "print(json.dumps([info.server, info.token]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "KUBECONFIG": str(path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [controlplane.url, controlplane.token]
    assert runs_of(runs) >= 1


async def test_a_relative_certificate_authority_is_read_beside_the_kubeconfig(
    controlplane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "kube"
    directory.mkdir()
    (directory / "ca.crt").write_bytes(controlplane.apiserver.serving_ca())
    config = controlplane.kubeconfig_dict()
    cluster = config["clusters"][0]["cluster"]
    del cluster["certificate-authority-data"]
    cluster["certificate-authority"] = "ca.crt"
    (directory / "config").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # not the kubeconfig's directory
    client = KubeClient(load_kubeconfig(directory / "config"))
    try:
        assert (await list_one(client))["kind"] == "BotSessionList"
    finally:
        await client.close()


CLIENT_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_skipping_tls_verification_keeps_the_client_certificate(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True},
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": base64.b64encode(CLIENT_CERT.encode()).decode(),
                    "client-key-data": base64.b64encode(b"key").decode(),
                },
            }
        ],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    connection = load_kubeconfig(path)
    configuration = connection.configuration
    assert connection.namespace == "ns"
    assert configuration.verify_ssl is False
    assert configuration.cert_file is not None
    assert Path(configuration.cert_file).read_text() == CLIENT_CERT


def test_the_client_key_written_for_inline_key_data_is_deleted_at_exit(
    controlplane: ControlPlane, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    config = controlplane.kubeconfig_dict()
    config["users"][0]["user"] = {
        "token": controlplane.token,
        "client-key-data": base64.b64encode(b"secret key").decode(),
        "client-certificate-data": base64.b64encode(CLIENT_CERT.encode()).decode(),
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from sessions.adapters.kubernetes.client import load_kubeconfig\n"
        "c = load_kubeconfig(Path(sys.argv[1])).configuration\n"
        "print(json.dumps([c.key_file, Path(c.key_file).exists()]))\n"
    )
    env = {**os.environ, "TMPDIR": str(temp)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    key_file, existed = json.loads(done.stdout)
    assert existed and key_file.startswith(str(temp))
    assert not Path(key_file).exists()


async def test_a_watch_given_up_ends_its_reading_thread_at_once(
    controlplane: ControlPlane,
) -> None:
    client = KubeClient(load_kubeconfig(controlplane.kubeconfig))
    objects = CustomObjects(client, GROUP, VERSION, "default", PLURAL)

    async def watch() -> None:
        async for _ in objects.watch(240):
            pass

    def readers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "kubernetes-watch"]

    before = set(readers())  # other tests' watches may still be ending
    try:
        task = asyncio.create_task(watch())
        await asyncio.sleep(1.0)
        (reader,) = set(readers()) - before  # waiting for an event that does not come
        started = datetime.now(UTC)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(100):  # the thread is not awaitable: poll it
            if not reader.is_alive():
                break
            await asyncio.sleep(0.05)
        assert not reader.is_alive()
        assert datetime.now(UTC) - started < timedelta(seconds=2)
    finally:
        await client.close()


async def test_a_watch_given_up_while_it_connects_leaves_no_reading_thread(
    controlplane: ControlPlane,
) -> None:
    """Cancelled before the API server answered (the index's early watch is, when its
    namespace is small): the thread then has no response to be interrupted through, and
    used to wait for the first event or the server's timeout (minutes) on a quiet watch."""
    client = KubeClient(load_kubeconfig(controlplane.kubeconfig))
    real = client.custom.list_namespaced_custom_object

    def slow_to_connect(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return real(*args, **kwargs)

    def readers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "kubernetes-watch"]

    before = len(readers())

    async def watch() -> None:
        changes = client.watch(slow_to_connect, GROUP, VERSION, "default", PLURAL, timeout=240)
        async for _ in changes:
            pass

    try:
        task = asyncio.create_task(watch())
        await asyncio.sleep(0.1)  # the thread is connecting
        assert len(readers()) == before + 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(60):
            if len(readers()) == before:
                break
            await asyncio.sleep(0.05)
        assert len(readers()) == before
    finally:
        await client.close()
