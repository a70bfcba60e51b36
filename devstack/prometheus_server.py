"""A private Prometheus server (Debian's `prometheus` package) on a loopback port, scraping
the targets it is given every second, with its data in its working directory. The package
may also have started a system-wide Prometheus on :9090; this one is separate."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from devstack.process import ManagedProcess, ensure_port_free, find_binary, free_port, wait_until

HINT = (
    "install it with `sudo apt-get install prometheus` (Debian/Ubuntu; scripts/bootstrap.sh "
    "does this) or put a prometheus 2.x on PATH"
)


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job: `host:port` targets, and the bearer token /metrics wants, if any."""

    job: str
    targets: tuple[str, ...]
    bearer_token: str | None = None
    path: str = "/metrics"
    labels: dict[str, str] = field(default_factory=dict)


def scrape_config(targets: list[ScrapeTarget], interval: str = "1s") -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    for target in targets:
        job: dict[str, Any] = {
            "job_name": target.job,
            "metrics_path": target.path,
            "static_configs": [{"targets": list(target.targets), "labels": target.labels}],
        }
        if target.bearer_token is not None:
            job["authorization"] = {"type": "Bearer", "credentials": target.bearer_token}
        jobs.append(job)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }


class PrometheusServer(ManagedProcess):
    name = "prometheus"

    def __init__(
        self,
        targets: list[ScrapeTarget],
        port: int | None = None,
        workdir: Path | None = None,
        scrape_interval: str = "1s",
        rule_files: list[Path] | None = None,
    ) -> None:
        super().__init__(workdir)
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.rule_files = rule_files or []
        self.port = port or free_port()
        self.binary = find_binary("prometheus", "/usr/bin/prometheus", hint=HINT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def start(self) -> Self:
        ensure_port_free(self.port, "prometheus")
        config = scrape_config(self.targets, self.scrape_interval)
        if self.rule_files:
            config["rule_files"] = [str(path) for path in self.rule_files]
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ]
        )
        wait_until(self._ready, 30, "prometheus", self.proc, self.log_path)
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:  # noqa: S310
            return bool(resp.status == 200)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>: the decoded answer, whether it says success or error (an
        invalid query answers 400 with status "error" and the reason)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - http here
                answer: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as error:
            answer = json.load(error)
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query: the whole answer (status, data or errorType and error)."""
        return self.api("query", query=expr)

    def targets_up(self) -> dict[str, str]:
        """Each active target's scrape URL and health ("up", "down", "unknown")."""
        active = self.api("targets", state="active")["data"]["activeTargets"]
        return {t["scrapeUrl"]: t["health"] for t in active}
