"""The cluster's keys and certificates, made with the openssl command (EC P-256, quick):
a CA, the API server's serving certificate (valid for the host's forwarded loopback port,
the node address and the `kubernetes` Service), the API server's client certificate for
kubelets, the service-account signing key, and the admin token file."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.cluster import layout
from devstack.process import find_binary


@dataclass(frozen=True)
class Pki:
    dir: Path
    token: str

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def __getitem__(self, name: str) -> Path:
        return self.dir / name


def _openssl(*args: str) -> None:
    subprocess.run([find_binary("openssl"), *args], check=True, capture_output=True)


def _key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{path}"
    )
    path.chmod(0o600)


def _leaf(pki: Path, name: str, subject: str, usage: str, san: str = "") -> None:
    _key(pki / f"{name}.key")
    extensions = ["basicConstraints=critical,CA:FALSE", f"extendedKeyUsage={usage}"]
    if san:
        extensions.append(f"subjectAltName={san}")
    args = ["req", "-x509", "-new", "-key", str(pki / f"{name}.key"), "-subj", subject]
    args += ["-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"), "-days", "30"]
    for extension in extensions:
        args += ["-addext", extension]
    _openssl(*args, "-out", str(pki / f"{name}.crt"))


def create(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    _key(directory / "ca.key")
    _openssl(
        "req", "-x509", "-new", "-key", str(directory / "ca.key"), "-subj", "/CN=botsession-ca",
        "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(directory / "ca.crt"),
    )  # fmt: skip
    names = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
        "localhost",
    ]
    ips = ["127.0.0.1", layout.NODE_IP, layout.KUBERNETES_SERVICE_IP]
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips])
    _leaf(directory, "apiserver", "/CN=kube-apiserver", "serverAuth", san)
    _leaf(
        directory,
        "apiserver-kubelet-client",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "clientAuth",
    )
    _key(directory / "sa.key")
    _openssl("ec", "-in", str(directory / "sa.key"), "-pubout", "-out", str(directory / "sa.pub"))
    token = secrets.token_hex(24)
    tokens = directory / "tokens.csv"
    tokens.write_text(f'{token},admin,admin,"system:masters"\n')
    tokens.chmod(0o600)
    return Pki(directory, token)
