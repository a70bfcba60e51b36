"""The layering of the design notes, enforced: api and controller depend on sessions,
never on each other; sessions imports neither kopf nor FastAPI; sessions.model nothing."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = {"kopf", "fastapi", "starlette", "uvicorn"}


def imported_top_modules(package: str) -> dict[str, set[str]]:
    """file -> the top-level names it imports (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("sessions", FRAMEWORKS | {"api", "controller", "cli", "devstack"}),
        ("controller", {"api", "fastapi", "starlette", "uvicorn", "cli", "devstack"}),
        ("api", {"controller", "kopf", "cli", "devstack"}),
    ],
)
def test_package_does_not_import(package: str, forbidden: set[str]) -> None:
    offenders = {
        f: sorted(names & forbidden)
        for f, names in imported_top_modules(package).items()
        if names & forbidden
    }
    assert offenders == {}


def test_model_depends_on_nothing_but_the_standard_library() -> None:
    names = imported_top_modules("sessions")["sessions/model.py"]
    assert names - {"__future__"} <= set(sys.stdlib_module_names)


def test_the_checker_sees_imports() -> None:
    """Guard against a checker that passes because it reads nothing."""
    assert "devstack" in imported_top_modules("cli")["cli/main.py"]


KEY_LITERAL = re.compile(r"^(session|botsession):\S*$")


def key_literals(package: str) -> dict[str, list[str]]:
    """file -> string constants that look like a Redis key (no spaces, a key's prefix)."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and KEY_LITERAL.match(value):
                found.setdefault(str(path.relative_to(ROOT)), []).append(value)
    return found


def test_only_the_redis_store_names_redis_keys() -> None:
    """One owner of the keyspace: sessions.redis_store.RedisKeys (and its Lua scripts).
    settings.py holds the default prefix."""
    found: dict[str, list[str]] = {}
    for package in ("sessions", "api", "controller", "cli"):
        found |= key_literals(package)
    assert set(found) == {"sessions/redis_store.py", "sessions/settings.py"}, found
    assert found["sessions/settings.py"] == ["botsession:"]
