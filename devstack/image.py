"""Container images built without Docker and without a registry, as OCI archives that
`ctr images import` loads into the cluster's containerd (Pods use imagePullPolicy: Never):

- the project's image, equivalent to the Dockerfile (which stays what Docker users build):
  a Debian bookworm root filesystem with python3 and the Dockerfile's user, plus a layer
  with a venv holding the project's wheel; user, environment, working directory, ports,
  entry point and command come from the Dockerfile, and `check_against_dockerfile` checks
  the result keeps them;
- redis-server and PostgreSQL 15 from Debian's packages, the same way;
- the Pod sandbox (`pause`) and CoreDNS, one static binary each (hack/node/build.sh).

Everything is cached outside the repository (devstack.rootfs.cache_root), keyed by recipe,
binary or source content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import dockerfile, oci, venv_layers
from devstack.cluster import layout
from devstack.process import DevstackError
from devstack.rootfs import Recipe, cache_root, debian_layer

REPO = Path(__file__).resolve().parents[1]
VENV = "/opt/botsession"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SOURCES = ("pyproject.toml", "README.md", "sessions", "controller", "api", "cli", "devstack")
REDIS_ARGS = ("--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no")  # noqa: S104
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_LIB = "/usr/lib/postgresql/15/lib"
PG_ENTRYPOINT = f"""#!/bin/sh
# Like the official image's entry point: initdb on first start, then postgres.
set -eu
export PATH={PG_BIN}:$PATH
user=${{POSTGRES_USER:-postgres}}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\\n' "${{POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}}" > "$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust \\
    --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ -n "${{POSTGRES_DB:-}}" ] && [ "$POSTGRES_DB" != postgres ]; then
    pg_ctl -D "$PGDATA" -w start \\
      -o "-c listen_addresses='' -c unix_socket_directories=/tmp" >/dev/null
    psql -h /tmp -U "$user" -d postgres -v ON_ERROR_STOP=1 -q \\
      -c "CREATE DATABASE \\"$POSTGRES_DB\\" OWNER \\"$user\\""
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp \\
  -c jit=off "$@"
"""


@dataclass(frozen=True)
class BuiltImage:
    name: str  # as Pods name it, e.g. botsession-operator:0.1.0-ab12cd34ef56
    archive: Path  # the OCI archive to import

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


def _digest(*parts: bytes | str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode() if isinstance(part, str) else part)
        sha.update(b"\0")
    return sha.hexdigest()


def _archive_path(kind: str, key: str) -> Path:
    return cache_root() / f"{kind}-{key[:16]}.oci.tar"


def _prune(kind: str, keep: Path, count: int = 2) -> None:
    """Old archives of the same kind (other source versions) go, but the newest few."""
    old = sorted(cache_root().glob(f"{kind}-*.oci.tar"), key=lambda p: -p.stat().st_mtime)
    for path in [p for p in old if p != keep][count - 1 :]:
        path.unlink(missing_ok=True)


def _ids(layer: oci.Layer, user: str) -> str:
    """uid:gid of a user in a root filesystem layer's /etc/passwd."""
    with tarfile.open(layer.path) as tar:
        stream = tar.extractfile("etc/passwd")
        assert stream is not None
        for line in stream.read().decode().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return f"{fields[2]}:{fields[3]}"
    raise DevstackError(f"no user {user} in the image's /etc/passwd")


def _config(**values: Any) -> dict[str, Any]:
    ports = values.pop("ports", ())
    config: dict[str, Any] = {key.title().replace("_", ""): v for key, v in values.items()}
    config["ExposedPorts"] = {port if "/" in port else f"{port}/tcp": {} for port in ports}
    return config


# --- the project -------------------------------------------------------------------


def source_digest(repo: Path = REPO) -> str:
    """What goes into the wheel (pyproject's packages, README), by path and content."""
    sha = hashlib.sha256()
    for entry in SOURCES:
        path = repo / entry
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                sha.update(file.relative_to(repo).as_posix().encode() + b"\0")
                sha.update(file.read_bytes())
    return sha.hexdigest()


def project_recipe(stage: dockerfile.FinalStage) -> Recipe:
    return Recipe(
        "python",
        ("python3", "python3-venv"),
        commands=(stage.groupadd, stage.useradd),
    )


