"""Shared fixtures: real servers started by the test run itself, stopped afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devstack.postgres_server import PostgresServer
from devstack.redis_server import RedisServer

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: a skip must never hide a missing server."""
    if os.environ.get("CI") and _skipped and exitstatus == 0:
        session.exitstatus = 1
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"CI: {len(_skipped)} skipped test(s) count as failures: {_skipped}",
                          red=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
