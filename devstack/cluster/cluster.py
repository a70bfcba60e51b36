"""`Cluster`: a real single-node Kubernetes cluster, started and stopped as a context
manager. It wires the parts together: keys, configuration files, the namespaces, the
daemons inside them, a forwarded port for the API server, the sandbox and CoreDNS images,
the add-ons and the volume provisioner, and waits until the node is Ready, the `default`
ServiceAccount exists and DNS answers. close() kills everything and removes the cgroups
and (unless keep) the workdir."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import yaml

from devstack import oci
from devstack.cluster import cgroups, components, configs, layout, pki
from devstack.cluster.addons import manifests
from devstack.cluster.components import NodeProcess
from devstack.cluster.forward import Forward
from devstack.cluster.kubeapi import KubeApi
from devstack.cluster.namespace import NodeNamespace
from devstack.cluster.storage import HostPathProvisioner
from devstack.kubectl import helm, kubectl
from devstack.process import DevstackError, Lifecycle, find_binary, tail, wait_until

OWNER = "owner.pid"
PREFIX = "botsession-cluster-"


def _remove_stale_workdirs() -> None:
    """Workdirs of runs that were killed before close(): their namespaces (and so their
    mounts) died with them; only files are left."""
    for workdir in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        owner = workdir / OWNER
        with contextlib.suppress(OSError, ValueError):
            if not Path(f"/proc/{int(owner.read_text())}").exists():
                shutil.rmtree(workdir, ignore_errors=True)


class Cluster(Lifecycle):
    """The cluster. After start(): `kubeconfig` (for kubectl, helm, Python clients on the
    host), `url` and `token` (admin), `api` (a small JSON client), `import_image()`,
    `tag_image()`, `forward()` / `forward_service()` for ports on the host's 127.0.0.1.

    Needs root. Start it from a thread that outlives it (the main thread, say): the kernel
    kills the node when the thread that started it ends (so a killed test run leaves no
    node behind; the next start removes the files and cgroups such a run left)."""

    def __init__(
        self,
        workdir: Path | None = None,
        keep: bool = False,
        node_name: str = "botsession-node",
        images_in_memory: bool = True,
    ) -> None:
        """images_in_memory: containerd's store (images, container layers) on a tmpfs in the
        node's mount namespace: imports are quicker and stopping frees it at once, instead
        of deleting some 10,000 files per image from disk; costs RAM for the images."""
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=PREFIX))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.node_name = node_name
        self.kubeconfig = self.workdir / "kubeconfig"
        in_memory = [self.workdir / "containerd"] if images_in_memory else []
        self.namespace = NodeNamespace(self.workdir, node_name, in_memory)
        self.cgroup_root = ""
        self.daemons: dict[str, NodeProcess] = {}
        self.forwards: list[Forward] = []
        self.provisioner: HostPathProvisioner | None = None
        self.timings: dict[str, float] = {}
        self._api: KubeApi | None = None
        self._token = ""

    # --- what callers use ----------------------------------------------------------

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            raise DevstackError("the cluster is not started")
        return self._api

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def token(self) -> str:
        return self._token

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(self.kubeconfig, *args, check=check)

    def import_image(self, archive: Path) -> None:
        """Load an OCI archive into the node's containerd (namespace k8s.io, as the CRI
        sees it); Pods then run it with imagePullPolicy: Never."""
        argv = [find_binary("ctr"), f"--address={self.workdir / 'containerd.sock'}"]
        argv += ["--namespace=k8s.io", "images", "import", str(archive)]
        for attempt in range(3):  # a containerd just started may refuse the first one
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
            if done.returncode == 0:
                return
            time.sleep(1 + attempt)
        raise DevstackError(f"ctr images import {archive.name}: {done.stderr.strip()}")

    def tag_image(self, source: str, target: str) -> None:
        """Give an imported image a second name (say a new tag), as pushing it again under
        that tag would: Pods naming either run the same image."""
        argv = [find_binary("ctr"), f"--address={self.workdir / 'containerd.sock'}"]
        argv += ["--namespace=k8s.io", "images", "tag", "--force"]
        argv += [oci.normalize(source), oci.normalize(target)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise DevstackError(f"ctr images tag {source} {target}: {done.stderr.strip()}")

    def forward(self, host: str, port: int, local_port: int = 0) -> Forward:
        """127.0.0.1:<returned .port> on the host reaches host:port inside the node."""
        forward = Forward(self.namespace, host, port, local_port).start()
        self.forwards.append(forward)
        return forward

    def forward_service(
        self, namespace: str, name: str, port: int, local_port: int = 0, timeout: float = 60
    ) -> Forward:
        """A host port for a Service's ClusterIP port (kube-proxy picks the Pod), once a
        connection to it succeeds inside the node (kube-proxy has its rules)."""
        service = self.api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
        address = service["spec"]["clusterIP"]
        wait_until(lambda: self.reachable(address, port), timeout, f"service {namespace}/{name}")
        return self.forward(address, port, local_port)

    def reachable(self, host: str, port: int) -> bool:
        """Whether a TCP connection to host:port succeeds from inside the node."""
        probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=2).close()"
        argv = self.namespace.command([sys.executable, "-I", "-c", probe], net_only=True)
        return subprocess.run(argv, capture_output=True, check=False, timeout=10).returncode == 0

    def logs(self, component: str, lines: int = 40) -> str:
        return tail(self.workdir / "logs" / f"{component}.log", lines)

    # --- start ---------------------------------------------------------------------

    def _timed(self, what: str, since: float) -> None:
        self.timings[what] = round(time.monotonic() - since, 2)

    def _write_configs(self, keys: pki.Pki) -> dict[str, Path]:
        wd = self.workdir
        inner = configs.write_json(
            wd / "kubeconfig.node",
            configs.kubeconfig(f"https://127.0.0.1:{layout.API_PORT}", keys.ca, keys.token),
            0o600,
        )
        (wd / "containerd").mkdir(exist_ok=True)
        (wd / "containerd.toml").write_text(configs.containerd_toml(wd))
        (wd / "tmp").mkdir(exist_ok=True)
        conflist = wd / "cni" / "net.d" / "10-botsession.conflist"
        configs.write_json(conflist, configs.cni_conflist(wd))
        return {
            "inner": inner,
            "kubelet": configs.write_json(
                wd / "kubelet.yaml", configs.kubelet_config(wd, self.cgroup_root, keys.dir)
            ),
            "proxy": configs.write_json(
                wd / "kube-proxy.yaml", configs.kube_proxy_config(inner, self.node_name)
            ),
        }

    def _daemon(self, name: str, argv: list[str]) -> NodeProcess:
        daemon = NodeProcess(self.namespace, name, argv).start()
        self.daemons[name] = daemon
        return daemon

    def _alive(self) -> None:
        for name, daemon in self.daemons.items():
            if not daemon.running:
                raise DevstackError(f"{name} exited{self.logs(name)}")

    def _wait(self, check: Callable[[], object], timeout: float, what: str) -> None:
        def ok() -> bool:
            self._alive()
            return bool(check())

        wait_until(ok, timeout, what)

    def start(self) -> Self:
        begin = time.monotonic()
        if os.geteuid() != 0:
            raise DevstackError(
                "the local cluster needs root (it creates namespaces and cgroups and runs "
                "containerd); run it as root, as CI does"
            )
        _remove_stale_workdirs()
        if not self.keep:  # a later run removes it if this process dies without close()
            (self.workdir / OWNER).write_text(str(os.getpid()))
        from devstack.image import coredns_image, pause_image  # devstack.image uses layout

        images = [pause_image(), coredns_image()]
        cgroups.remove_stale()
        self.cgroup_root = cgroups.new_root_name()
        cgroups.create(self.cgroup_root)
        keys = pki.create(self.workdir / "pki")
        self._token = keys.token
        paths = self._write_configs(keys)
        self.namespace.start()
        self._timed("namespaces", begin)

        self._daemon("etcd", components.etcd(self.workdir))
        self._daemon("kube-apiserver", components.kube_apiserver(keys))
        self._daemon("containerd", components.containerd(self.workdir / "containerd.toml"))
        api_port = self.forward("127.0.0.1", layout.API_PORT).port
        self._api = KubeApi(f"https://127.0.0.1:{api_port}", keys.ca, keys.token)
        configs.write_json(
            self.kubeconfig, configs.kubeconfig(self.url, keys.ca, keys.token), 0o600
        )
        socket = self.workdir / "containerd.sock"
        self._wait(socket.exists, 30, "containerd")
        for image in images:
            self.import_image(image.archive)
        self._timed("containerd and images", begin)
        self._wait(lambda: self.api.get("/readyz") == "ok", 90, "kube-apiserver")
        self._timed("kube-apiserver", begin)

        inner = paths["inner"]
        self._daemon("kube-controller-manager", components.kube_controller_manager(keys, inner))
        self._daemon("kube-scheduler", components.kube_scheduler(inner))
        self._daemon(
            "kubelet", components.kubelet(self.workdir, paths["kubelet"], inner, self.node_name)
        )
        self._daemon("kube-proxy", components.kube_proxy(paths["proxy"]))
        addons = self.workdir / "addons.json"
        addons.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests()}))
        self.kubectl("apply", "-f", str(addons))
        self.provisioner = HostPathProvisioner(self.api, self.workdir / "volumes")
        self.provisioner.start()

        self._wait(self._node_ready, 120, f"node {self.node_name} Ready")
        self._timed("node Ready", begin)
        self._wait(
            lambda: self.api.get_or_none("/api/v1/namespaces/default/serviceaccounts/default"),
            60,
            "the default ServiceAccount",
        )
        self._wait(self._dns_ready, 120, "CoreDNS")
        self._timed("DNS ready", begin)
        return self

    def _node_ready(self) -> bool:
        node = self.api.get_or_none(f"/api/v1/nodes/{self.node_name}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _dns_ready(self) -> bool:
        path = "/apis/apps/v1/namespaces/kube-system/deployments/coredns"
        deployment = self.api.get_or_none(path) or {}
        return int(deployment.get("status", {}).get("readyReplicas") or 0) >= 1

    # --- stop ----------------------------------------------------------------------

    def stop(self) -> None:
        if self.provisioner is not None:
            self.provisioner.stop()
            self.provisioner = None
        for forward in self.forwards:
            forward.close()
        self.forwards.clear()
        self.namespace.stop()  # kills every daemon, shim and container at once
        for daemon in self.daemons.values():
            daemon.stop()  # reaps nsenter, closes the log
        self.daemons.clear()
        if self.cgroup_root:
            left = cgroups.remove(self.cgroup_root)
            if left:
                raise DevstackError(f"cgroups still there after stop: {left}")
            self.cgroup_root = ""

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def kubeconfig_dict(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.kubeconfig.read_text())
        return loaded
