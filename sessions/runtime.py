"""Opening and closing everything a process needs, from the settings: the Redis and SQL
stores, the Kubernetes client, the BotSessions of the configured namespace (with an index
kept current while the runtime is open: the custom-named BotSessions for the API, every one
for the operator), the use-cases."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from sessions.adapters.guard import GuardObserver
from sessions.adapters.kubernetes.botsessions import CUSTOM_NAMED, KubeBotSessions
from sessions.adapters.kubernetes.client import KubeClient, load_config
from sessions.adapters.kubernetes.crd import FINALIZER
from sessions.adapters.kubernetes.informer import BotSessionIndex
from sessions.adapters.redis.store import RedisKeys, RedisStore, connect
from sessions.adapters.sql.migrate import upgrade
from sessions.adapters.sql.store import SqlStore, create_engine
from sessions.adapters.tasks import stop
from sessions.domain.settings import Settings
from sessions.usecases.reconcile import Reconciler
from sessions.usecases.service import SessionService

ALIASES_WAIT = 5.0  # seconds
# The operator opens its runtime before kopf starts watching, so the index's first LIST runs
# on an idle CPU (3 s for 10,000 objects) rather than during the resume of every object
# (7-12 s), and the housekeeping and the catch-up start with the index. Past this wait the
# LIST goes on in the background.
EVERY_BOTSESSION_WAIT = 20.0  # seconds


@dataclass
class Runtime:
    settings: Settings
    redis: RedisStore
    sql: SqlStore
    kube: KubeClient
    botsessions: KubeBotSessions
    service: SessionService
    index: BotSessionIndex
    watching: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.botsessions.namespace

    @property
    def reconciler(self) -> Reconciler:
        return Reconciler(
            self.service, self.botsessions, self.redis, self.sql, self.settings.session_ttl
        )

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        kubeconfig: str | None = None,
        migrate: bool = False,
        every_botsession: bool = False,
        finalizer: str | None = FINALIZER,
        wait_for_index: bool = True,
    ) -> Runtime:
        """every_botsession: index every BotSession (the operator's housekeeping reads it),
        not only the custom-named ones (the API's lookups). finalizer: the one new
        BotSessions are created with (the operator's; None where no operator runs, as in the
        API's own tests, else nothing would let a cleared BotSession go). wait_for_index:
        return once the index is filled (or its wait is over); else at once, the caller
        waits with `wait_for_index()`."""
        connection = load_config(kubeconfig)
        kube = KubeClient(connection)
        redis = RedisStore(
            connect(
                settings.redis_url, retries=settings.redis_retries, timeout=settings.redis_timeout
            ),
            settings.tombstone_ttl,
            budget=settings.redis_budget,
            probe_interval=settings.store_probe_interval,
            keys=RedisKeys(settings.redis_key_prefix),
            events_retention=settings.events_retention,
        )
        sql = SqlStore(
            create_engine(settings.database_url, settings.database_budget),
            budget=settings.database_budget,
            probe_interval=settings.store_probe_interval,
        )
        if migrate:
            await upgrade(sql.engine)
        namespace = settings.namespace or connection.namespace
        index = BotSessionIndex(
            kube, namespace, label_selector=None if every_botsession else CUSTOM_NAMED
        )
        # only the API creates BotSessions (a first report), and it writes their first phase
        botsessions = KubeBotSessions(
            kube, namespace, creator="api", finalizer=finalizer, aliases=index.name_of
        )
        service = SessionService(botsessions, redis, sql, settings)
        runtime = cls(settings, redis, sql, kube, botsessions, service, index)
        runtime.watching.append(asyncio.create_task(index.run(), name="botsession index"))
        if wait_for_index:
            wait = EVERY_BOTSESSION_WAIT if every_botsession else ALIASES_WAIT
            await runtime.wait_for_index(wait)
        return runtime

    async def wait_for_index(self, seconds: float) -> None:
        """Until the index is filled, `seconds` at most. The API's is usually empty: one
        short LIST. Until it has been read, a custom-named BotSession would not be found (a
        report for it would create a second one under the derived name); when the API server
        is down the stores still serve: not long."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.index.filled.wait(), seconds)

    def observe(self, observer: GuardObserver) -> None:
        """Count what the stores' guards do (sessions.adapters.guard), e.g. into metrics."""
        self.redis.guard.observer = observer
        self.sql.guard.observer = observer

    async def close(self) -> None:
        await stop(*self.watching)
        await self.redis.close()
        await self.sql.close()
        await self.kube.close()
