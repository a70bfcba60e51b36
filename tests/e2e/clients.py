"""Two ways to the API a user has: from the host through a port-forward (httpx), and from
inside the cluster, as another workload would call it, through the Service's DNS name from a
Pod running the project's image (its python3 and urllib; `kubectl exec` per request)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from devstack.cluster import Cluster
from devstack.image import BuiltImage

CLIENT_NAMESPACE = "e2e-client"
CLIENT_POD = "client"

# One HTTP request, its answer printed as JSON. Standard library only.
IN_POD_CALL = """
import json, sys, urllib.error, urllib.request
a = json.loads(sys.argv[1])
data = None if a["body"] is None else json.dumps(a["body"]).encode()
req = urllib.request.Request(a["url"], data=data, method=a["method"], headers=a["headers"])
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        status, headers, raw = r.status, r.headers, r.read()
except urllib.error.HTTPError as e:
    status, headers, raw = e.code, e.headers, e.read()
print(json.dumps({"status": status, "headers": {k.lower(): v for k, v in headers.items()},
                  "text": raw.decode()}))
"""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Api(Protocol):
    where: str

    def call(
        self, method: str, path: str, token: str, body: dict[str, Any] | None = None
    ) -> Reply: ...


def _headers(token: str, body: dict[str, Any] | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return headers


class HostApi:
    """The API through a port on the host's 127.0.0.1 (a forward to its Service)."""

    def __init__(self, base: str) -> None:
        self.where = f"port-forward {base}"
        self.base = base

    def call(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Reply:
        reply = httpx.request(
            method, self.base + path, json=body, headers=_headers(token, body), timeout=30
        )
        headers = {k.lower(): v for k, v in reply.headers.items()}
        return Reply(reply.status_code, headers, reply.text)


class InClusterClient:
    """A Pod of the project's image that sleeps; requests run in it with `kubectl exec`.
    It runs as the chart runs its containers (non-root, read-only root filesystem)."""

    def __init__(self, cluster: Cluster, image: BuiltImage) -> None:
        self.cluster = cluster
        self.image = image

    def start(self) -> InClusterClient:
        self.cluster.kubectl("create", "namespace", CLIENT_NAMESPACE)
        manifest = self.cluster.workdir / "client-pod.json"
        manifest.write_text(json.dumps(self.manifest()))
        self.cluster.kubectl("apply", "-f", str(manifest))
        self.cluster.kubectl(
            "-n", CLIENT_NAMESPACE, "wait", "--for=condition=Ready", f"pod/{CLIENT_POD}",
            "--timeout=110s",
        )  # fmt: skip
        return self

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": CLIENT_POD, "namespace": CLIENT_NAMESPACE},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "client",
                        "image": self.image.name,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "infinity"],
                        "securityContext": {
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }

    def python(self, script: str, *args: str) -> str:
        """Run a python3 script in the client Pod; its standard output."""
        return self.cluster.kubectl(
            "-n", CLIENT_NAMESPACE, "exec", CLIENT_POD, "--", "python3", "-c", script, *args
        ).stdout

    def api(self, base: str) -> PodApi:
        return PodApi(self, base)


class PodApi:
    """The API through its Service's name, from the client Pod."""

    def __init__(self, client: InClusterClient, base: str) -> None:
        self.where = f"in-cluster {base}"
        self.client = client
        self.base = base

    def call(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Reply:
        request = {
            "method": method,
            "url": self.base + path,
            "headers": _headers(token, body),
            "body": body,
        }
        answer = json.loads(self.client.python(IN_POD_CALL, json.dumps(request)))
        return Reply(answer["status"], answer["headers"], answer["text"])
