"""`helm install` on the real local cluster, as users install it: the default values
(sidecar API, SQLite) and api.mode=deployment with PostgreSQL. Every Pod becomes Ready, the
schema is migrated once, and the README's five-minute tour passes both through a
port-forward from the host and through the API's Service from a Pod inside the cluster."""

from __future__ import annotations

import pytest

from sessions.adapters.sql.migrate import head_revision
from tests.e2e.clients import HostApi, InClusterClient
from tests.e2e.release import MIGRATED, Release, pod_ready
from tests.e2e.tour import run_tour

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def containers(release: Release) -> dict[str, list[str]]:
    return {
        p["metadata"]["name"]: [c["name"] for c in p["spec"]["containers"]] for p in release.pods()
    }


def test_every_pod_becomes_ready(release: Release) -> None:
    name = release.fullname
    if release.api_mode == "sidecar":
        assert containers(release) == {f"{name}-0": ["operator", "api"]}
    else:
        layout = containers(release)
        operators = {k: v for k, v in layout.items() if not k.startswith(f"{name}-api-")}
        assert operators == {f"{name}-0": ["operator"], f"{name}-1": ["operator"]}
        assert sorted(v for k, v in layout.items() if k not in operators) == [["api"], ["api"]]
    everything = release.cluster.api.get(f"/api/v1/namespaces/{release.namespace}/pods")
    assert all(pod_ready(p) for p in everything["items"])  # Redis and PostgreSQL too


def test_the_schema_is_migrated_once(release: Release) -> None:
    lines = [
        line for text in release.install_logs.values() for line in text.splitlines()
        if MIGRATED in line
    ]  # fmt: skip
    assert len(lines) == 1, lines
    assert f"migrated from empty to {head_revision()}" in lines[0]
    assert release.sql("SELECT version_num FROM alembic_version") == [[head_revision()]]


def test_the_tour_through_a_port_forward(release: Release) -> None:
    run_tour(HostApi(release.api_url()), release, bot="tour-host")


def test_the_tour_from_inside_the_cluster(release: Release, in_cluster: InClusterClient) -> None:
    run_tour(in_cluster.api(release.service_url), release, bot="tour-pod")
