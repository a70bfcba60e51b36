"""The chart's probes, resource limits and security context hold in the real Pods: each
container's spec is what values.yaml sets, and inside the running container the process is
uid/gid 10001 without capabilities or privilege escalation, under seccomp, with a
read-only root filesystem (a write to / fails, /tmp works), and the memory limit is the
cgroup's. The liveness, readiness and metrics endpoints answer from another Pod, and the
kubelet's own probes keep the Pods Ready without restarts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.clients import InClusterClient
from tests.e2e.release import CHART_VALUES, Release

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

MEBIBYTE = 1024 * 1024

# What the container's main process (PID 1) and a write attempt show, as JSON.
INSIDE = """
import errno, json, os
def attempt(path):
    try:
        with open(path, "w") as handle:
            handle.write("x")
        os.remove(path)
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
status = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines())
limit = ""
for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    if os.path.exists(path):
        limit = open(path).read().strip()
        break
print(json.dumps({
    "uid": status["Uid"].split(), "gid": status["Gid"].split(),
    "capEff": status["CapEff"].strip(), "noNewPrivs": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(), "root": attempt("/probe"),
    "tmp": attempt("/tmp/probe"), "memoryLimit": limit,
}))
"""

# GET each URL from the client Pod; [status, body] for each.
FETCH = """
import json, sys, urllib.error, urllib.request
out = []
for url in json.loads(sys.argv[1]):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            out.append([r.status, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode()])
print(json.dumps(out))
"""


def containers(release: Release) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(pod, c) for pod in release.pods() for c in pod["spec"]["containers"]]


def resources_of(container: str) -> Any:
    return CHART_VALUES["operator" if container == "operator" else "api"]["resources"]


def test_the_specs_are_the_charts(release: Release) -> None:
    for pod, container in containers(release):
        assert pod["spec"]["securityContext"] == CHART_VALUES["podSecurityContext"]
        assert container["securityContext"] == CHART_VALUES["securityContext"]
        assert container["resources"] == resources_of(container["name"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        if container["name"] == "api":
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_inside_the_running_containers(release: Release) -> None:
    for pod, container in containers(release):
        seen = json.loads(
            release.exec(pod["metadata"]["name"], container["name"], "python3", "-c", INSIDE)
        )
        where = f"{pod['metadata']['name']}/{container['name']}"
        assert seen["uid"] == ["10001"] * 4 and seen["gid"] == ["10001"] * 4, where
        assert int(seen["capEff"], 16) == 0, where
        assert seen["noNewPrivs"] == "1", where
        assert seen["seccomp"] == "2", where  # RuntimeDefault: a filter
        assert seen["root"] == "EROFS", where
        assert seen["tmp"] == "ok", where  # the emptyDir the chart mounts
        limit = resources_of(container["name"])["limits"]["memory"]
        assert int(seen["memoryLimit"]) == int(limit.removesuffix("Mi")) * MEBIBYTE, where


def endpoints(release: Release) -> list[str]:
    urls = []
    for pod, container in containers(release):
        ip = pod["status"]["podIP"]
        if container["name"] == "operator":
            urls += [
                f"http://{ip}:{CHART_VALUES['operator']['livenessPort']}/healthz",
                f"http://{ip}:{CHART_VALUES['operator']['metricsPort']}/metrics",
            ]
        else:
            port = CHART_VALUES["api"]["port"]
            urls += [f"http://{ip}:{port}/healthz", f"http://{ip}:{port}/readyz"]
    return urls


def test_the_probes_answer(release: Release, in_cluster: InClusterClient) -> None:
    urls = endpoints(release)
    answers = json.loads(in_cluster.python(FETCH, json.dumps(urls)))
    assert [status for status, _ in answers] == [200] * len(urls), answers
    for url, (_, body) in zip(urls, answers, strict=True):
        if url.endswith("/readyz"):
            checks = json.loads(body)["checks"]
            assert all(check["ok"] for check in checks.values()), checks
        if url.endswith("/metrics"):
            assert "botsession_handled_objects_total" in body
    for pod in release.pods():
        statuses = pod["status"]["containerStatuses"]
        assert all(s["ready"] and s["restartCount"] == 0 for s in statuses), statuses
