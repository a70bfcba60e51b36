"""One step of one of the operator's loops, guarded: a store that is down is waited for (a
warning), any other failure is logged and counted; either way the loop goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from controller import metrics
from sessions.domain.logs import event
from sessions.domain.model import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


async def guarded(stage: str, step: Callable[[], Awaitable[T]]) -> T | None:
    """The step's result; None when it failed (logged under `stage`)."""
    try:
        return await step()
    except asyncio.CancelledError:
        raise
    except StoreUnavailable as exc:
        event(log, f"{stage} waiting for a store", logging.WARNING, error=str(exc))
    except Exception as exc:
        metrics.RECONCILE_ERRORS.labels(stage=stage).inc()
        event(log, f"{stage} step failed", logging.ERROR, error=str(exc))
    return None
