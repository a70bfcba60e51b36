"""Smoke test of the real local cluster (devstack.cluster) and the images built without
Docker (devstack.image): the project's image agrees with the Dockerfile and runs as a
non-root Pod with a read-only root filesystem; Pods resolve Service names and reach the
API server through the `kubernetes` Service with their token and TLS verified; the host
reaches a Service through a forwarded port; and stopping leaves nothing on the host.
Needs root (namespaces, cgroups), as CI has. The cluster and the images are the run's shared
ones (tests/e2e/conftest.py); the last test starts a cluster of its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.cluster import Cluster, services
from devstack.image import BuiltImage, check_against_dockerfile

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1800),  # a cold run builds the images (debootstrap) first
    pytest.mark.skipif(os.geteuid() != 0, reason="the local cluster needs root"),
]

IN_POD = """
import json, os, socket, ssl, urllib.request
print("uid", os.getuid(), os.getgid())
print("dns", socket.gethostbyname("kubernetes.default"))
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
req = urllib.request.Request("https://kubernetes.default.svc/version",
    headers={"Authorization": "Bearer " + open(sa + "/token").read()})
print("version", json.load(urllib.request.urlopen(req, context=ctx))["gitVersion"])
try:
    open("/probe", "w")
except OSError as exc:
    print("root filesystem", exc.strerror)
"""


def run_pod(cluster: Cluster, name: str, image: str, **container: Any) -> str:
    """Run a Pod to completion as the chart runs its containers; return its log."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    **container,
                }
            ],
        },
    }
    manifest = cluster.workdir / f"{name}.json"
    manifest.write_text(json.dumps(pod))
    cluster.kubectl("apply", "-f", str(manifest))
    cluster.kubectl(
        "wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "--timeout=120s"
    )
    return cluster.kubectl("logs", f"pod/{name}").stdout


def test_the_image_agrees_with_the_dockerfile(images: dict[str, BuiltImage]) -> None:
    assert check_against_dockerfile(images["project"]) == []


def test_the_node_is_ready_with_dns(cluster: Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert [n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes] == ["v1.36.3"]
    dns = cluster.kubectl("-n", "kube-system", "get", "endpointslices", "-o", "json").stdout
    assert "10.88." in dns  # CoreDNS runs as a Pod behind kube-dns


def test_each_entrypoint_answers_in_a_pod(cluster: Cluster, images: dict[str, BuiltImage]) -> None:
    log = run_pod(cluster, "botsession-help", images["project"].name, args=["--help"])
    assert "usage: botsession" in log


def test_a_pod_resolves_names_and_reaches_the_api_server(
    cluster: Cluster, images: dict[str, BuiltImage]
) -> None:
    log = run_pod(cluster, "in-cluster", images["project"].name, command=["python3", "-c", IN_POD])
    assert "uid 10001 10001" in log
    assert "dns 10.96.0.1" in log
    assert "version v1.36.3" in log
    assert "root filesystem Read-only file system" in log


def test_the_host_reaches_a_service(cluster: Cluster, images: dict[str, BuiltImage]) -> None:
    manifest = cluster.workdir / "redis.json"
    items = services.redis("default", images["redis"].name)
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    cluster.kubectl("apply", "-f", str(manifest))
    cluster.kubectl("rollout", "status", "deployment/redis", "--timeout=120s")
    forward = cluster.forward_service("default", "redis", services.REDIS_PORT)
    with socket.create_connection(("127.0.0.1", forward.port), timeout=10) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64).startswith(b"+PONG")


def host_state() -> dict[str, str]:
    """What the node must not change on the host."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    tunables = (
        "vm/overcommit_memory",
        "kernel/panic",
        "kernel/panic_on_oops",
        "net/ipv4/ip_forward",
    )
    return {
        "mounts": Path("/proc/self/mounts").read_text(),
        "iptables": run("iptables-save"),
        "links": run("ip", "-o", "link"),
        "addresses": run("ip", "-o", "addr"),
        "routes": run("ip", "route"),
        "hostname": socket.gethostname(),
        **{t: Path("/proc/sys", t).read_text() for t in tunables},
    }


def cmdline(pid: Path) -> str:
    try:
        return (pid / "cmdline").read_bytes().decode(errors="replace")
    except OSError:  # gone meanwhile
        return ""


def test_stopping_leaves_nothing(images: dict[str, BuiltImage]) -> None:
    before = host_state()
    with Cluster() as running:
        running.import_image(images["redis"].archive)
        workdir, root = running.workdir, running.cgroup_root
        run_pod(running, "done", images["redis"].name, command=["true"])
        assert host_state() == before  # not even while it runs
    time.sleep(0.5)
    assert not workdir.exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{root}"))
    assert [pid for pid in Path("/proc").glob("[0-9]*") if str(workdir) in cmdline(pid)] == []
    assert host_state() == before
