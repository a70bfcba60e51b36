"""The Grafana dashboard and the alert rules (issue 22, item 4): every query names only
metrics the project exports, the rendered rules pass promtool (and fire when they should),
and every panel's query runs on a real Prometheus (Debian's package) scraping a running
operator and API."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from api import metrics as api_metrics
from controller import metrics as operator_metrics
from devstack.process import find_binary, free_port
from devstack.prometheus_server import PrometheusServer, ScrapeTarget
from tests.integration.operator_stack import Stack
from tests.integration.test_api import BOT, TOKENS, V1, auth, serving, session_settings
from tests.integration.test_helm import render

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "helm" / "botsession-operator" / "files" / "grafana-dashboard.json"
PREFIX = "botsession_"  # the operator's metrics; the API's are botsession_api_*
# what Grafana puts in for its template variables when the test runs a panel's query
VARIABLES = {"namespace": ".*", "__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    | {"group_left", "group_right", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


# --- what the project exports, and what a query names ----------------------------------


def series_names(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry exposes, labelled children or not (a labelled metric
    without children has no samples yet, so read the families' types)."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


EXPORTED = series_names(operator_metrics.REGISTRY) | series_names(api_metrics.REGISTRY)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label
    matchers, ranges and grouping lists are gone, that are neither functions nor keywords."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function (or an aggregation)
        if match.group() not in KEYWORDS:
            names.add(match.group())
    return names


def substituted(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        assert match.group(1) in VARIABLES, f"unknown template variable in {expr!r}"
        return VARIABLES[match.group(1)]

    return _VARIABLE.sub(value, expr)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, query with the template variables filled in) of every panel."""
    return [
        (panel["title"], substituted(target["expr"]))
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def rendered_rules() -> dict[str, Any]:
    """The chart's PrometheusRule with every alert on, as a Prometheus rule file."""
    result = render(
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--show-only",
        "templates/monitoring.yaml",
    )
    assert result.returncode == 0, result.stderr
    (rule,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert rule["kind"] == "PrometheusRule"
    groups: dict[str, Any] = {"groups": rule["spec"]["groups"]}
    return groups


def alert_exprs(rules: dict[str, Any]) -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def test_the_tokenizer_finds_metric_names_and_nothing_else() -> None:
    assert metric_names(
        'sum by (route) (rate(botsession_api_requests_total{status=~"5..",'
        ' route!~".*/x"}[5m])) / on (namespace) group_left sum(up offset 5m) > 1e+06'
    ) == {"botsession_api_requests_total", "up"}
    assert metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(botsession_sweep_duration_seconds_bucket"
        "[2h]))) and time() - max(botsession_sweep_last_success_timestamp_seconds) > 3600"
    ) == {
        "botsession_sweep_duration_seconds_bucket",
        "botsession_sweep_last_success_timestamp_seconds",
    }
    assert "botsession_transitions_total" in EXPORTED
    assert "botsession_transitions" not in EXPORTED  # a counter is exposed as _total
    assert "botsession_api_request_duration_seconds_bucket" in EXPORTED
    assert "botsession_api_store_unanswered" in EXPORTED  # the guards' metrics, both sides


def test_every_dashboard_query_names_only_exported_metrics() -> None:
    board = dashboard()
    queries = panel_queries()
    assert len(queries) >= 30
    unknown = {
        (title, name)
        for title, expr in queries
        for name in metric_names(expr)
        if name not in EXPORTED
    }
    assert unknown == set()
    assert all(metric_names(expr) for _, expr in queries), "a query that selects no metric"
    (namespace,) = [v for v in board["templating"]["list"] if v["name"] == "namespace"]
    source = re.fullmatch(r"label_values\((\w+), namespace\)", namespace["query"]["query"])
    assert source is not None and source.group(1) in EXPORTED
    # the sections the issue asks for, each with its metrics
    used = {name for _, expr in queries for name in metric_names(expr)}
    for name in (
        "botsession_sessions",
        "botsession_transitions_total",
        "botsession_sweep_duration_seconds_bucket",
        "botsession_sweep_failures_total",
        "botsession_last_seen_unsynced",
        "botsession_caught_up_total",
        "botsession_heartbeats_lost_total",
        "botsession_heartbeat_deadlines",
        "botsession_webhook_deliveries_total",
        "botsession_webhook_failed_attempts_total",
        "botsession_webhook_given_up_total",
        "botsession_webhook_waiting_seconds",
        "botsession_api_requests_total",
        "botsession_api_request_duration_seconds_bucket",
        "botsession_store_unanswered",
        "botsession_api_store_unanswered",
    ):
        assert name in used, name


def test_the_dashboard_is_a_grafana_model_on_a_prometheus_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"] == "botsession-operator"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    # panels sit side by side on Grafana's 24-column grid without overlapping
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area


def test_every_alert_names_only_exported_metrics_and_passes_promtool(tmp_path: Path) -> None:
    rules = rendered_rules()
    exprs = alert_exprs(rules)
    unknown = {
        (alert, n) for alert, e in exprs.items() for n in metric_names(e) if n not in EXPORTED
    }
    assert unknown == set()
    assert all(metric_names(expr) for expr in exprs.values())
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    promtool = find_binary("promtool", "/usr/bin/promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout


# promtool's own rule unit tests: series over simulated time, and the alerts that fire then
WARNING, CRITICAL = {"severity": "warning"}, {"severity": "critical"}
API_200 = 'namespace="a",route="/r",status="200"'
API_503 = 'namespace="a",route="/r",status="503"'
ALERT_CASES: dict[str, Any] = {
    "rule_files": ["rules.yaml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'botsession_sweep_leader{namespace="a",pod="a-0"}', "values": "0x20"},
                {"series": 'botsession_sweep_leader{namespace="b",pod="b-0"}', "values": "1x20"},
                {
                    "series": 'botsession_heartbeats_lost_total{namespace="a"}',
                    "values": "0 0 0 100 100 100 100 100 100 100 100",
                },
                {
                    "series": 'botsession_api_store_unanswered{namespace="a",store="redis"}',
                    "values": "0 0 1x10",
                },
                {
                    "series": 'botsession_store_unanswered{namespace="a",store="redis"}',
                    "values": "0x12",
                },
                {"series": 'botsession_last_seen_unsynced{namespace="a"}', "values": "900+50x40"},
                {
                    "series": f"botsession_api_requests_total{{{API_200}}}",
                    "values": "0+60x20",
                },
                {
                    "series": f"botsession_api_requests_total{{{API_503}}}",
                    "values": "0+30x20",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "10m",
                    "alertname": "BotSessionNoLeader",
                    "exp_alerts": [{"exp_labels": {"namespace": "a", **CRITICAL}}],
                },
                {"eval_time": "5m", "alertname": "BotSessionNoLeader", "exp_alerts": []},
                {
                    "eval_time": "5m",
                    "alertname": "BotSessionHeartbeatsLost",
                    "exp_alerts": [{"exp_labels": {"namespace": "a", **WARNING}}],
                },
                {"eval_time": "2m", "alertname": "BotSessionHeartbeatsLost", "exp_alerts": []},
                {
                    "eval_time": "8m",
                    "alertname": "BotSessionStoreUnavailable",
                    "exp_alerts": [
                        {"exp_labels": {"namespace": "a", "store": "redis", **CRITICAL}}
                    ],
                },
                {"eval_time": "5m", "alertname": "BotSessionStoreUnavailable", "exp_alerts": []},
                {
                    "eval_time": "35m",
                    "alertname": "BotSessionLastSeenBacklog",
                    "exp_alerts": [{"exp_labels": {"namespace": "a", **WARNING}}],
                },
                {
                    "eval_time": "15m",
                    "alertname": "BotSessionApiErrors",
                    "exp_alerts": [{"exp_labels": {"namespace": "a", **WARNING}}],
                },
                {"eval_time": "10m", "alertname": "BotSessionLastSeenBacklog", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "BotSessionApiErrors", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "BotSessionApiSlow", "exp_alerts": []},
            ],
        }
    ],
}


def test_the_alerts_fire_on_their_failure_modes_and_not_before(tmp_path: Path) -> None:
    rules = rendered_rules()
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # promtool compares them too: here, only when it fires
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(ALERT_CASES))
    promtool = find_binary("promtool", "/usr/bin/promtool")
    tested = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


