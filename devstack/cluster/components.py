"""The node's daemons, each a process run inside its namespaces (through nsenter) with its
log in the workdir, and the command line each one gets."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from devstack.cluster import layout
from devstack.cluster.namespace import NodeNamespace
from devstack.cluster.pki import Pki
from devstack.controlplane import control_binary
from devstack.process import ManagedProcess, find_binary

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NodeProcess(ManagedProcess):
    """A daemon inside the node's namespaces. nsenter forks it into the PID namespace, so it
    is stopped through its process group (nsenter passes no signal on)."""

    def __init__(
        self,
        namespace: NodeNamespace,
        name: str,
        argv: Sequence[str],
        *,
        net_only: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> None:
        super().__init__(namespace.workdir)
        self.name = name
        self.log_path = namespace.workdir / "logs" / f"{name}.log"
        self.namespace = namespace
        self.argv = list(argv)
        self.net_only = net_only
        self.pass_fds = tuple(pass_fds)

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = self.namespace.command(self.argv, net_only=self.net_only)
        if self.net_only:  # outside the PID namespace: dies with the launcher on its own
            argv = [find_binary("setpriv"), "--pdeathsig", "KILL", "--", *argv]
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={"PATH": PATH, "HOME": str(self.workdir), "TMPDIR": str(self.workdir / "tmp")},
            pass_fds=self.pass_fds,
            start_new_session=True,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            with contextlib.suppress(ProcessLookupError):  # the daemon, if nsenter went first
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def etcd(workdir: Path) -> list[str]:
    url = f"http://127.0.0.1:{layout.ETCD_PORT}"
    return [
        control_binary("etcd"),
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls={url}",
        f"--advertise-client-urls={url}",
        "--listen-peer-urls=http://127.0.0.1:2380",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
        f"--quota-backend-bytes={4 * 1024**3}",
    ]


def kube_apiserver(pki: Pki) -> list[str]:
    return [
        control_binary("kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{layout.ETCD_PORT}",
        "--bind-address=0.0.0.0",
        f"--secure-port={layout.API_PORT}",
        f"--advertise-address={layout.NODE_IP}",
        f"--tls-cert-file={pki['apiserver.crt']}",
        f"--tls-private-key-file={pki['apiserver.key']}",
        f"--client-ca-file={pki.ca}",
        f"--token-auth-file={pki['tokens.csv']}",
        f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
        f"--service-account-issuer=https://kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
        f"--service-account-key-file={pki['sa.pub']}",
        f"--service-account-signing-key-file={pki['sa.key']}",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={pki['apiserver-kubelet-client.crt']}",
        f"--kubelet-client-key={pki['apiserver-kubelet-client.key']}",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--v=0",
    ]


def _delegating(kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authentication-skip-lookup=true",  # no front-proxy CA to look up
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kube_controller_manager(pki: Pki, kubeconfig: Path) -> list[str]:
    return [
        layout.node_binary("kube-controller-manager"),
        *_delegating(kubeconfig),
        f"--service-account-private-key-file={pki['sa.key']}",
        f"--root-ca-file={pki.ca}",
        f"--cluster-signing-cert-file={pki.ca}",
        f"--cluster-signing-key-file={pki['ca.key']}",
        f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
        f"--cluster-cidr={layout.POD_CIDR}",
        "--allocate-node-cidrs=false",
        "--v=0",
    ]


def kube_scheduler(kubeconfig: Path) -> list[str]:
    return [layout.node_binary("kube-scheduler"), *_delegating(kubeconfig), "--v=0"]


def containerd(config: Path) -> list[str]:
    return [find_binary("containerd"), f"--config={config}", "--log-level=warn"]


def kubelet(workdir: Path, config: Path, kubeconfig: Path, node_name: str) -> list[str]:
    return [
        layout.node_binary("kubelet"),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={workdir / 'kubelet'}",
        f"--hostname-override={node_name}",
        f"--node-ip={layout.NODE_IP}",
        "--v=0",
    ]


def kube_proxy(config: Path) -> list[str]:
    return [layout.node_binary("kube-proxy"), f"--config={config}", "--v=0"]
