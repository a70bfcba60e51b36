"""Alembic environment: always run through sessions.migrate with a connection given."""

from __future__ import annotations

from alembic import context

from sessions.sql_schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `botsession migrate` (sessions.migrate.upgrade)")

context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True
)
with context.begin_transaction():
    context.run_migrations()
