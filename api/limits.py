"""Per-token rate limits: a token bucket per API token (its name), refilled at the token's
rate, as configured in the tokens file (`rateLimit`) or by the default for non-admin tokens.
Buckets are per API replica; an empty bucket answers 429 with Retry-After (auth.admit). The
body limit is api.middleware.BodyLimit."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """`per_second` requests a second on average, up to `burst` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate needs perSecond > 0 and burst >= 1")


class RateLimiter:
    """Token buckets by API token name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, updated)

    def admit(self, name: str, rate: Rate | None) -> float | None:
        """None when the request may go on; else the seconds until it may (Retry-After)."""
        if rate is None:
            return None
        now = self._clock()
        tokens, updated = self._buckets.get(name, (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - updated) * rate.per_second)
        if tokens >= 1:
            self._buckets[name] = (tokens - 1, now)
            return None
        self._buckets[name] = (tokens, now)
        return max(1.0, math.ceil((1 - tokens) / rate.per_second))
