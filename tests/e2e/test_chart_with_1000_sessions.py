"""1,000 BotSessions on the default install (sidecar, SQLite), written straight to the API
server as a bulk of hand-made objects and synced by the operator. Restarting the operator's
Pod resumes every one of them (botsession_handled_objects_total, read through a
port-forward) and reconciles a BotSession created meanwhile. `helm uninstall` keeps the
CRDs, the BotSessions and the fingerprint key; a reinstall resumes them all, gives a
BotSession written while no operator ran its first phase, and takes a report on a session
from before. Every time is recorded. The module's name sorts it after the other cluster
tests on purpose: its 1,000 objects then weigh on none of their measurements."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.clients import HostApi
from tests.e2e.conftest import Record
from tests.e2e.release import Release, synced
from tests.e2e.tour import expect, report
from tests.e2e.waiting import Stopwatch, poll

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(1800)]

COUNT = 1000
BOTS = 10  # bulk-0 .. bulk-9, 100 sessions each
HANDLED = "botsession_handled_objects_total"
CRDS = ("botsessions.botsession.dev", "kopfpeerings.kopf.dev")


def synced_count(release: Release, prefix: str) -> int:
    return sum(
        1
        for body in release.botsessions()
        if body["metadata"]["name"].startswith(prefix) and synced(body)
    )


def in_redis(release: Release) -> int:
    """The bulk sessions in Redis's per-bot indexes (`botsession:bot:<botId>`)."""
    redis = release.redis()
    return sum(int(redis.zcard(f"botsession:bot:bulk-{bot}")) for bot in range(BOTS))


@pytest.fixture(scope="module")
def thousand(sidecar: Release) -> dict[str, float]:
    """1,000 BotSessions created with 16 clients at once, then synced by the operator."""
    sidecar.wait_ready()
    clock = Stopwatch()

    def create(i: int) -> None:
        sidecar.create_botsession(f"bulk-{i:04d}", f"bulk-{i % BOTS}", f"user-{i:04d}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(COUNT)))
    created = clock()
    # Redis's per-bot indexes first (cheap to poll), then the BotSessions' statuses (a list
    # of 1,000 objects is a few MB for the API server to encode: polled less often)
    poll(lambda: in_redis(sidecar) >= COUNT, 900, f"{COUNT} sessions in Redis", 0.5)
    in_redis_at = clock()
    poll(lambda: synced_count(sidecar, "bulk-") >= COUNT, 300, f"{COUNT} synced", 3.0)
    return {
        "createdSeconds": created,
        "allInRedisSeconds": in_redis_at,
        "allSyncedSeconds": clock(),
    }


def operator_pod(release: Release) -> dict[str, Any]:
    pods = release.pods("operator")
    assert len(pods) == 1
    return pods[0]


def handled(release: Release) -> float:
    return release.metrics(operator_pod(release)["metadata"]["name"]).get(HANDLED, 0.0)


def test_a_restart_resumes_every_botsession(
    sidecar: Release, thousand: dict[str, float], record_figure: Record
) -> None:
    old = operator_pod(sidecar)["metadata"]
    present = len(sidecar.botsessions())
    clock = Stopwatch()
    sidecar.cluster.kubectl("-n", sidecar.namespace, "delete", "pod", old["name"], "--wait=false")
    sidecar.create_botsession("restart-new", "restart", "new")
    poll(
        lambda: sidecar.ready() and operator_pod(sidecar)["metadata"]["uid"] != old["uid"],
        300, "the operator's Pod back and Ready", 0.5,
    )  # fmt: skip
    ready = clock()
    first: dict[str, float] = {}  # what happened first, each timed when first seen

    def both() -> bool:
        if "reconciled" not in first and sidecar.synced_botsession("restart-new"):
            first["reconciled"] = clock()
        if "resumed" not in first and handled(sidecar) >= present:
            first["resumed"] = clock()
        return len(first) == 2

    poll(both, 300, f"restart-new synced and {present} BotSessions resumed", 0.5)
    assert sidecar.wait_synced("restart-new")["status"]["phase"] == "connecting"
    record_figure(
        "restart[1000]",
        {
            "botSessions": present,
            **thousand,
            "podReadySeconds": ready,
            "allResumedSeconds": first["resumed"],
            "newBotSessionReconciledSeconds": first["reconciled"],
        },
    )


def fingerprint_key(release: Release) -> str:
    path = f"/api/v1/namespaces/{release.namespace}/secrets/{release.fullname}-fingerprint"
    return str(release.cluster.api.get(path)["data"]["fingerprint-key"])


def connect_keeper(release: Release) -> str:
    """A session the API created and the operator synced: bot `keeper`, user `kim`."""
    api = HostApi(release.api_url())
    expect(report(api, release, "keeper", "kim", {"state": "connecting"}), 201, "keeper")
    expect(report(api, release, "keeper", "kim", {"state": "connected"}), 200, "keeper")
    found = release.find_botsession("keeper", "kim")
    assert found is not None
    name: str = found["metadata"]["name"]
    release.wait_synced(name)
    return name


def test_uninstall_keeps_them_and_a_reinstall_resumes_them(
    sidecar: Release, thousand: dict[str, float], record_figure: Record
) -> None:
    sidecar.wait_ready()
    keeper = connect_keeper(sidecar)
    key = fingerprint_key(sidecar)
    names = {body["metadata"]["name"] for body in sidecar.botsessions()}
    sidecar.uninstall()
    for crd in CRDS:
        assert sidecar.cluster.api.get_or_none(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}"
        ), crd
    assert {body["metadata"]["name"] for body in sidecar.botsessions()} == names
    sidecar.create_botsession("while-away", "away", "ann")  # no operator gives it a phase

    clock = Stopwatch()
    sidecar.install()
    installed = clock()
    poll(lambda: handled(sidecar) >= len(names) + 1, 300, "every BotSession resumed", 0.5)
    resumed = clock()
    assert sidecar.wait_synced("while-away")["status"]["phase"] == "connecting"
    assert fingerprint_key(sidecar) == key

    answer = expect(
        report(HostApi(sidecar.api_url()), sidecar, "keeper", "kim", {"state": "disconnected"}),
        200, "a report on a session from before the reinstall",
    )  # fmt: skip
    assert [(t["from"], t["to"]) for t in answer["transitions"]] == [("active", "inactive")]
    assert sidecar.wait_synced(keeper)["status"]["revision"] == 3
    figures = {"installedSeconds": installed, "allResumedSeconds": resumed}
    record_figure("reinstall[1000]", {"botSessions": len(names) + 1, **figures})
