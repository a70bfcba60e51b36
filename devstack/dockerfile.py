"""What the Dockerfile's final stage promises (user and its ids, environment, working
directory, ports, entry point, command, the package it installs), read from the file, and
a check that a built image keeps those promises. devstack.image builds from the former and
runs the latter, so the Dockerfile stays the one description of the image."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from devstack.oci import Image


@dataclass(frozen=True)
class FinalStage:
    env: dict[str, str]
    user: str  # as USER says it, e.g. 10001:10001
    workdir: str
    ports: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    username: str  # from the useradd in a RUN
    uid: int
    gid: int
    shell: str
    package: str  # the distribution `pip install` names

    @property
    def groupadd(self) -> str:
        return f"groupadd --gid {self.gid} {self.username}"

    @property
    def useradd(self) -> str:
        return (
            f"useradd --uid {self.uid} --gid {self.gid} --no-create-home "
            f"--shell {self.shell} {self.username}"
        )


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def parse(path: Path) -> FinalStage:
    steps = _instructions(path.read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    env: dict[str, str] = {}
    values: dict[str, str] = {}
    runs: list[str] = []
    for word, rest in steps[last_from + 1 :]:
        if word == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))  # type: ignore[misc]
        elif word == "RUN":
            runs.extend(part.strip() for part in rest.split("&&"))
        else:
            values[word] = rest
    useradd = shlex.split(next(r for r in runs if r.startswith("useradd ")))
    install = shlex.split(next(r for r in runs if " install " in f" {r} " and "pip" in r))
    return FinalStage(
        env=env,
        user=values["USER"],
        workdir=values["WORKDIR"],
        ports=tuple(values["EXPOSE"].split()),
        entrypoint=tuple(json.loads(values["ENTRYPOINT"])),
        cmd=tuple(json.loads(values["CMD"])),
        username=useradd[-1],
        uid=int(_option(useradd, "--uid")),
        gid=int(_option(useradd, "--gid")),
        shell=_option(useradd, "--shell"),
        package=install[-1],
    )


def check(image: Image, stage: FinalStage) -> list[str]:
    """Every way the image differs from the final stage; empty when they agree."""
    problems: list[str] = []
    config = image.config

    def expect(what: str, got: object, want: object) -> None:
        if got != want:
            problems.append(f"{what}: image has {got!r}, the Dockerfile says {want!r}")

    expect("user", config.get("User"), stage.user)
    expect("entrypoint", tuple(config.get("Entrypoint") or ()), stage.entrypoint)
    expect("cmd", tuple(config.get("Cmd") or ()), stage.cmd)
    expect("workdir", config.get("WorkingDir"), stage.workdir)
    expect("exposed ports", set(config.get("ExposedPorts", {})), {f"{p}/tcp" for p in stage.ports})
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    for key, value in stage.env.items():
        expect(f"env {key}", env.get(key), value)

    names: set[str] = set()
    texts: dict[str, str] = {}
    for info, layer in image.files():
        name = info.name.lstrip("./")
        names.add(name)
        if name in ("etc/passwd", "etc/group") and info.isfile():
            stream = layer.extractfile(info)
            texts[name] = stream.read().decode() if stream else ""
    passwd = [line.split(":") for line in texts.get("etc/passwd", "").splitlines()]
    user = next((e for e in passwd if e[0] == stage.username), None)
    if user is None:
        problems.append(f"no user {stage.username} in /etc/passwd")
    else:
        expect("uid", int(user[2]), stage.uid)
        expect("gid", int(user[3]), stage.gid)
        expect("login shell", user[6], stage.shell)
    groups = [line.split(":") for line in texts.get("etc/group", "").splitlines()]
    if not any(g[0] == stage.username and int(g[2]) == stage.gid for g in groups):
        problems.append(f"no group {stage.username} with gid {stage.gid} in /etc/group")
    dist = stage.package.replace("-", "_")
    if not any(re.search(rf"/site-packages/{dist}-[^/]+\.dist-info/RECORD$", n) for n in names):
        problems.append(f"the package {stage.package} is not installed")
    path = env.get("PATH", "").split(":")
    program = stage.entrypoint[0] if stage.entrypoint else ""
    if not any(f"{d.strip('/')}/{program}" in names for d in path):
        problems.append(f"the entry point {program!r} is on no directory of the image's PATH")
    if stage.workdir.strip("/") not in names:
        problems.append(f"the working directory {stage.workdir} does not exist")
    return problems
