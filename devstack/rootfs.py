"""Debian root filesystems for images, without Docker: `debootstrap --variant=minbase`
plus the packages an image needs, then commands run in a chroot and extra files, made into
one image layer. The layer is cached outside the repository, keyed by all of that, so a
second build of the same recipe is instant. Every chroot runs in its own mount and PID
namespaces: no mount and no daemon that a package's scripts start outlives the build."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack.oci import Layer, layer_from_dir, layer_of_file
from devstack.process import DevstackError, find_binary

SUITE = "bookworm"  # Debian 12: its python3 is the 3.11 the Dockerfile's base has
MIRROR = os.environ.get("BOTSESSION_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CHROOT_ENV = "env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root"
# left out of every image: documentation, apt's lists and caches, the build's logs
TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf",
    "var/log",
)
EMPTY = ("dev", "proc", "sys", "run", "tmp")  # present, empty: the runtime fills them


def cache_root() -> Path:
    base = os.environ.get("BOTSESSION_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "botsession"
    )
    path = Path(base) / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Recipe:
    """A root filesystem: packages, then shell commands in the chroot, then files."""

    name: str
    packages: tuple[str, ...]
    commands: tuple[str, ...] = ()
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path: (text, mode)

    @property
    def key(self) -> str:
        spec = {
            "suite": SUITE,
            "packages": sorted(self.packages),
            "commands": self.commands,
            "files": self.files,
            "trim": TRIM,
            "format": 1,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def in_namespaces(script: str, timeout: float = 1800) -> None:
    """Run a shell script as root in fresh mount and PID namespaces."""
    argv = [find_binary("unshare"), "--mount", "--pid", "--fork", "--mount-proc"]
    argv += ["--propagation", "private", "sh", "-euc", script]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        raise DevstackError(f"image build step failed:\n{script}\n{output}")


def chroot_script(root: Path, commands: Sequence[str]) -> str:
    """Mount /proc and /dev for commands run in the chroot (unmounted with the namespace)."""
    lines = [
        f"mkdir -p {root}/proc {root}/dev",
        f"mount -t proc proc {root}/proc",
        f"mount --rbind /dev {root}/dev",
    ]
    lines += [f"chroot {root} {CHROOT_ENV} sh -euc {_quote(c)}" for c in commands]
    return "\n".join(lines)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _trim(root: Path) -> None:
    for rel in TRIM:
        target = root / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for rel in EMPTY:
        (root / rel).mkdir(exist_ok=True)


def _skip_runtime(rel: str) -> bool:
    top, _, rest = rel.partition("/")
    return top in EMPTY and bool(rest)


def debian_layer(recipe: Recipe) -> Layer:
    """The recipe's root filesystem as a cached layer tarball (built when missing)."""
    cache = cache_root()
    out = cache / f"rootfs-{SUITE}-{recipe.name}-{recipe.key}.tar"
    comment = f"debootstrap --variant=minbase {SUITE} + {' '.join(recipe.packages)}"
    if out.exists():
        return layer_of_file(out, comment)
    work = cache / f"build-{recipe.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    try:
        debootstrap = find_binary("debootstrap", "/usr/sbin/debootstrap")
        include = ",".join(recipe.packages)
        script = (
            f"{debootstrap} --variant=minbase --include={include} --cache-dir={debs} "
            f"{SUITE} {root} {MIRROR} >{work}/debootstrap.log 2>&1 "
            f"|| {{ tail -40 {work}/debootstrap.log; exit 1; }}"
        )
        work.mkdir(parents=True)
        in_namespaces(script)
        if recipe.commands:
            in_namespaces(chroot_script(root, recipe.commands))
        for path, (text, mode) in recipe.files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(mode)
        _trim(root)
        layer_from_dir(root, out, comment, _skip_runtime)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return layer_of_file(out, comment)


def extract(layer: Layer, root: Path) -> None:
    """Unpack a layer into a directory (owners by number, as in the image)."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [find_binary("tar"), "-xpf", str(layer.path), "--numeric-owner", "-C", str(root)],
        check=True,
        capture_output=True,
    )
