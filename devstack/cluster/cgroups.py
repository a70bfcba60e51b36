"""The node's private cgroup root (the kubelet's cgroupRoot) in every cgroup hierarchy of
the host: created before the kubelet starts, removed bottom-up once its processes are gone.
Roots that an earlier, killed run left behind are removed too."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
PREFIX = "botsession-node-"


def hierarchies() -> list[Path]:
    """The mounted hierarchies: /sys/fs/cgroup/<controller> (v1, hybrid) or itself (v2)."""
    if (CGROUP_FS / "cgroup.procs").exists():
        return [CGROUP_FS]
    return sorted(p for p in CGROUP_FS.iterdir() if (p / "cgroup.procs").exists())


def new_root_name() -> str:
    """A root named after this process, so a later run can tell a dead run's root."""
    return f"{PREFIX}{os.getpid()}-{os.urandom(3).hex()}"


def create(name: str) -> None:
    for hierarchy in hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        # a v1 cpuset starts empty and refuses tasks until given CPUs and memory nodes
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (path / knob).exists() and not (path / knob).read_text().strip():
                (path / knob).write_text((hierarchy / knob).read_text())


def _remove_tree(path: Path) -> bool:
    """rmdir every cgroup below and at path, deepest first; True when all are gone."""
    if not path.exists():
        return True
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()
    return not path.exists()


def remove(name: str, timeout: float = 15) -> list[Path]:
    """Remove the root in every hierarchy; the kernel frees a cgroup a moment after its last
    task exits, so retry until the timeout. Returns what is still there."""
    deadline = time.monotonic() + timeout
    while True:
        left = [h / name for h in hierarchies() if not _remove_tree(h / name)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def remove_stale() -> None:
    """Remove the roots of runs whose process is gone (killed before it could clean up)."""
    for hierarchy in hierarchies():
        for path in hierarchy.glob(PREFIX + "*"):
            pid = path.name.removeprefix(PREFIX).split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _remove_tree(path)
