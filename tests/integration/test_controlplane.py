"""The local control plane is a real Kubernetes API server: kubectl, helm and the CRD."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from devstack.controlplane import BIN_ENV, ControlPlane
from devstack.kubectl import helm, kubectl
from devstack.process import DevstackError

pytestmark = pytest.mark.integration

SESSION = """
apiVersion: botsession.dev/v1alpha1
kind: BotSession
metadata:
  name: {name}
  namespace: default
spec:
  botId: {bot}
  userId: {user}
  phoneNumber: "4915112345678"
  displayName: Jane
  sessionId: session_123
"""


def apply(plane: ControlPlane, manifest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*kubectl_argv(plane), "apply", "-f", "-"],
        input=manifest,
        capture_output=True,
        text=True,
        check=False,
    )


def kubectl_argv(plane: ControlPlane) -> list[str]:
    from devstack.kubectl import kubectl_binary

    return [kubectl_binary(), "--kubeconfig", str(plane.kubeconfig)]


def test_version_is_the_real_release(controlplane: ControlPlane) -> None:
    version = json.loads(controlplane.apiserver.get("/version"))
    assert version["gitVersion"] == "v1.36.3"
    assert (version["major"], version["minor"]) == ("1", "36")
    out = kubectl(controlplane.kubeconfig, "version", "-o", "json").stdout
    assert json.loads(out)["serverVersion"]["gitVersion"] == "v1.36.3"


def test_helm_talks_to_the_server(controlplane: ControlPlane) -> None:
    assert helm(controlplane.kubeconfig, "version", "--short").stdout.startswith("v3.22.0")
    listed = helm(controlplane.kubeconfig, "list", "--all-namespaces", "-o", "json")
    assert json.loads(listed.stdout) == []
    # a broken server address fails: the list above really reached the API server
    bad = controlplane.workdir / "bad-kubeconfig"
    bad.write_text(
        controlplane.kubeconfig.read_text().replace(controlplane.url, "https://127.0.0.1:1")
    )
    assert helm(bad, "list", check=False).returncode != 0


def test_kubectl_get_botsessions_and_bs_print_the_columns(controlplane: ControlPlane) -> None:
    created = apply(controlplane, SESSION.format(name="columns", bot="bot-1", user="u-1"))
    assert created.returncode == 0, created.stderr
    status = {
        "status": {
            "phase": "connecting",
            "reason": "Created",
            "revision": 1,
            "lastSeen": "2031-01-01T00:00:00Z",
            "expiresAt": "2031-01-02T00:00:00Z",
        }
    }
    kubectl(
        controlplane.kubeconfig,
        "patch",
        "botsession",
        "columns",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    for resource in ("botsessions", "bs", "chatbot"):
        table = kubectl(controlplane.kubeconfig, "get", resource).stdout.splitlines()
        assert table[0].split() == [
            "NAME",
            "STATUS",
            "BOT",
            "USER",
            "LAST",
            "SEEN",
            "EXPIRES",
            "AGE",
        ]
        row = next(line.split() for line in table[1:] if line.startswith("columns"))
        assert row[:4] == ["columns", "connecting", "bot-1", "u-1"]
    wide = kubectl(controlplane.kubeconfig, "get", "bs", "columns", "-o", "wide").stdout
    header, row_line = wide.splitlines()
    assert header.split()[-4:] == ["REASON", "REVISION", "SESSION", "SYNCED"]
    # no operator runs here, so the Synced column is still empty
    assert row_line.split()[-3:] == ["Created", "1", "session_123"]


def test_schema_refuses_bad_specs(controlplane: ControlPlane) -> None:
    bad_id = apply(controlplane, SESSION.format(name="bad", bot="a:b", user="u"))
    assert bad_id.returncode != 0
    assert "spec.botId" in bad_id.stderr
    bad_phone = apply(
        controlplane,
        SESSION.format(name="bad2", bot="b", user="u").replace("4915112345678", "+49 151"),
    )
    assert "spec.phoneNumber" in bad_phone.stderr


def test_bot_and_user_are_immutable(controlplane: ControlPlane) -> None:
    assert apply(controlplane, SESSION.format(name="immut", bot="b", user="u")).returncode == 0
    changed = apply(controlplane, SESSION.format(name="immut", bot="other", user="u"))
    assert changed.returncode != 0
    assert "immutable" in changed.stderr


def test_stop_leaves_nothing_running() -> None:
    plane = ControlPlane()
    with plane:
        pids = [plane.etcd.proc.pid, plane.apiserver.proc.pid]  # type: ignore[union-attr]
        workdir = plane.workdir
    assert not workdir.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_missing_binary_is_reported_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BIN_ENV, str(tmp_path))
    with pytest.raises(DevstackError, match=r"etcd is missing from .*build\.sh"):
        ControlPlane().start()
