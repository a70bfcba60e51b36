"""Event-driven waits for the cluster tests: a cheap check polled at a short interval under
a generous deadline. The failure names what was awaited and the last value (or error) seen,
so a timeout says where things stood."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """check() until it returns something truthy (returned). An exception counts as "not
    yet" (a Pod that is starting refuses connections); the last one is in the failure."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s; last: {last!r}"[:3000])
        time.sleep(interval)


class Stopwatch:
    """Seconds since it was made (monotonic), rounded for the figures."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.start, 2)
