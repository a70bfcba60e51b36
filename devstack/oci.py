"""OCI image layout archives, the format `ctr images import` reads, with the standard
library only: uncompressed tar layers (from a directory, or from a few files), an image
config, a manifest and an index.json naming the image; and reading them back."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Layer:
    path: Path
    digest: str  # sha256:...; of an uncompressed layer, also its diff_id
    size: int
    comment: str = ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def layer_of_file(path: Path, comment: str) -> Layer:
    """A layer tarball that already exists; its digest is kept beside it once computed."""
    known = path.with_name(path.name + ".sha256")
    if known.exists() and known.stat().st_mtime >= path.stat().st_mtime:
        digest = known.read_text().strip()
    else:
        digest = _sha256(path)
        known.write_text(digest + "\n")
    return Layer(path, digest, path.stat().st_size, comment)


def _numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owners by number only: the host's user names mean nothing in the image."""
    info.uname = info.gname = ""
    return info


def layer_from_dir(
    root: Path, out: Path, comment: str, skip: Callable[[str], bool] = lambda _: False
) -> Layer:
    """A layer of everything under root (owners, modes, links kept), in sorted order;
    skip(relative path) leaves an entry out (its directory's own entry stays)."""
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            for name in [*sorted(filenames), *dirnames]:
                path = base / name
                rel = path.relative_to(root).as_posix()
                if skip(rel):
                    if name in dirnames:
                        dirnames.remove(name)
                    continue
                tar.add(path, arcname=rel, recursive=False, filter=_numeric)
    tmp.replace(out)
    return layer_of_file(out, comment)


def layer_from_files(out: Path, files: dict[str, tuple[bytes, int]], comment: str) -> Layer:
    """A layer of a few files {path in image: (content, mode)}, owned by root, with their
    parent directories."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for name in sorted(files):
            parts = name.strip("/").split("/")
            for i in range(1, len(parts)):
                directory = "/".join(parts[:i])
                if directory not in dirs:
                    dirs.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            content, mode = files[name]
            info = tarfile.TarInfo(name.strip("/"))
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return layer_of_file(out, comment)


def normalize(name: str) -> str:
    """The full reference containerd stores: `redis:7` -> `docker.io/library/redis:7`."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(out: Path, name: str, layers: list[Layer], config: dict[str, Any]) -> str:
    """The image `name` as an OCI layout tar; returns the manifest's digest."""
    image = {
        "created": EPOCH,
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created": EPOCH, "created_by": layer.comment} for layer in layers],
    }
    config_blob = json.dumps(image, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_blob).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config_blob)},
        "layers": [
            {"mediaType": LAYER, "digest": layer.digest, "size": layer.size} for layer in layers
        ],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_blob).hexdigest()
    full = normalize(name)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": full,
                    "org.opencontainers.image.ref.name": full.rsplit(":", 1)[1],
                },
            }
        ],
    }
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        _add_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_blob)
        _add_bytes(tar, f"blobs/sha256/{config_digest[7:]}", config_blob)
        for layer in layers:
            tar.add(layer.path, arcname=f"blobs/sha256/{layer.digest[7:]}", filter=_numeric)
    tmp.replace(out)
    return manifest_digest


@dataclass(frozen=True)
class Image:
    """An archive read back: its name, image config and layer digests."""

    archive: Path
    name: str
    config: dict[str, Any]
    layers: list[str]

    def files(self) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
        """Every entry of every layer, in order (read the content from the TarFile)."""
        with tarfile.open(self.archive) as outer:
            for digest in self.layers:
                blob = outer.extractfile(f"blobs/sha256/{digest[7:]}")
                assert blob is not None
                with tarfile.open(fileobj=blob, mode="r|") as layer:
                    for info in layer:
                        yield info, layer


def read_archive(archive: Path) -> Image:
    with tarfile.open(archive) as tar:

        def blob(name: str) -> Any:
            stream = tar.extractfile(name)
            assert stream is not None
            return json.load(stream)

        entry = blob("index.json")["manifests"][0]
        manifest = blob(f"blobs/sha256/{entry['digest'][7:]}")
        image = blob(f"blobs/sha256/{manifest['config']['digest'][7:]}")
    return Image(
        archive,
        entry["annotations"]["io.containerd.image.name"],
        image["config"],
        [layer["digest"] for layer in manifest["layers"]],
    )
