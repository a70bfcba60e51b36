"""The API's request metrics: one series per method, route template and status."""

from __future__ import annotations

from api import metrics


def counted(method: str, route: str, status: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "botsession_api_requests_total", {"method": method, "route": route, "status": status}
    )
    return value or 0.0


def observed(method: str, route: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "botsession_api_request_duration_seconds_count", {"method": method, "route": route}
    )
    return value or 0.0


def test_requests_are_counted_per_route_and_status() -> None:
    before = counted("GET", "/test/{id}", "200"), counted("GET", "/test/{id}", "404")
    timed = observed("GET", "/test/{id}")
    for _ in range(3):
        metrics.observe("GET", "/test/{id}", 200, 0.002)
    metrics.observe("GET", "/test/{id}", 404, 0.001)
    assert counted("GET", "/test/{id}", "200") == before[0] + 3
    assert counted("GET", "/test/{id}", "404") == before[1] + 1
    assert observed("GET", "/test/{id}") == timed + 4


def test_unknown_methods_and_unmatched_paths_do_not_add_label_values() -> None:
    before = counted("OTHER", "unmatched", "405")
    for method in ("FOO", "BAR", "get-ish", None):
        metrics.observe(method, None, 405, 0.001)
    assert counted("OTHER", "unmatched", "405") == before + 4
    assert counted("FOO", "unmatched", "405") == 0.0
