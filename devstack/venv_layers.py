"""The project's Python environment as two image layers over a Debian root filesystem:
a venv with every dependency (cached: it changes only with pyproject.toml), and the
project's own wheel installed into it (remade whenever the sources change, in seconds).
Wheels are built on the host by Debian's python3, the very interpreter the image has, so
environment markers (python_full_version) resolve as they will in the image; pip inside
the image's chroot installs them with no index (no network needed inside)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devstack import oci
from devstack.process import DevstackError
from devstack.rootfs import cache_root, chroot_script, extract, in_namespaces

PIP = "--disable-pip-version-check --quiet"


def builder_python(repo: Path) -> tuple[Path, str]:
    """A venv of the host's /usr/bin/python3 with the project's build requirements (cached,
    so the project's wheel builds without an isolated build environment each time), and
    that interpreter's version."""
    python = "/usr/bin/python3"
    version = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    requires = [*_pyproject(repo)["build-system"]["requires"], "wheel"]
    key = hashlib.sha256("\0".join(requires).encode()).hexdigest()[:8]
    venv = cache_root() / f"pip-python-{version}-{key}"
    if not (venv / "ready").exists():
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", *PIP.split(), "install"]
        subprocess.run([*pip, *requires], check=True, timeout=600)
        (venv / "ready").touch()
    return venv / "bin" / "python", version


def _pyproject(repo: Path) -> dict[str, Any]:
    return tomllib.loads((repo / "pyproject.toml").read_text())


def _pip_wheel(python: Path, *args: str) -> None:
    argv = [str(python), "-m", "pip", *PIP.split(), "wheel", "--no-build-isolation", *args]
    subprocess.run(argv, check=True, timeout=1200)


def project_wheel(repo: Path, directory: Path, python: Path, sources: Sequence[str]) -> Path:
    """The project's wheel, built from a clean copy of its sources: setuptools builds in
    the tree and keeps build/lib, so a module deleted from the repo could still ship."""
    tree = directory / "src"
    shutil.rmtree(tree, ignore_errors=True)
    for entry in sources:
        if (repo / entry).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(repo / entry, tree / entry, ignore=ignore)
        else:
            tree.mkdir(parents=True, exist_ok=True)
            shutil.copy(repo / entry, tree / entry)
    _pip_wheel(python, "--no-deps", "--wheel-dir", str(directory), str(tree))
    shutil.rmtree(tree)
    return next(directory.glob("*.whl"))


def _wheel_name(repo: Path) -> str:
    name: str = _pyproject(repo)["project"]["name"]
    return name.replace("-", "_")


def dependency_wheels(repo: Path, python: Path, own: Path) -> Path:
    """Every dependency's wheel (of the project's wheel `own`), cached per pyproject.toml
    and interpreter."""
    key = hashlib.sha256((repo / "pyproject.toml").read_bytes() + str(python).encode())
    wheels = cache_root() / f"wheels-{key.hexdigest()[:16]}"
    if not wheels.exists():
        tmp = wheels.with_name(wheels.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _pip_wheel(python, "--wheel-dir", str(tmp), str(own))
        for stale in tmp.glob(f"{_wheel_name(repo)}-*.whl"):
            stale.unlink()  # the project's own: made fresh each time
        tmp.rename(wheels)
    return wheels


def _check_interpreter(root: Path, version: str) -> None:
    in_namespaces(
        chroot_script(
            root, ["python3 -c 'import platform; print(platform.python_version())' > /tmp/v"]
        )
    )
    image = (root / "tmp" / "v").read_text().strip()
    (root / "tmp" / "v").unlink()
    if image != version:
        raise DevstackError(
            f"the image's python3 is {image}, the host's /usr/bin/python3 (which builds the "
            f"wheels) is {version}: update the host's python3 so both are Debian bookworm's"
        )


def _paths(root: Path) -> set[str]:
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        found.update(name if base == "." else f"{base}/{name}" for name in [*dirnames, *filenames])
    return found


def _with_parents(paths: set[str]) -> set[str]:
    keep = set(paths)
    for path in paths:
        parts = path.split("/")
        keep.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return keep


def dependencies_layer(
    base: oci.Layer, repo: Path, sources: Sequence[str], venv: str, package: str, work: Path
) -> oci.Layer:
    """The venv with the package's dependencies (not the package), cached."""
    python, version = builder_python(repo)
    key = hashlib.sha256(
        "\0".join([base.digest, venv, package, version]).encode()
        + (repo / "pyproject.toml").read_bytes()
    ).hexdigest()[:16]
    out = cache_root() / f"venv-deps-{key}.tar"
    comment = f"python3 -m venv {venv} && pip install <dependencies of {package}>"
    if out.exists():
        return oci.layer_of_file(out, comment)
    root = work / "deps-root"
    extract(base, root)
    _check_interpreter(root, version)
    wheels = root / "tmp" / "wheels"
    own = project_wheel(repo, work / "own", python, sources)
    shutil.copytree(dependency_wheels(repo, python, own), wheels)
    shutil.copy(own, wheels)  # it names the dependencies
    pip = f"{venv}/bin/pip {PIP}"
    in_namespaces(
        chroot_script(
            root,
            [
                f"python3 -m venv {venv}",
                f"{pip} install --no-cache-dir --no-index --find-links /tmp/wheels {package}",
                f"{pip} uninstall --yes {package}",
            ],
        )
    )
    keep = _with_parents({p for p in _paths(root) if p.startswith(venv.strip("/") + "/")})
    layer = oci.layer_from_dir(root, out, comment, lambda rel: rel not in keep)
    shutil.rmtree(root)
    return layer


def project_layer(
    base: oci.Layer,
    deps: oci.Layer,
    repo: Path,
    sources: Sequence[str],
    venv: str,
    out: Path,
    work: Path,
) -> oci.Layer:
    """Only what installing the project's wheel (no dependencies) adds to the venv."""
    python, _ = builder_python(repo)
    root = work / "root"
    extract(base, root)
    extract(deps, root)
    wheel = project_wheel(repo, work / "own-wheel", python, sources)
    before = _paths(root)
    shutil.copy(wheel, root / "tmp" / wheel.name)
    in_namespaces(
        chroot_script(
            root, [f"{venv}/bin/pip {PIP} install --no-cache-dir --no-deps /tmp/{wheel.name}"]
        )
    )
    (root / "tmp" / wheel.name).unlink()
    keep = _with_parents(_paths(root) - before)
    return oci.layer_from_dir(
        root, out, f"pip install --no-deps {wheel.name}", lambda rel: rel not in keep
    )