# --- the panels on a real Prometheus scraping a running stack ---------------------------


@pytest.fixture
def rule_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rules()))
    return path


@pytest.fixture
def api_url(stack: Stack) -> Iterator[str]:
    settings = session_settings(stack.namespace, stack.redis_server.url, stack.database_url)
    with serving(stack.plane.kubeconfig, settings) as url:
        yield url


async def traffic(base: str, users: list[str]) -> None:
    """Bots reporting, a heartbeat, the frontend reading, and a few refusals (4xx)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for user in users:
            for state in ("connecting", "connected"):
                response = await client.post(
                    f"{V1}/sessions/{BOT}/{user}/report",
                    json={"state": state},
                    headers=auth("reporter"),
                )
                assert response.status_code in (200, 201), response.text
            beat = await client.post(
                f"{V1}/sessions/{BOT}/{user}/heartbeat", headers=auth("reporter")
            )
            assert beat.status_code == 200, beat.text
            read = await client.get(
                f"{V1}/session-status/{BOT}", params={"userId": user}, headers=auth("reader")
            )
            assert read.status_code == 200, read.text
        refused = await client.post(
            f"{V1}/sessions/{BOT}/{users[0]}/report", json={"state": "connected"}
        )
        assert refused.status_code == 401


def values(answer: dict[str, Any]) -> dict[str, float]:
    """An instant vector's samples, keyed by their labels."""
    return {
        json.dumps(sample["metric"], sort_keys=True): float(sample["value"][1])
        for sample in answer["data"]["result"]
    }


