"""Readiness: Redis or the database answers and the schema is current, so the replica can
serve reads. The Kubernetes API is checked and shown too, but does not decide: with it down
reads still work (reports and clears answer 503 with Retry-After). Each check is bounded in
time; they run concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sessions.adapters.kubernetes.client import ApiError
from sessions.adapters.sql.migrate import head_revision, is_current
from sessions.domain.model import StoreUnavailable
from sessions.runtime import Runtime


class NotReady(Exception):
    pass


@dataclass
class Readiness:
    """Remembers a schema once seen current, so that the database being down does not
    make the API unready when Redis can still answer reads."""

    timeout: float = 3.0
    schema_seen_current: bool = False
    last: dict[str, tuple[bool, str | None]] = field(default_factory=dict)

    async def check(self, runtime: Runtime) -> tuple[bool, dict[str, tuple[bool, str | None]]]:
        async def kubernetes() -> None:
            # a list of one object: proves reachability, the CRD and the RBAC to read it
            await runtime.botsessions.objects.list(limit=1)

        async def redis() -> None:
            await runtime.redis.ping()

        async def database() -> None:
            await runtime.sql.ping()

        async def schema() -> None:
            if self.schema_seen_current:
                return
            if not await is_current(runtime.sql.engine):
                raise NotReady(
                    f"the database schema is not at {head_revision()}: run `botsession migrate`"
                )
            self.schema_seen_current = True

        names = ("kubernetes", "redis", "database", "schema")
        results = await asyncio.gather(
            *(self._bounded(check) for check in (kubernetes, redis, database, schema))
        )
        checks = dict(zip(names, results, strict=True))
        ok = (checks["redis"][0] or checks["database"][0]) and checks["schema"][0]
        self.last = checks
        return ok, checks

    async def _bounded(self, check: Callable[[], Awaitable[None]]) -> tuple[bool, str | None]:
        try:
            await asyncio.wait_for(check(), self.timeout)
        except TimeoutError:
            return False, f"no answer within {self.timeout:g} s"
        except NotReady as exc:
            return False, str(exc)
        except ApiError as exc:
            return False, f"the Kubernetes API answered {exc.status} {exc.reason}".rstrip()
        except StoreUnavailable as exc:
            return False, f"{exc.store} is unreachable"
        except Exception as exc:  # a probe must answer, whatever broke
            return False, exc.__class__.__name__
        return True, None
