"""Schema migrations (Alembic), run in one place under a database-wide lock.

PostgreSQL: a transaction-scoped advisory lock, so two operators starting at once migrate
once. SQLite (one process by design): an exclusive file lock beside the database file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# pg_advisory lock key: any constant unique to this project ("botsess" in ASCII)
_PG_LOCK_KEY = 0x626F7473657373


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "sessions.adapters.sql:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@contextlib.asynccontextmanager
async def _sqlite_lock(engine: AsyncEngine, timeout: float = 120) -> AsyncIterator[None]:
    """An exclusive lock file beside the database, polled so the event loop never blocks."""
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(Path(database).with_suffix(".migrate.lock"), "w") as handle:  # noqa: ASYNC230
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"migration lock {handle.name} held too long") from None
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Migrate to the newest schema; returns (revision before, revision after)."""

    def run(connection: Connection) -> tuple[str | None, str | None]:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = _current(connection)
        command.upgrade(_config(connection), "head")
        return before, _current(connection)

    lock = _sqlite_lock(engine) if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    async with lock, engine.begin() as connection:
        before, after = await connection.run_sync(run)
    if before != after:
        log.info("database schema migrated from %s to %s", before or "empty", after)
    return before, after


async def is_current(engine: AsyncEngine) -> bool:
    """True when the database's schema is the newest this code knows."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current)
    return current == head_revision()
