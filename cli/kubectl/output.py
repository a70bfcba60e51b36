"""The plugin's output: aligned text tables (stdlib only), ages, and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """kubectl's look: upper-case headers, columns padded to their widest cell with three
    spaces between them, no trailing blanks. `None` prints as `<none>`."""
    cells = [[str(h).upper() for h in headers]] + [
        ["<none>" if value is None else str(value) for value in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def age(seconds: float | None) -> str | None:
    """kubectl's short ages: 45s, 7m12s, 3h4m, 2d5h, 400d."""
    if seconds is None:
        return None
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs and minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes and hours < 10 else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours and days < 10 else f"{days}d"


def since(moment: datetime | None, now: datetime) -> str | None:
    return age((now - moment).total_seconds()) if moment else None


def write_json(document: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
