"""The project as it is deployed, on a real local cluster: `botsession cluster up` runs it.
Builds what is missing (node binaries, images), starts the cluster, imports the images,
runs Redis and PostgreSQL as Pods, `helm install`s the chart with the local image
(imagePullPolicy: Never) and forwards the API's Service to a port on 127.0.0.1."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from devstack.cluster import Cluster, layout, services
from devstack.cluster.forward import Forward
from devstack.controlplane import BUILD_SCRIPT as CONTROLPLANE_BUILD
from devstack.image import BuiltImage, postgres_image, project_image, redis_image
from devstack.process import Lifecycle, free_port

CHART = layout.REPO / "deploy" / "helm" / "botsession-operator"


def build_binaries() -> None:
    """hack/controlplane/build.sh and hack/node/build.sh build only what their cache lacks."""
    for script in (CONTROLPLANE_BUILD, layout.BUILD_SCRIPT):
        subprocess.run(["bash", str(script)], check=True, stdout=subprocess.DEVNULL)


def build_images() -> dict[str, BuiltImage]:
    return {"project": project_image(), "redis": redis_image(), "postgres": postgres_image()}


class ClusterStack(Lifecycle):
    def __init__(
        self,
        namespace: str = "bots",
        release: str = "botsession",
        api_mode: str = "sidecar",
        port: int = 8000,
        extra_values: tuple[str, ...] = (),
    ) -> None:
        self.namespace = namespace
        self.release = release
        self.api_mode = api_mode
        self.port = port
        self.extra_values = extra_values
        self.token = secrets.token_hex(16)
        self.cluster: Cluster | None = None
        self.api: Forward | None = None
        self.images: dict[str, BuiltImage] = {}
        self.timings: dict[str, float] = {}

    def start(self) -> Self:
        begin = time.monotonic()
        build_binaries()
        self.timings["binaries"] = round(time.monotonic() - begin, 1)
        with ThreadPoolExecutor(1) as pool:
            images = pool.submit(build_images)  # while the cluster starts
            self.cluster = Cluster().start()
            self.timings["cluster"] = round(time.monotonic() - begin, 1)
            self.images = images.result()
        self.timings["images"] = round(time.monotonic() - begin, 1)
        for image in self.images.values():
            self.cluster.import_image(image.archive)
        self.timings["import"] = round(time.monotonic() - begin, 1)
        self._services()
        self._install()
        self.timings["chart"] = round(time.monotonic() - begin, 1)
        port = self.port if self.port and _free(self.port) else free_port()
        self.api = self.cluster.forward_service(self.namespace, f"{self.release}-api", 80, port)
        return self

    def _apply(self, items: list[dict[str, Any]]) -> None:
        assert self.cluster is not None
        manifest = self.cluster.workdir / f"apply-{len(items)}-{time.monotonic_ns()}.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        self.cluster.kubectl("apply", "-f", str(manifest))

    def _services(self) -> None:
        assert self.cluster is not None
        self.cluster.kubectl("create", "namespace", self.namespace)
        self.postgres_password = secrets.token_hex(12)
        self._apply(
            services.redis(self.namespace, self.images["redis"].name)
            + services.postgres(
                self.namespace, self.images["postgres"].name, self.postgres_password
            )
        )
        for name in ("redis", "postgresql"):
            self.cluster.kubectl(
                "-n", self.namespace, "rollout", "status", f"deployment/{name}", "--timeout=120s"
            )

    def values(self) -> list[str]:
        image = self.images["project"]
        values = [
            f"image.repository={image.repository}",
            f"image.tag={image.tag}",
            "image.pullPolicy=Never",
            "auth.tokens[0].name=local",
            f"auth.tokens[0].token={self.token}",
            "auth.tokens[0].scopes[0]=admin",
        ]
        if self.api_mode == "deployment":
            url = services.postgres_url(self.namespace, self.postgres_password)
            values += ["api.mode=deployment", f"database.url={url}"]
        return values + list(self.extra_values)

    def _install(self) -> None:
        assert self.cluster is not None
        args = ["upgrade", "--install", self.release, str(CHART), "-n", self.namespace]
        for value in self.values():
            args += ["--set", value]
        self.cluster.helm(*args, "--wait", "--timeout", "5m")

    def banner(self) -> str:
        assert self.cluster is not None and self.api is not None
        api = f"http://{self.api.address}"
        kubeconfig = self.cluster.kubeconfig
        return "\n".join(
            [
                "botsession-operator runs in a local Kubernetes cluster "
                f"(namespace {self.namespace}, release {self.release}).",
                f"  API:        {api}   (forwarded to Service {self.release}-api)",
                f"  token:      {self.token}   (scope: admin)",
                f"  KUBECONFIG: {kubeconfig}",
                f"  image:      {self.images['project'].name}",
                "  ready in {chart:.0f} s (cluster {cluster:.0f} s, images {images:.0f} s, "
                "import {import:.0f} s)".format(**self.timings),
                "",
                "Try:",
                f"  export KUBECONFIG={kubeconfig}",
                f"  kubectl -n {self.namespace} get pods,bs -o wide",
                f"  curl -X POST -H 'Authorization: Bearer {self.token}' "
                "-H 'Content-Type: application/json' -d '{\"state\": \"connecting\"}' "
                f"{api}/v1/whatsapp/sessions/my-bot/my-user/report",
                f"  curl -H 'Authorization: Bearer {self.token}' "
                f"'{api}/v1/whatsapp/session-status/my-bot?userId=my-user'",
                f"  kubectl -n {self.namespace} port-forward svc/{self.release}-api 8001:80"
                "   # another way in",
                "",
                "Ctrl-C stops the cluster and removes everything it made.",
            ]
        )

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()  # its forwards too


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
