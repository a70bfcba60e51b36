"""Alembic environment: always run through sessions.adapters.sql.migrate with a connection given."""

from __future__ import annotations

from alembic import context

from sessions.adapters.sql.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with `botsession migrate` (sessions.adapters.sql.migrate.upgrade)"
    )

context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True
)
with context.begin_transaction():
    context.run_migrations()
