"""The oldest redis-py that pyproject.toml allows works: its store runs against a real
redis-server. (5.2.1 lacks ExponentialWithJitterBackoff and 5.3.0 its PyJWT dependency:
neither imports.) The floor release is installed from the package index into a temporary
directory, ahead of the venv's own redis on sys.path, in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devstack.redis_server import RedisServer
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SMOKE = """
import asyncio, sys
from datetime import timedelta
import redis
from sessions.domain.model import Identity, Phase, SessionKey, SessionState, utcnow
from sessions.adapters.redis.store import RedisStore, connect
from sessions.usecases.sweep import sweep

async def main(url: str) -> None:
    store = RedisStore(connect(url, retries=1, timeout=timedelta(seconds=2)))
    now = utcnow().replace(microsecond=0)
    key = SessionKey("bot-1", "user-1")
    state = SessionState(key, Phase.ACTIVE, 1, None, now, now + timedelta(seconds=1), now,
                         Identity("4915112345678", "Jane", "s"), incarnation=7)
    assert await store.write(state, timedelta(seconds=1))
    assert await store.heartbeat(key, now) is not None
    got = await asyncio.gather(store.get(key), store.get(SessionKey("bot-1", "x")))
    assert got[0] is not None and got[0].incarnation == 7 and got[1] is None
    assert (await store.most_recent("bot-1")).key == key
    removed = (await sweep(store, now=now + timedelta(seconds=5))).removed
    assert [s.why for s in removed] == ["expired"]
    assert not await store.write(state, timedelta(seconds=1))  # the tombstone holds
    await store.close()
    print("redis-py", redis.__version__, "ok")

asyncio.run(main(sys.argv[1]))
"""


def redis_floor() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    spec = next(d for d in project["project"]["dependencies"] if d.startswith("redis"))
    found = re.search(r">=\s*([0-9][0-9.]*)", spec)
    assert found, spec
    return found.group(1)


def test_the_oldest_allowed_redis_py_runs_the_store(tmp_path: Path) -> None:
    floor = redis_floor()
    target = tmp_path / "floor"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(target),
            f"redis=={floor}",
        ],
        check=True,
        timeout=300,
    )
    with RedisServer() as server:
        result = subprocess.run(
            [sys.executable, "-c", SMOKE, server.url],
            env={"PYTHONPATH": f"{target}:{REPO}", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"redis-py {floor} ok"