async def until(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


async def test_every_panel_query_runs_on_a_real_prometheus_scraping_the_stack(
    stack: Stack, api_url: str, rule_file: Path
) -> None:
    started = time.monotonic()
    operator_port = free_port()
    labels = {"namespace": stack.namespace}
    users = [f"user-{i}" for i in range(4)]
    with stack.operator(BOTSESSION_METRICS_PORT=str(operator_port)):
        targets = [
            ScrapeTarget("botsession-operator", (f"127.0.0.1:{operator_port}",), labels=labels),
            ScrapeTarget(
                "botsession-api",
                (api_url.removeprefix("http://"),),
                bearer_token=TOKENS["reader"][1],  # the API's /metrics wants the read scope
                labels=labels,
            ),
        ]
        with PrometheusServer(targets, rule_files=[rule_file]) as prometheus:
            up = await until(lambda: set(prometheus.targets_up().values()) == {"up"})
            assert up, prometheus.targets_up()

            def sessions_active(count: int) -> bool:
                answer = prometheus.query(
                    'sum(botsession_sessions{phase="active",namespace=~".*"})'
                )
                return list(values(answer).values()) == [float(count)]

            # two waves: a counter's labelled series is born at its first value, so only
            # what comes after a scrape of it shows in a rate
            await traffic(api_url, users[:2])
            assert await until(lambda: sessions_active(2)), "the operator never counted them"
            await asyncio.sleep(1.5)
            await traffic(api_url, users[2:])
            assert await until(lambda: sessions_active(len(users))), "nor the second wave"

            def transitions() -> dict[str, float]:
                answer = prometheus.query(
                    "sum by (reason) (increase(botsession_transitions_total[1m])) > 0"
                )
                return values(answer) if len(values(answer)) >= 2 else {}

            assert await until(transitions), "no transitions by reason"
            await asyncio.sleep(2)  # a couple more scrapes, so every rate has two points

            answers: dict[str, list[dict[str, Any]]] = {}
            for title, expr in panel_queries():
                answer = prometheus.query(expr)
                assert answer["status"] == "success", (title, expr, answer)
                answers.setdefault(title, []).append(answer)

            def found(title: str) -> dict[str, float]:
                return {k: v for a in answers[title] for k, v in values(a).items()}

            by_status = found("Sessions by status")
            assert by_status['{"phase": "active"}'] == len(users), by_status
            assert set(by_status) == {
                json.dumps({"phase": p}) for p in ("connecting", "active", "inactive", "failed")
            }
            by_reason = found("Transitions by reason")
            assert {'{"reason": "Created"}', '{"reason": "Connected"}'} <= set(by_reason)
            assert any(v > 0 for v in by_reason.values()), by_reason
            by_route = found("Request rate by route")
            report_route = json.dumps({"route": f"{V1}/sessions/{{botId}}/{{userId}}/report"})
            assert by_route[report_route] > 0, by_route
            assert found("Latency p99 by route"), "no latency"
            assert json.dumps({"status": "401"}) in found("Request rate by status")
            assert found("4xx by route")
            assert found("Heartbeat deadlines")
            namespaces = prometheus.api(
                "label/namespace/values", **{"match[]": "botsession_sessions"}
            )
            assert namespaces["data"] == [stack.namespace]  # the dashboard's variable

            def rules_evaluated() -> list[dict[str, Any]]:
                groups = prometheus.api("rules")["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                return rules if all(r["lastEvaluation"][:4] != "0001" for r in rules) else []

            rules = await until(rules_evaluated)
            assert rules, "the alert rules were never evaluated"
            expected = dict.fromkeys(alert_exprs(rendered_rules()), "ok")
            assert {r["name"]: r["health"] for r in rules} == expected
            # a healthy stack: nothing fires (BotSessionNoLeader would, after 10 min)
            assert [r["name"] for r in rules if r["state"] == "firing"] == []
    answered = sum(1 for found in answers.values() for a in found if a["data"]["result"])
    print(
        f"GRAFANA-FIGURES queries={len(panel_queries())} with_series={answered} "
        f"rules={len(rules)} "
        f"seconds={time.monotonic() - started:.1f}"
    )
