"""A private PostgreSQL cluster (initdb into a temp dir) on a loopback port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Self

from devstack.process import (
    DevstackError,
    ManagedProcess,
    ensure_port_free,
    find_binary,
    free_port,
    wait_until,
)

_SUPERUSER = "postgres"
DATABASE = "botsession"


def postgres_bindir() -> Path:
    """The newest installed server's bin dir (Debian keeps them versioned)."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for candidate in reversed(dirs):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    return Path(find_binary("initdb")).parent


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root: drop to the 'postgres' (or 'nobody') user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise DevstackError("running as root and neither a 'postgres' nor 'nobody' user exists")


class PostgresServer(ManagedProcess):
    name = "postgres"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.bindir = postgres_bindir()
        self.user = _run_as()
        self.datadir = self.workdir / "data"

    @property
    def dsn(self) -> str:
        """libpq-style URL of the project database."""
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def url(self, driver: str = "asyncpg") -> str:
        """SQLAlchemy URL, e.g. postgresql+asyncpg://..."""
        return f"postgresql+{driver}://{_SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _chown(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in [self.workdir, *self.workdir.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _tool(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bindir / name), *args],
            capture_output=True,
            text=True,
            user=self.user,
            cwd=self.workdir,
            check=False,
        )
        if result.returncode != 0:
            raise DevstackError(f"{name} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def start(self) -> Self:
        ensure_port_free(self.port, "postgres")
        self._chown()
        if not (self.datadir / "PG_VERSION").exists():
            self._tool(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                _SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            )
        self._spawn(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-k",
                str(self.workdir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            user=self.user,
        )
        isready = str(self.bindir / "pg_isready")
        wait_until(
            lambda: (
                subprocess.run(
                    [isready, "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
                ).returncode
                == 0
            ),
            60,
            "postgres",
            self.proc,
            self.log_path,
        )
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")  # noqa: S608
        if exists.strip() != "1":
            self.psql(f"CREATE DATABASE {DATABASE}", database="postgres")
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement with psql and return its unaligned output."""
        psql = shutil.which("psql") or str(self.bindir / "psql")
        result = subprocess.run(
            [
                psql,
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                _SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DevstackError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def stop(self, sig: int = 2, timeout: float = 15) -> None:  # SIGINT: fast shutdown
        super().stop(sig, timeout)
