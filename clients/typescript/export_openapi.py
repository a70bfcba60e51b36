"""Write the API's OpenAPI document to clients/typescript/openapi.json (issue 22, item 1).

The document is built from the app itself (api.app.create_app) without starting anything:
no stores, no servers, no `servers` entry. Keys are sorted and indented so a change of the
API is a readable diff. After running this, run `npm run generate` in clients/typescript to
regenerate src/schema.d.ts; tests/unit/test_openapi_document.py fails while the committed
document and the app differ.

    python clients/typescript/export_openapi.py            # write openapi.json
    python clients/typescript/export_openapi.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DOCUMENT = HERE / "openapi.json"
REGENERATE = (
    "python clients/typescript/export_openapi.py, then `npm run generate` in clients/typescript"
)
# any token will do: the document does not depend on the tokens, and nothing is served
_PLACEHOLDER_TOKENS = [
    {"name": "openapi", "token": "openapi-export-placeholder", "scopes": ["read"]}
]


def document() -> dict[str, Any]:
    """The app's OpenAPI document, as /openapi.json serves it (minus any `servers`)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from api.app import create_app
    from api.settings import ApiSettings
    from sessions.domain import privacy
    from sessions.domain.settings import load_settings
    from sessions.runtime import Runtime

    async def never_opened(settings: object) -> Runtime:
        raise AssertionError("the document needs no runtime")

    quiet = logging.getLogger(privacy.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "BOTSESSION_FINGERPRINT_KEY is not set": not our concern
    try:
        app = create_app(
            load_settings(),
            runtime_factory=never_opened,
            api_settings=ApiSettings.model_validate(
                {"tokens": json.dumps(_PLACEHOLDER_TOKENS), "tokens_file": None}
            ),
        )
    finally:
        quiet.setLevel(level)
    spec = dict(app.openapi())
    spec.pop("servers", None)
    return spec


def render(spec: dict[str, Any]) -> str:
    """Sorted, indented JSON with a final newline: the committed file's exact text."""
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    parser.add_argument("--output", type=Path, default=DOCUMENT, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = render(document())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}; now run `npm run generate` in {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
