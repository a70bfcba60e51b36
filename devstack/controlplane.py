"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback, envtest-style.

The binaries come from hack/controlplane/build.sh (built from the Go module proxy, cached
outside the repo). There is no controller-manager: no garbage collection, no namespace
deletion, no Pods. Tests must not rely on those.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Self

import yaml

from devstack.process import (
    DevstackError,
    Lifecycle,
    ManagedProcess,
    ensure_port_free,
    find_binary,
    free_port,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "hack" / "controlplane" / "build.sh"
BIN_ENV = "BOTSESSION_CONTROLPLANE_BIN"


def binary_dir() -> Path:
    """Where etcd, kube-apiserver and helm live: $BOTSESSION_CONTROLPLANE_BIN, or the cache
    directory that hack/controlplane/build.sh uses."""
    if os.environ.get(BIN_ENV):
        return Path(os.environ[BIN_ENV])
    if BUILD_SCRIPT.exists():
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print"], capture_output=True, text=True, check=True
        )
        return Path(out.stdout.strip())
    raise DevstackError(f"set {BIN_ENV} to the directory holding etcd and kube-apiserver")


def control_binary(name: str) -> str:
    path = binary_dir() / name
    if not path.exists():
        raise DevstackError(
            f"{name} is missing from {path.parent}: run hack/controlplane/build.sh "
            "(or scripts/bootstrap.sh) to build it"
        )
    return str(path)


def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Etcd(ManagedProcess):
    name = "etcd"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.peer_port = free_port()
        self.binary = control_binary("etcd")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        ensure_port_free(self.port, "etcd")
        self._spawn(
            [
                self.binary,
                "--data-dir",
                str(self.workdir / "etcd-data"),
                "--listen-client-urls",
                self.url,
                "--advertise-client-urls",
                self.url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{self.peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level",
                "warn",
                "--quota-backend-bytes",
                str(4 * 1024**3),
            ]
        )

        def healthy() -> bool:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:  # noqa: S310
                return bool(json.load(resp).get("health") == "true")

        wait_until(healthy, 30, "etcd", self.proc, self.log_path)
        return self


class KubeAPIServer(ManagedProcess):
    name = "kube-apiserver"

    def __init__(self, workdir: Path, etcd_url: str, verbosity: int = 0) -> None:
        super().__init__(workdir)
        self.verbosity = verbosity
        self.port = free_port()
        self.etcd_url = etcd_url
        self.binary = control_binary("kube-apiserver")
        self.token = secrets.token_hex(24)
        self.cert_dir = workdir / "certs"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        self.cert_dir.mkdir(exist_ok=True)
        key = self.cert_dir / "sa.key"
        if not key.exists():
            openssl = find_binary("openssl")
            subprocess.run(
                [openssl, "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
            )
            subprocess.run(
                [openssl, "rsa", "-in", str(key), "-pubout", "-out", str(self.cert_dir / "sa.pub")],
                check=True,
                capture_output=True,
            )
        tokens = self.cert_dir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)

    def start(self) -> Self:
        ensure_port_free(self.port, "kube-apiserver")
        self._prepare()
        certs = self.cert_dir
        self._spawn(
            [
                self.binary,
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={certs}",
                f"--secure-port={self.port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=RBAC",
                f"--token-auth-file={certs / 'tokens.csv'}",
                f"--service-account-issuer=https://127.0.0.1:{self.port}/",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                "--enable-priority-and-fairness=false",
                f"--v={self.verbosity}",
            ]
        )
        wait_until(
            lambda: self.get("/readyz") == "ok", 90, "kube-apiserver", self.proc, self.log_path
        )
        wait_until(
            lambda: '"default"' in self.get("/api/v1/namespaces/default"),
            60,
            "the default namespace",
            self.proc,
            self.log_path,
        )
        return self

    def get(self, path: str) -> str:
        request = urllib.request.Request(  # noqa: S310 - https URL built here
            self.url + path,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        context = _insecure_context()
        with urllib.request.urlopen(request, context=context, timeout=5) as resp:  # noqa: S310
            return str(resp.read().decode())

    def serving_ca(self) -> bytes:
        """The self-signed serving certificate the API server generated in its cert dir."""
        return (self.cert_dir / "apiserver.crt").read_bytes()


class ControlPlane(Lifecycle):
    """etcd + kube-apiserver with an admin token and a kubeconfig; a context manager."""

    def __init__(
        self, workdir: Path | None = None, keep: bool = False, apiserver_verbosity: int = 0
    ) -> None:
        """apiserver_verbosity: kube-apiserver's --v (3 logs every request's URL)."""
        import tempfile

        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="botsession-controlplane-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.etcd = Etcd(self.workdir)
        self.apiserver = KubeAPIServer(self.workdir, self.etcd.url, apiserver_verbosity)
        self.kubeconfig = self.workdir / "kubeconfig"

    @property
    def url(self) -> str:
        return self.apiserver.url

    @property
    def token(self) -> str:
        return self.apiserver.token

    def start(self) -> Self:
        self.etcd.start()
        self.apiserver.start()
        self.write_kubeconfig()
        return self

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port (etcd keeps the data)."""
        self.apiserver.stop()
        self.apiserver.start()

    def kubeconfig_dict(self) -> dict[str, Any]:
        ca = base64.b64encode(self.apiserver.serving_ca()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "botsession",
            "clusters": [
                {
                    "name": "botsession",
                    "cluster": {"server": self.url, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "botsession",
                    "context": {"cluster": "botsession", "user": "admin", "namespace": "default"},
                }
            ],
        }

    def write_kubeconfig(self) -> Path:
        self.kubeconfig.write_text(yaml.safe_dump(self.kubeconfig_dict()))
        self.kubeconfig.chmod(0o600)
        return self.kubeconfig

    def stop(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()

    def close(self) -> None:
        self.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
