"""Where things are: the node's addresses inside its network namespace, the fixed ports
there, image names, and the directory of the node binaries (hack/node/build.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devstack.process import DevstackError

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "node" / "build.sh"
BIN_ENV = "BOTSESSION_NODE_BIN"

NODE_IP = "10.87.0.2"  # the node's own interface (a veth inside its network namespace)
NODE_PREFIX = 24
POD_CIDR = "10.88.0.0/16"  # the CNI bridge's range
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443  # every port is the namespace's own: several clusters never collide
ETCD_PORT = 2379

PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"  # containerd's sandbox_image, built locally
COREDNS_IMAGE = "localhost/botsession/coredns:v1.15.0"
STORAGE_CLASS = "standard"  # the default StorageClass, as kind names it


def binary_dir() -> Path:
    """Where kubelet, kube-proxy, kube-scheduler, kube-controller-manager, coredns and pause
    live: $BOTSESSION_NODE_BIN, or the cache directory that hack/node/build.sh uses."""
    if os.environ.get(BIN_ENV):
        return Path(os.environ[BIN_ENV])
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def node_binary(name: str) -> str:
    path = binary_dir() / name
    if not path.exists():
        raise DevstackError(
            f"{name} is missing from {path.parent}: run hack/node/build.sh "
            "(or scripts/bootstrap.sh) to build it"
        )
    return str(path)
