"""The figures the cluster tests measure (upgrade error window, takeover and restart times):
each is printed at once on a line starting with `E2E-FIGURES` (outside pytest's capture),
and all of them are written as JSON to $BOTSESSION_E2E_FIGURES when it is set, rewritten
after every figure so a later failure keeps the ones already measured."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV = "BOTSESSION_E2E_FIGURES"
MARK = "E2E-FIGURES"


class Figures:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "figures": {},
        }

    @classmethod
    def from_environment(cls) -> Figures:
        value = os.environ.get(ENV)
        return cls(Path(value) if value else None)

    def record(self, name: str, values: dict[str, Any], out: Callable[[str], None]) -> None:
        self.data["figures"][name] = values
        out(f"\n{MARK} {name}: {json.dumps(values, sort_keys=True)}")
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
