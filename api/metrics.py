"""The API's Prometheus metrics: requests and latency per route template and status."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sessions.adapters.guard import guard_metrics

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "botsession_api_requests_total",
    "HTTP requests",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "botsession_api_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


RATE_LIMITED = Counter(
    "botsession_api_rate_limited_total",
    "Requests refused with 429 because their token was over its rate limit",
    ["token"],
    registry=REGISTRY,
)
WRITES_REFUSED = Counter(
    "botsession_api_writes_refused_total",
    "Reports and clears answered 503 because too many were waiting for a turn (api.admission)",
    registry=REGISTRY,
)
WRITES_WAITING = Gauge(
    "botsession_api_writes_waiting",
    "Reports and clears waiting for a turn (api.admission)",
    registry=REGISTRY,
)
BODY_TOO_LARGE = Counter(
    "botsession_api_body_too_large_total",
    "Requests refused with 413 because their body was over the limit",
    registry=REGISTRY,
)


GUARDS = guard_metrics(REGISTRY, "botsession_api")


_Series = tuple[Counter, Histogram]
_series: dict[tuple[str, str | None, int], _Series] = {}
# any other method a client sends is counted as OTHER: the label values stay a fixed set
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe(method: str | None, route: str | None, status: int, seconds: float) -> None:
    """Route templates only (never raw paths: they hold user ids), so labels stay bounded.
    The labelled series are looked up once per (method, route, status), then kept."""
    if method not in METHODS:
        method = "OTHER"
    series = _series.get((method, route, status))
    if series is None:
        template = route or "unmatched"
        series = (
            REQUESTS.labels(method, template, str(status)),
            LATENCY.labels(method, template),
        )
        _series[(method, route, status)] = series
    series[0].inc()
    series[1].observe(seconds)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
