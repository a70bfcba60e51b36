"""A Helm release of the chart on the local cluster, in a namespace of its own with its own
Redis (and PostgreSQL) Pods: install, upgrade, uninstall, wait until rolled out, and read
what it runs and stores (Pods, logs, metrics, BotSessions, Redis keys, database rows)."""

from __future__ import annotations

import copy
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from devstack.cluster import Cluster, services
from devstack.cluster.forward import Forward
from devstack.image import BuiltImage
from tests.e2e.waiting import poll

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "botsession-operator"
CHART_VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
GROUP_PATH = "/apis/botsession.dev/v1alpha1"
MIGRATED = "database schema migrated"

# Reads one SQLite query's rows as JSON, in the operator's container (read-only open).
SQLITE_QUERY = """
import json, sqlite3, sys
db = sqlite3.connect("file:/data/botsession.sqlite3?mode=ro", uri=True)
print(json.dumps([[str(v) for v in row] for row in db.execute(sys.argv[1])]))
"""


@dataclass(frozen=True)
class Tokens:
    """The three kinds of caller of docs/operations.md: the frontend reads, the bot runner
    reports, ops administers."""

    frontend: str
    bot_runner: str
    ops: str

    @classmethod
    def generate(cls) -> Tokens:
        return cls(secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(16))

    def values(self) -> list[dict[str, Any]]:
        return [
            {"name": "frontend", "token": self.frontend, "scopes": ["read"]},
            {"name": "bot-runner", "token": self.bot_runner, "scopes": ["report"]},
            {"name": "ops", "token": self.ops, "scopes": ["admin"]},
        ]


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A deep merge of Helm values (extra wins)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready and not pod["metadata"].get("deletionTimestamp")


def synced(botsession: dict[str, Any] | None) -> bool:
    """The operator has copied the BotSession's current revision to Redis and the database."""
    status = (botsession or {}).get("status") or {}
    return bool(status.get("phase")) and status.get("syncedRevision") == status.get("revision")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format, unlabelled and labelled series alike, by their full name."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def deploy_stores(cluster: Cluster, namespace: str, images: dict[str, BuiltImage]) -> str:
    """Redis and PostgreSQL Pods behind Services `redis` and `postgresql` in the namespace
    (the names the chart's values use); returns the PostgreSQL password."""
    password = secrets.token_hex(12)
    items = services.redis(namespace, images["redis"].name) + services.postgres(
        namespace, images["postgres"].name, password
    )
    manifest = cluster.workdir / f"stores-{namespace}.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-f", str(manifest))
    for name in ("redis", "postgresql"):
        cluster.kubectl(
            "-n", namespace, "rollout", "status", f"deployment/{name}", "--timeout=110s"
        )
    return password


