"""The database side of a lastSeen copy: CPU per row of `SqlStore.write` (one upsert per
transaction) and of `SqlStore.write_many` (batches of 500 in one executemany), on a private
PostgreSQL started here (devstack.postgres_server).

  .venv/bin/python -m bench.sql_write_benchmark --rows 3000

Every row is first inserted, then each contender advances every row's lastSeen by 90 s (an
update through ON CONFLICT, as the resync's copies are). CPU is this process's time
(time.process_time), so the figure is the client's cost, not PostgreSQL's.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import replace
from datetime import timedelta

from devstack.postgres_server import PostgresServer
from sessions.adapters.sql.migrate import upgrade
from sessions.adapters.sql.store import SqlStore, create_engine
from sessions.domain.model import Identity, Phase, SessionKey, SessionState, utcnow

BATCH = 500


def states(rows: int) -> list[SessionState]:
    seen = utcnow().replace(microsecond=0)
    return [
        SessionState(
            key=SessionKey(f"bot-{i % 10}", f"u{i}"),
            phase=Phase.ACTIVE,
            revision=1,
            reason=None,
            last_seen=seen,
            expires_at=seen + timedelta(hours=24),
            created_at=seen,
            identity=Identity("", "", ""),
        )
        for i in range(rows)
    ]


def advanced(batch: list[SessionState]) -> list[SessionState]:
    step = timedelta(seconds=90)
    return [replace(s, last_seen=s.last_seen + step, expires_at=s.expires_at + step) for s in batch]


async def measure(store: SqlStore, rows: list[SessionState], many: bool) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    if many:
        for start in range(0, len(rows), BATCH):
            await store.write_many(rows[start : start + BATCH])
    else:
        for state in rows:
            await store.write(state)
    n = len(rows)
    return 1e6 * (time.process_time() - cpu) / n, 1e6 * (time.perf_counter() - wall) / n


async def run(rows: int) -> None:
    with PostgresServer() as postgres:
        store = SqlStore(create_engine(postgres.url()))
        try:
            await upgrade(store.engine)
            current = states(rows)
            await store.write_many(current)
            print("| contender | rows | CPU µs per row | wall µs per row |")
            print("| --- | ---: | ---: | ---: |")
            for name, many in (("write", False), ("write_many", True)):
                current = advanced(current)
                cpu, wall = await measure(store, current, many)
                print(f"| {name} | {rows:,} | {cpu:.0f} | {wall:.0f} |")
            stored = await store.get(current[-1].key)
            assert stored is not None and stored.last_seen == current[-1].last_seen
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    asyncio.run(run(parser.parse_args().rows))


if __name__ == "__main__":
    main()
