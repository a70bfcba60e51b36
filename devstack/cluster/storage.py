"""Dynamic volumes for the default StorageClass, as kind's local-path provisioner gives
them: a PersistentVolumeClaim of the class gets a hostPath directory in the workdir
(world-writable, as local-path makes them, since fsGroup does not apply to hostPath) and a
PersistentVolume bound to it; a released volume is deleted with its directory. A thread
of the launcher polls the API server once a second."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from devstack.cluster import layout
from devstack.cluster.kubeapi import KubeApi

PROVISIONER = "botsession.dev/hostpath"
log = logging.getLogger(__name__)


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": layout.STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


class HostPathProvisioner:
    def __init__(self, api: KubeApi, root: Path, interval: float = 1.0) -> None:
        self.api = api
        self.root = root
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hostpath-provisioner", daemon=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception as exc:  # the API server may be restarting
                log.debug("provisioner: %s", exc)

    def sync(self) -> None:
        claims = self.api.get("/api/v1/persistentvolumeclaims")["items"]
        for claim in claims:
            spec = claim["spec"]
            if (
                claim["status"].get("phase") == "Pending"
                and spec.get("storageClassName") == layout.STORAGE_CLASS
                and not spec.get("volumeName")
            ):
                self.provision(claim)
        volumes = self.api.get("/api/v1/persistentvolumes")["items"]
        for volume in volumes:
            ours = volume["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by")
            if ours == PROVISIONER and volume["status"].get("phase") in ("Released", "Failed"):
                self.api.delete(f"/api/v1/persistentvolumes/{volume['metadata']['name']}")
                with contextlib.suppress(OSError):
                    shutil.rmtree(self.root / volume["metadata"]["name"])

    def provision(self, claim: dict[str, Any]) -> None:
        meta = claim["metadata"]
        name = f"pvc-{meta['uid']}"
        if self.api.get_or_none(f"/api/v1/persistentvolumes/{name}") is not None:
            return
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # as local-path-provisioner: any Pod uid writes
        self.api.create(
            "/api/v1/persistentvolumes",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                },
                "spec": {
                    "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                    "accessModes": claim["spec"].get("accessModes", ["ReadWriteOnce"]),
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": layout.STORAGE_CLASS,
                    "hostPath": {"path": str(directory), "type": "Directory"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            },
        )