class Release:
    """One `helm install` of the chart; `values` are the user's values (the image and the
    tokens are added)."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        name: str,
        image: BuiltImage,
        values: dict[str, Any],
        postgres_password: str,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.tokens = Tokens.generate()
        self.postgres_password = postgres_password
        self.values = merged(
            {
                "image": {"repository": image.repository, "tag": image.tag},
                "auth": {"tokens": self.tokens.values()},
            },
            merged({"image": {"pullPolicy": "Never"}}, values),
        )
        self._forwards: dict[tuple[str, int], Forward] = {}
        self.install_logs: dict[str, str] = {}  # the operators' logs right after install

    # --- names -----------------------------------------------------------------------

    @property
    def fullname(self) -> str:
        return self.name if "botsession" in self.name else f"{self.name}-botsession"

    @property
    def api_mode(self) -> str:
        return str(self.effective("api", "mode"))

    @property
    def operator_replicas(self) -> int:
        return int(self.effective("operator", "replicas"))

    @property
    def uses_postgres(self) -> bool:
        return str(self.effective("database", "url")).startswith("postgresql")

    @property
    def image(self) -> str:
        return f"{self.values['image']['repository']}:{self.values['image']['tag']}"

    @property
    def service_url(self) -> str:
        """The API's Service as Pods in the cluster reach it."""
        return f"http://{self.fullname}-api.{self.namespace}.svc"

    def effective(self, *path: str) -> Any:
        """A value as the chart sees it: ours, else the chart's default."""
        value: Any = merged(CHART_VALUES, self.values)
        for key in path:
            value = value[key]
        return value

    def service_account(self, component: str) -> str:
        return f"{self.fullname}-{component}"

    # --- helm --------------------------------------------------------------------------

    def _values_file(self) -> Path:
        path = self.cluster.workdir / f"values-{self.namespace}-{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.values))
        return path

    def install(self, timeout: float = 300) -> None:
        self.cluster.helm(
            "install", self.name, str(CHART), "-n", self.namespace, "-f", str(self._values_file())
        )
        self.wait_ready(timeout)

    def upgrade(self, values: dict[str, Any], timeout: float = 300) -> None:
        self.values = merged(self.values, values)
        self.cluster.helm(
            "upgrade", self.name, str(CHART), "-n", self.namespace, "-f", str(self._values_file())
        )
        self.wait_ready(timeout)

    def uninstall(self, timeout: float = 120) -> None:
        self.cluster.helm("uninstall", self.name, "-n", self.namespace)
        poll(lambda: not self.pods(), timeout, f"the Pods of {self.name} gone")

    # --- what runs ---------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        return self.cluster.api.get(path)

    def pods(self, component: str | None = None) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={self.name}"
        if component:
            selector += f",app.kubernetes.io/component={component}"
        path = f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={selector}"
        pods: list[dict[str, Any]] = self._get(path)["items"]
        return sorted(pods, key=lambda p: str(p["metadata"]["name"]))

    def expected_pods(self) -> int:
        api = int(self.effective("api", "replicas")) if self.api_mode == "deployment" else 0
        return self.operator_replicas + api

    def _workloads_done(self) -> bool:
        ns = self.namespace
        sts = self._get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/{self.fullname}")
        spec, status = sts["spec"], sts.get("status", {})
        if not (
            status.get("observedGeneration") == sts["metadata"]["generation"]
            and status.get("readyReplicas") == spec["replicas"]
            and status.get("updatedReplicas") == spec["replicas"]
            and status.get("currentRevision") == status.get("updateRevision")
        ):
            return False
        if self.api_mode != "deployment":
            return True
        dep = self._get(f"/apis/apps/v1/namespaces/{ns}/deployments/{self.fullname}-api")
        spec, status = dep["spec"], dep.get("status", {})
        return bool(
            status.get("observedGeneration") == dep["metadata"]["generation"]
            and status.get("replicas") == spec["replicas"]
            and status.get("updatedReplicas") == spec["replicas"]
            and status.get("readyReplicas") == spec["replicas"]
            and status.get("availableReplicas") == spec["replicas"]
        )

    def ready(self) -> bool:
        """Rolled out: every workload at its newest revision, exactly the expected Pods,
        all Ready, running this release's image, none terminating."""
        if not self._workloads_done():
            return False
        pods = self.pods()
        images = {c["image"] for p in pods for c in p["spec"]["containers"]}
        return (
            len(pods) == self.expected_pods()
            and all(map(pod_ready, pods))
            and (images == {self.image})
        )

    def wait_ready(self, timeout: float = 300) -> None:
        poll(self.ready, timeout, f"release {self.name} rolled out and Ready", interval=0.5)

    def logs(self, pod: str, container: str) -> str:
        return self.cluster.kubectl("-n", self.namespace, "logs", pod, "-c", container).stdout

    def operator_logs(self) -> dict[str, str]:
        return {
            p["metadata"]["name"]: self.logs(p["metadata"]["name"], "operator")
            for p in self.pods("operator")
        }

    def exec(self, pod: str, container: str, *argv: str) -> str:
        return self.cluster.kubectl(
            "-n", self.namespace, "exec", pod, "-c", container, "--", *argv
        ).stdout

    def metrics(self, pod: str) -> dict[str, float]:
        """The operator's metrics, through a port-forward to the Pod."""
        body = self._get(f"/api/v1/namespaces/{self.namespace}/pods/{pod}")
        key = (body["status"]["podIP"], int(self.effective("operator", "metricsPort")))
        if key not in self._forwards:  # one per address: a restarted Pod gets a new one
            self._forwards[key] = self.cluster.forward(*key)
        reply = httpx.get(f"http://{self._forwards[key].address}/metrics", timeout=10)
        reply.raise_for_status()
        return parse_metrics(reply.text)

    # --- the API from the host ---------------------------------------------------------

    def _forward(self, service: str, port: int) -> Forward:
        """One forward per Service address (a reinstall gives the Service a new one)."""
        body = self._get(f"/api/v1/namespaces/{self.namespace}/services/{service}")
        key = (body["spec"]["clusterIP"], port)
        if key not in self._forwards:
            self._forwards[key] = self.cluster.forward_service(self.namespace, service, port)
        return self._forwards[key]

    def api_url(self) -> str:
        port = int(self.effective("api", "service", "port"))
        return f"http://{self._forward(f'{self.fullname}-api', port).address}"

    # --- what it stores ----------------------------------------------------------------

    def botsessions(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._get(
            f"{GROUP_PATH}/namespaces/{self.namespace}/botsessions"
        )["items"]
        return items

    def botsession(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.cluster.api.get_or_none(
            f"{GROUP_PATH}/namespaces/{self.namespace}/botsessions/{name}"
        )
        return found

    def find_botsession(self, bot: str, user: str) -> dict[str, Any] | None:
        for item in self.botsessions():
            if item["spec"]["botId"] == bot and item["spec"]["userId"] == user:
                return item
        return None

    def synced_botsession(self, name: str) -> dict[str, Any] | None:
        """The BotSession once the operator has synced its current revision, else None."""
        body = self.botsession(name)
        return body if synced(body) else None

    def wait_synced(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """The BotSession once synced; a timeout shows its last status."""
        try:
            return poll(lambda: self.synced_botsession(name), timeout, f"BotSession {name} synced")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis(name)}") from None

    def diagnosis(self, name: str) -> str:
        """What a BotSession the operator left unsynced looks like, and what the operators
        were doing: its status and kopf's annotations, the peering, the operators' last
        log lines (their liveness probes left out)."""
        body = self.botsession(name) or {}
        path = f"/apis/kopf.dev/v1/namespaces/{self.namespace}/kopfpeerings/{self.fullname}"
        peering = self.cluster.api.get_or_none(path) or {}
        lines = [
            f"status: {json.dumps(body.get('status'))[:2500]}",
            f"annotations: {json.dumps(body.get('metadata', {}).get('annotations'))[:2500]}",
            f"peering: {json.dumps(peering.get('status'))}",
        ]
        for pod, log in self.operator_logs().items():
            tail = [line for line in log.splitlines() if "/healthz" not in line][-25:]
            lines += [f"--- {pod}", *(line[:400] for line in tail)]
        return "\n".join(lines)

    def create_botsession(self, name: str, bot: str, user: str) -> None:
        """A BotSession written by hand, straight to the API server (docs/operations.md)."""
        self.cluster.api.create(
            f"{GROUP_PATH}/namespaces/{self.namespace}/botsessions",
            {
                "apiVersion": "botsession.dev/v1alpha1",
                "kind": "BotSession",
                "metadata": {"name": name},
                "spec": {"botId": bot, "userId": user},
            },
        )

    def redis(self) -> redis.Redis:
        forward = self._forward("redis", services.REDIS_PORT)
        return redis.Redis(port=forward.port, decode_responses=True, socket_timeout=10)

    def sql(self, query: str) -> list[list[str]]:
        """Rows of a query on the release's database, every value as text."""
        if self.uses_postgres:
            out = self.cluster.kubectl(
                "-n", self.namespace, "exec", "deploy/postgresql", "--", "psql", "-h", "/tmp",
                "-U", "botsession", "-d", "botsession", "-At", "-F", "\t", "-c", query,
            ).stdout  # fmt: skip
            return [line.split("\t") for line in out.splitlines() if line]
        pod = self.pods("operator")[0]["metadata"]["name"]
        rows: list[list[str]] = json.loads(
            self.exec(pod, "operator", "python3", "-c", SQLITE_QUERY, query)
        )
        return rows