def project_image(repo: Path = REPO) -> BuiltImage:
    """The project's image as the Dockerfile describes it (built when missing)."""
    stage = dockerfile.parse(repo / "Dockerfile")
    recipe = project_recipe(stage)
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    source = source_digest(repo)
    name = f"botsession-operator:{version}-{source[:12]}"
    env = {"PATH": f"{VENV}/bin:{SYSTEM_PATH}", **stage.env}
    config = _config(
        user=stage.user,
        env=[f"{k}={v}" for k, v in env.items()],
        working_dir=stage.workdir,
        entrypoint=list(stage.entrypoint),
        cmd=list(stage.cmd),
        ports=stage.ports,
    )
    key = _digest(recipe.key, source, json.dumps(config, sort_keys=True))
    archive = _archive_path("botsession-operator", key)
    if not archive.exists():
        base = debian_layer(recipe)
        work = cache_root() / f"build-project-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            deps = venv_layers.dependencies_layer(base, repo, SOURCES, VENV, stage.package, work)
            app = venv_layers.project_layer(base, deps, repo, SOURCES, VENV, work / "app.tar", work)
            oci.write_archive(archive, name, [base, deps, app], config)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _prune("botsession-operator", archive)
    return BuiltImage(name, archive)


def check_against_dockerfile(image: BuiltImage, repo: Path = REPO) -> list[str]:
    """How the built image differs from the Dockerfile's final stage (empty: they agree)."""
    return dockerfile.check(oci.read_archive(image.archive), dockerfile.parse(repo / "Dockerfile"))


# --- services from Debian packages -------------------------------------------------


def _debian_image(recipe: Recipe, name: str, user: str, **config: Any) -> BuiltImage:
    key = _digest(recipe.key, name, json.dumps(config, sort_keys=True))
    archive = _archive_path(recipe.name, key)
    if not archive.exists():
        layer = debian_layer(recipe)
        full = _config(user=_ids(layer, user), **config)
        oci.write_archive(archive, name, [layer], full)
    return BuiltImage(name, archive)


def redis_image() -> BuiltImage:
    recipe = Recipe("redis", ("redis-server",))
    return _debian_image(
        recipe,
        "localhost/botsession/redis:bookworm",
        "redis",
        env=[f"PATH={SYSTEM_PATH}"],
        working_dir="/tmp",  # noqa: S108 - inside the container
        entrypoint=["redis-server"],
        # reached from other Pods, no persistence (as the tests' private redis-server)
        cmd=[*REDIS_ARGS, "--dir", "/tmp"],  # noqa: S108 - inside the container
        ports=("6379",),
    )


def postgres_image() -> BuiltImage:
    recipe = Recipe(
        "postgresql",
        ("postgresql-15",),
        commands=(
            # the package's own cluster: the entry point makes one in $PGDATA
            "rm -rf /var/lib/postgresql/15 /etc/postgresql/15",
            # JIT (LLVM, 130 MB) is off: a throw-away test database has no use for it
            f"rm -rf {PG_LIB}/llvmjit.so {PG_LIB}/llvmjit_types.bc {PG_LIB}/bitcode "
            "/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1 /usr/lib/x86_64-linux-gnu/libz3.so.4",
            "rm -rf /usr/share/i18n/locales /usr/share/i18n/charmaps",
        ),
        files={"/usr/local/bin/postgres-entrypoint": (PG_ENTRYPOINT, 0o755)},
    )
    return _debian_image(
        recipe,
        "localhost/botsession/postgresql:15",
        "postgres",
        env=[f"PATH={PG_BIN}:{SYSTEM_PATH}", "PGDATA=/var/lib/postgresql/data/pgdata"],
        working_dir="/var/lib/postgresql",
        entrypoint=["/usr/local/bin/postgres-entrypoint"],
        cmd=[],
        ports=("5432",),
    )


# --- single static binaries --------------------------------------------------------


def binary_image(name: str, binary: Path, **config: Any) -> BuiltImage:
    """An image of one static binary at /<its name>, its entry point."""
    content = binary.read_bytes()
    full = _config(entrypoint=[f"/{binary.name}"], **config)
    key = _digest(content, name, json.dumps(full, sort_keys=True))
    archive = _archive_path(binary.name, key)
    if not archive.exists():
        layer_path = archive.with_name(archive.name + ".layer")
        files = {binary.name: (content, 0o755)}
        layer = oci.layer_from_files(layer_path, files, f"COPY {binary.name}")
        try:
            oci.write_archive(archive, name, [layer], full)
        finally:
            layer_path.unlink(missing_ok=True)
            layer_path.with_name(layer_path.name + ".sha256").unlink(missing_ok=True)
    return BuiltImage(name, archive)


def pause_image() -> BuiltImage:
    """The sandbox image, under the name containerd's sandbox_image gives."""
    return binary_image(
        layout.PAUSE_IMAGE, layout.binary_dir() / "pause", user="65535:65535", cmd=[]
    )


def coredns_image() -> BuiltImage:
    return binary_image(
        layout.COREDNS_IMAGE,
        layout.binary_dir() / "coredns",
        cmd=[],
        ports=("53/udp", "53/tcp", "9153/tcp"),
    )
