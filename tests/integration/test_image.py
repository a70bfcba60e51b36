"""The container image, without a Docker engine: the Dockerfile's steps by hand. Build the
wheels (as its build stage does), install them into a clean venv as a non-root user with
no index (as its final stage does), and run every entrypoint the image and the chart use."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessions.adapters.sql.migrate import head_revision

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def as_user(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """Run as `nobody` when we are root (CI is), else as ourselves (already non-root)."""
    user = "nobody" if os.geteuid() == 0 else None
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        user=user,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        cwd=home,
        timeout=600,
    )


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    # not pytest's tmp_path: its parents are private to root, and `nobody` must get in
    root = Path(tempfile.mkdtemp(prefix="botsession-image-"))
    root.chmod(0o755)
    home, wheels = root / "home", root / "wheels"
    home.mkdir()
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    venv = home / "venv"
    created = as_user([python, "-m", "venv", str(venv)], home)
    assert created.returncode == 0, created.stderr
    # the build stage: wheels for the project and every dependency, made by the same
    # interpreter that installs them (environment markers differ between 3.11 patches)
    built = subprocess.run(
        [str(venv / "bin" / "pip"), "wheel", "--quiet", "--wheel-dir", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    for path in [wheels, *wheels.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    # the final stage: install with no index, as a non-root user
    result = as_user(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheels),
            "botsession-operator",
        ],
        home,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    yield venv
    shutil.rmtree(root, ignore_errors=True)


def test_the_wheel_carries_its_lua_scripts_and_migrations(installed: Path) -> None:
    wheel = next((installed.parent.parent / "wheels").glob("botsession_operator-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "sessions/adapters/redis/lua/sweep.lua",
        "sessions/adapters/redis/lua/_common.lua",
        "sessions/adapters/sql/migrations/env.py",
        "sessions/adapters/sql/migrations/script.py.mako",
        *(
            f"sessions/adapters/sql/migrations/versions/{path.name}"
            for path in (REPO / "sessions" / "migrations" / "versions").glob("0*.py")
        ),
    ):
        assert required in names
    assert not any(n.startswith("tests/") for n in names)


@pytest.mark.parametrize("command", [[], ["operator"], ["api"], ["migrate"], ["crd"]])
def test_each_entrypoint_runs_as_non_root(installed: Path, command: list[str]) -> None:
    result = as_user([str(installed / "bin" / "botsession"), *command, "--help"], installed.parent)
    assert result.returncode == 0, result.stderr
    assert "usage: botsession" in result.stdout


def test_migrate_works_from_the_installed_package(installed: Path) -> None:
    database = installed.parent / "db.sqlite3"
    result = as_user(
        [
            str(installed / "bin" / "botsession"),
            "migrate",
            "--database-url",
            f"sqlite+aiosqlite:///{database}",
        ],
        installed.parent,
    )
    assert result.returncode == 0, result.stderr
    assert f"-> {head_revision()}" in result.stdout


def test_the_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2 and all("-slim" in s for s in stages)
    final = dockerfile.rsplit(stages[1], 1)[1]
    assert "USER 10001" in final and "--no-index" in final
    assert "gcc" not in final and "build-essential" not in final
