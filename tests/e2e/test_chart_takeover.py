"""Two operator replicas (the `ha` install: kopf peering, a priority per StatefulSet
ordinal, a 10 s cleanup interval). The active one is found three ways that must agree: the
KopfPeering's status, the housekeeping lease in Redis, the botsession_sweep_leader metric.
Then it goes away twice: deleted (`kubectl delete pod`, a clean stop; the StatefulSet brings
it back) and frozen (SIGSTOP from the host, as a hung or partitioned operator looks to its
peer). Each time a new BotSession must be reconciled within 45 s (kopf's peering lifetime
is 30 s) and the sweep must run again; both times are measured and recorded."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sessions.domain.model import parse_time
from tests.e2e.conftest import Record
from tests.e2e.release import Release
from tests.e2e.waiting import Stopwatch, poll

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(1800)]

LEASE = "botsession:lock:housekeeping"
SWEEP_MARK = "botsession:sweep:last"
TARGET = 45.0  # seconds until a new BotSession is reconciled
SWEEP_LIMIT = 60.0  # the lease (30 s) lapses, then one tick and one cleanup interval


def peering_active(release: Release) -> str | None:
    """The live peer with the highest priority, as kopf decides; None until every operator
    Pod is a live peer (a Pod that just came back has not registered yet)."""
    path = f"/apis/kopf.dev/v1/namespaces/{release.namespace}/kopfpeerings/{release.fullname}"
    peers: dict[str, Any] = release.cluster.api.get(path).get("status") or {}
    now = datetime.now(UTC)
    alive = {
        name: info
        for name, info in peers.items()
        if parse_time(info["lastseen"]) + timedelta(seconds=int(info["lifetime"])) > now
    }
    if set(alive) != {p["metadata"]["name"] for p in release.pods("operator")}:
        return None
    return max(alive, key=lambda name: int(alive[name]["priority"]))


def lease_holder(release: Release) -> str | None:
    """The runner holding the housekeeping lease (its value is `<namespace>/<runner>:<token>`)."""
    value = release.redis().get(LEASE)
    return str(value).rsplit(":", 1)[0].partition("/")[2] if value else None


def sweep_leaders(release: Release) -> list[str]:
    pods = [p["metadata"]["name"] for p in release.pods("operator")]
    return [pod for pod in pods if release.metrics(pod).get("botsession_sweep_leader") == 1.0]


def active_operator(release: Release) -> str:
    def agreed() -> str | None:
        active = peering_active(release)
        both = lease_holder(release) == active and sweep_leaders(release) == [active]
        return active if active and both else None

    return poll(agreed, 90, "peering, lease and metric agree on the active operator", 1.0)


def operator_process(release: Release, pod: str) -> int:
    """The host PID of the operator process of `pod` in this cluster (its cgroup is under
    the cluster's own cgroup root, so another cluster's same-named Pod never matches)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"operator" not in argv or release.cluster.cgroup_root not in (
                (proc / "cgroup").read_text()
            ):
                continue
            if f"POD_NAME={pod}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    assert len(found) == 1, f"operator processes of {pod}: {found}"
    return found[0]


def sweep_after(release: Release, epoch_ms: float) -> bool:
    return int(release.redis().get(SWEEP_MARK) or 0) > epoch_ms


def takeover(
    release: Release, stop: Callable[[str], Callable[[], None]], tag: str
) -> dict[str, Any]:
    """Stop the active operator with `stop` (which returns how to undo it), create a
    BotSession, and time its reconcile and the next sweep."""
    active = active_operator(release)
    lease_before = release.redis().get(LEASE)
    since_ms = time.time() * 1000
    clock = Stopwatch()
    undo = stop(active)
    try:
        release.create_botsession(f"takeover-{tag}", "takeover", tag)
        release.wait_synced(f"takeover-{tag}", 120)
        reconciled = clock()
        poll(lambda: sweep_after(release, since_ms), 120, "the sweep ran again", 0.5)
        swept = clock()
        lease_after = release.redis().get(LEASE)
    finally:
        undo()
    release.wait_ready()
    assert lease_after != lease_before  # another process holds it now
    return {
        "stoppedActive": active,
        "leaseAfter": str(lease_after).rsplit(":", 1)[0].partition("/")[2],
        "newBotSessionReconciledSeconds": reconciled,
        "sweepRanAgainSeconds": swept,
        "allPodsReadySeconds": clock(),
    }


def delete_pod(release: Release) -> Callable[[str], Callable[[], None]]:
    def stop(pod: str) -> Callable[[], None]:
        release.cluster.kubectl("-n", release.namespace, "delete", "pod", pod, "--wait=false")
        return lambda: None

    return stop


def freeze(release: Release) -> Callable[[str], Callable[[], None]]:
    def stop(pod: str) -> Callable[[], None]:
        pid = operator_process(release, pod)
        os.kill(pid, signal.SIGSTOP)
        return lambda: os.kill(pid, signal.SIGCONT)

    return stop


def test_deleting_the_active_operator(ha: Release, record_figure: Record) -> None:
    ha.wait_ready()
    figures = takeover(ha, delete_pod(ha), "deleted")
    record_figure("takeover[delete]", figures)
    assert figures["newBotSessionReconciledSeconds"] <= TARGET
    assert figures["sweepRanAgainSeconds"] <= SWEEP_LIMIT


def test_freezing_the_active_operator(ha: Release, record_figure: Record) -> None:
    ha.wait_ready()
    figures = takeover(ha, freeze(ha), "frozen")
    record_figure("takeover[freeze]", figures)
    assert figures["leaseAfter"] != figures["stoppedActive"]  # the standby swept
    assert figures["newBotSessionReconciledSeconds"] <= TARGET
    assert figures["sweepRanAgainSeconds"] <= SWEEP_LIMIT
