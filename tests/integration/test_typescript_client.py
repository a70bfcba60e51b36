"""The TypeScript client (clients/typescript, issue 22 item 1) against the real API: node's
own test runner runs the package's tests (clients/typescript/test/*.test.mjs) against a real
uvicorn serving the app on the test run's control plane, Redis and SQLite. Also checks that
the committed src/schema.d.ts is what openapi-typescript generates from the committed
openapi.json (tests/unit/test_openapi_document.py checks that document against the app)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from api.settings import ApiSettings
from devstack.controlplane import ControlPlane
from devstack.redis_server import RedisServer
from tests.conftest import REPO
from tests.integration.test_api import make_app, serving_app, session_settings

pytestmark = pytest.mark.integration

PACKAGE = REPO / "clients" / "typescript"
# kind: (name, token, scopes, rateLimit)
TOKENS = {
    "READER": ("ts-frontend", "ts-read-7c1d2e3f4a5b6c7d8e9f0a1b", ["read"], None),
    "REPORTER": ("bot-runner", "ts-report-0f1e2d3c4b5a69788796a5b4", ["report"], None),
    "BOTH": ("ts-dashboard", "ts-both-11223344556677889900aabb", ["read", "report"], None),
    # one request a second, one at once: the second in a row is 429 with Retry-After: 1
    "LIMITED": (
        "ts-limited",
        "ts-limited-a1b2c3d4e5f6a7b8c9d0e1f2",
        ["read"],
        {"perSecond": 1, "burst": 1},
    ),
}


def tokens_json() -> str:
    entries = []
    for name, token, scopes, rate in TOKENS.values():
        entry: dict[str, object] = {"name": name, "token": token, "scopes": scopes}
        if rate is not None:
            entry["rateLimit"] = rate
        entries.append(entry)
    return json.dumps(entries)


def run(*command: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    """Runs a command in the package; fails the test with its whole output if it fails."""
    done = subprocess.run(
        command,
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return output


@pytest.fixture(scope="module")
def package() -> Path:
    """The package installed (`npm ci`, skipped while node_modules is newer than
    package-lock.json) and built (`npm run build`: tsc to dist/)."""
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is not installed (Node.js 20+ is needed)"
    installed = PACKAGE / "node_modules" / ".package-lock.json"
    lock = PACKAGE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        run("npm", "ci", "--prefer-offline", "--no-audit", "--no-fund")
    run("npm", "run", "build")
    return PACKAGE


@contextmanager
def serving(
    controlplane: ControlPlane, namespace: str, redis_url: str, database: Path
) -> Iterator[str]:
    """The app on a real uvicorn (a thread of its own) with this test's tokens; its URL."""
    settings = session_settings(
        namespace, redis_url, f"sqlite+aiosqlite:///{database}", clear_wait="2s"
    )
    api_settings = ApiSettings.model_validate(
        {"tokens": tokens_json(), "tokens_file": None, "ready_timeout": 3.0}
    )
    with serving_app(make_app(controlplane.kubeconfig, settings, api_settings=api_settings)) as url:
        yield url


def test_the_client_s_node_tests_pass_against_the_real_api(
    package: Path,
    controlplane: ControlPlane,
    namespace: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    tests = sorted(str(p.relative_to(package)) for p in (package / "test").glob("*.test.mjs"))
    assert tests, "no tests in clients/typescript/test"
    with serving(controlplane, namespace, redis_server.url, tmp_path / "db.sqlite3") as url:
        env = {
            **os.environ,
            "BOTSESSION_API_URL": url,
            **{f"BOTSESSION_TOKEN_{kind}": token for kind, (_, token, _, _) in TOKENS.items()},
        }
        output = run("node", "--test", "--test-reporter=tap", *tests, timeout=240, env=env)
    summary = {
        line.split()[1]: int(line.split()[2])
        for line in output.splitlines()
        if line.startswith("# ") and len(line.split()) == 3 and line.split()[2].isdigit()
    }
    # nothing skipped: the API tests skip only without BOTSESSION_API_URL
    assert summary.get("pass", 0) >= 10, output
    assert (summary.get("fail"), summary.get("skipped"), summary.get("cancelled")) == (0, 0, 0), (
        output
    )


def test_the_committed_types_are_what_the_generator_makes(package: Path, tmp_path: Path) -> None:
    """`npm run generate` (its very command line, to a temporary file) remakes src/schema.d.ts
    from the committed openapi.json byte for byte."""
    script = json.loads((package / "package.json").read_text(encoding="utf-8"))["scripts"]
    command = shlex.split(script["generate"])
    assert command[0] == "openapi-typescript" and command[-2:] == ["--output", "src/schema.d.ts"]
    generated = tmp_path / "schema.d.ts"
    binary = str(package / "node_modules" / ".bin" / "openapi-typescript")
    run(binary, *command[1:-2], "--output", str(generated))
    committed = (package / "src" / "schema.d.ts").read_text(encoding="utf-8")
    assert generated.read_text(encoding="utf-8") == committed, (
        "clients/typescript/src/schema.d.ts is not what openapi-typescript makes of "
        "openapi.json: run `npm run generate` in clients/typescript"
    )
