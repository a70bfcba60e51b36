"""The layering of the design notes, enforced: api and controller depend on sessions,
never on each other; sessions imports neither kopf nor FastAPI; sessions.model nothing."""

from __future__ import annotations

import ast
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
