"""The layering of the design notes, enforced: api and controller depend on sessions,
never on each other; sessions imports neither kopf nor FastAPI; sessions.domain.model nothing."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = {"kopf", "fastapi", "starlette", "uvicorn"}


def imported_modules(folder: str) -> dict[str, set[str]]:
    """file -> the full dotted names it imports (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def imported_top_modules(package: str) -> dict[str, set[str]]:
    """file -> the top-level names it imports (absolute imports only)."""
    return {
        f: {name.split(".")[0] for name in names} for f, names in imported_modules(package).items()
    }


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
    names = imported_top_modules("sessions")["sessions/domain/model.py"]
    assert names - {"__future__"} <= set(sys.stdlib_module_names)


def test_sessions_has_three_rooms_and_the_wiring() -> None:
    top = {p.name for p in (ROOT / "sessions").iterdir() if not p.name.startswith("__")}
    assert top == {"domain", "adapters", "usecases", "runtime.py"}


def test_the_domain_imports_only_the_standard_library_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    offenders = {
        f: sorted(n for n in names if n.split(".")[0] not in allowed)
        for f, names in imported_modules("sessions/domain").items()
    }
    offenders = {
        f: [n for n in names if not n.startswith("sessions.domain")]
        for f, names in offenders.items()
    }
    offenders["sessions/domain/settings.py"] = [
        n
        for n in offenders["sessions/domain/settings.py"]
        if n not in {"pydantic", "pydantic_settings"}
    ]
    assert {f: names for f, names in offenders.items() if names} == {}


@pytest.mark.parametrize(
    ("room", "forbidden"),
    [
        ("sessions/domain", ("sessions.adapters", "sessions.usecases", "sessions.runtime")),
        ("sessions/adapters", ("sessions.usecases", "sessions.runtime")),
        ("sessions/usecases", ("sessions.runtime",)),
    ],
)
def test_inner_rooms_import_only_inwards(room: str, forbidden: tuple[str, ...]) -> None:
    offenders = {
        f: sorted(n for n in names if n.startswith(forbidden))
        for f, names in imported_modules(room).items()
    }
    assert {f: names for f, names in offenders.items() if names} == {}


def test_the_room_checker_sees_imports() -> None:
    assert (
        "sessions.domain.model"
        in imported_modules("sessions/usecases")["sessions/usecases/service.py"]
    )


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
    """One owner of the keyspace: sessions.adapters.redis.store.RedisKeys (and its Lua scripts).
    settings.py holds the default prefix."""
    found: dict[str, list[str]] = {}
    for package in ("sessions", "api", "controller", "cli"):
        found |= key_literals(package)
    assert set(found) == {"sessions/adapters/redis/store.py", "sessions/domain/settings.py"}, found
    assert found["sessions/domain/settings.py"] == ["botsession:"]


def test_only_the_client_module_imports_the_kubernetes_library() -> None:
    """One place owns the library: its credentials, threads and error mapping
    (docs/architecture.md, "The Kubernetes client"). kubernetes_asyncio is never used: kopf
    would import it too (45 MB per process)."""
    importers = {
        f
        for package in ("sessions", "api", "controller", "cli")
        for f, names in imported_top_modules(package).items()
        if names & {"kubernetes", "kubernetes_asyncio"}
    }
    assert importers == {"sessions/adapters/kubernetes/client.py"}
