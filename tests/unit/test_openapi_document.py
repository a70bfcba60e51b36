"""The committed OpenAPI document of the TypeScript client (clients/typescript/openapi.json,
issue 22 item 1) is the app's: built here without servers and compared with the file."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any, cast

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

SCRIPT = REPO / "clients" / "typescript" / "export_openapi.py"


def export_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_openapi", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_openapi_document_is_the_app_s() -> None:
    script = export_script()
    document = cast(Callable[[], dict[str, Any]], script.document)()
    render = cast(Callable[[dict[str, Any]], str], script.render)
    committed = SCRIPT.with_name("openapi.json").read_text(encoding="utf-8")
    assert "servers" not in document
    if render(document) != committed:
        stale = json.loads(committed)
        changed = sorted(
            path
            for path in set(document["paths"]) | set(stale.get("paths", {}))
            if document["paths"].get(path) != stale.get("paths", {}).get(path)
        )
        pytest.fail(
            "clients/typescript/openapi.json differs from the app's OpenAPI document "
            f"(paths changed: {changed or 'none; components or info'}). Regenerate it: "
            "`python clients/typescript/export_openapi.py`, then `npm run generate` in "
            "clients/typescript, and commit both openapi.json and src/schema.d.ts"
        )
