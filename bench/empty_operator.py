"""The floor of bench/operator_benchmark.py and bench/restart_benchmark.py: a kopf operator
whose handlers do nothing.

Run by the benchmarks (after the real operator has stopped, in its own namespace, on its own
fresh objects) as

  kopf run --standalone --namespace NS bench/empty_operator.py

It watches the same resource with the same kopf settings as controller/handlers.py
(annotation persistence, posting level, watch and network timeouts, worker limit) and has
the same kinds of handlers (resume, create, update, delete), so whatever it costs is kopf's
own cost of keeping that many BotSessions, not the project's. kopf logs "Resuming is
processed" once per object it resumes after a start; bench/restart_benchmark.py counts those
lines.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

RESOURCE = ("botsession.dev", "v1alpha1", "botsessions")
PREFIX = "floor.kopf.dev"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """The same settings as controller.handlers.configure, under a prefix of its own (a copy:
    importing the controller would add the project's imports to kopf's floor)."""
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]
    settings.queueing.worker_limit = 200
    settings.queueing.idle_timeout = 0.25


@kopf.on.resume(*RESOURCE)
def resumed(**_: Any) -> None:
    """Nothing (kopf calls it once per existing object after a start)."""


@kopf.on.create(*RESOURCE)
def created(**_: Any) -> None:
    """Nothing."""


@kopf.on.update(*RESOURCE)
def updated(**_: Any) -> None:
    """Nothing."""


@kopf.on.delete(*RESOURCE)
def deleted(**_: Any) -> None:
    """Nothing."""
