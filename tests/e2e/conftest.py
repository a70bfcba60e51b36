"""The cluster tests' shared fixtures: one real local cluster (devstack.cluster) per test run
with the project's, Redis's and PostgreSQL's images imported, a client Pod inside it, and
two installs of the chart that every cluster test module uses:

- `sidecar`: the default values (the API in the operator's Pod, SQLite on a volume), in
  namespace e2e-sidecar; installed first, so it owns the CRDs (as a first install does);
- `ha`: api.mode=deployment with PostgreSQL, two operator replicas and a 10 s cleanup
  interval (the takeover test watches the sweep), in e2e-ha; it leaves the CRDs to `sidecar`.

Each runs with its own Redis and PostgreSQL Pods. Needs root, as the cluster does."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack.cluster import Cluster, services
from devstack.image import BuiltImage, postgres_image, project_image, redis_image
from tests.e2e.clients import InClusterClient
from tests.e2e.figures import Figures
from tests.e2e.release import MIGRATED, Release, deploy_stores
from tests.e2e.waiting import poll

Record = Callable[[str, dict[str, Any]], None]


@pytest.fixture(scope="session")
def images() -> dict[str, BuiltImage]:
    """Built once and cached outside the repository (devstack.image), keyed by content."""
    return {"project": project_image(), "redis": redis_image(), "postgres": postgres_image()}


@pytest.fixture(scope="session")
def cluster(images: dict[str, BuiltImage]) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the local cluster needs root (CI runs as root)")
    with Cluster() as running:
        for image in images.values():
            running.import_image(image.archive)
        yield running


@pytest.fixture(scope="session")
def in_cluster(cluster: Cluster, images: dict[str, BuiltImage]) -> InClusterClient:
    return InClusterClient(cluster, images["project"]).start()


def _migration_logged(release: Release) -> dict[str, str] | None:
    logs = release.operator_logs()
    return logs if any(MIGRATED in text for text in logs.values()) else None


def _install(release: Release) -> Release:
    """Install and keep the operators' first logs (the migration is in one of them)."""
    release.install()
    release.install_logs = poll(
        lambda: _migration_logged(release), 60, f"the migration in {release.name}'s logs"
    )
    return release


@pytest.fixture(scope="session")
def sidecar(cluster: Cluster, images: dict[str, BuiltImage]) -> Release:
    """The chart's default values (only the image and API tokens are set)."""
    namespace = "e2e-sidecar"
    password = deploy_stores(cluster, namespace, images)
    return _install(Release(cluster, namespace, "sidecar", images["project"], {}, password))


@pytest.fixture(scope="session")
def ha(cluster: Cluster, images: dict[str, BuiltImage], sidecar: Release) -> Release:
    """Production-like: API Deployment, PostgreSQL, an active/standby operator pair.
    Installed after `sidecar`, whose release owns the CRDs."""
    namespace = "e2e-ha"
    password = deploy_stores(cluster, namespace, images)
    values = {
        "api": {"mode": "deployment"},
        "operator": {"replicas": 2},
        "database": {"url": services.postgres_url(namespace, password)},
        "settings": {"cleanupInterval": "10s"},
        "crds": {"install": False},
    }
    return _install(Release(cluster, namespace, "ha", images["project"], values, password))


@pytest.fixture(params=["sidecar", "ha"])
def release(request: pytest.FixtureRequest) -> Release:
    """Each install in turn, rolled out and Ready (an earlier test may have restarted Pods)."""
    chosen: Release = request.getfixturevalue(request.param)
    chosen.wait_ready()
    return chosen


@pytest.fixture(scope="session")
def figure_store() -> Figures:
    return Figures.from_environment()


@pytest.fixture
def record_figure(figure_store: Figures, capsys: pytest.CaptureFixture[str]) -> Record:
    """record_figure(name, values): print it on an E2E-FIGURES line and keep it."""

    def record(name: str, values: dict[str, Any]) -> None:
        with capsys.disabled():
            figure_store.record(name, values, print)

    return record
