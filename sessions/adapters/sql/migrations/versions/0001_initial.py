"""sessions, history, cleanup runs and the clear audit

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sessions.adapters.sql.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("bot_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("phone_number", sa.String(20), nullable=False, server_default=""),
        sa.Column("display_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("session_id", sa.String(256), nullable=False, server_default=""),
    )
    op.create_index("ix_sessions_bot_phase", "sessions", ["bot_id", "phase"])
    op.create_index("ix_sessions_bot_last_seen", "sessions", ["bot_id", "last_seen"])
    op.create_index("ix_sessions_phase_updated", "sessions", ["phase", "updated_at"])
    op.create_table(
        "session_history",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("bot_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("from_phase", sa.String(16), nullable=True),
        sa.Column("to_phase", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("bot_id", "user_id", "revision", name="uq_history_session_revision"),
    )
    op.create_index("ix_history_at", "session_history", ["at"])
    op.create_table(
        "cleanup_runs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("removed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expired", sa.Integer, nullable=False, server_default="0"),
        sa.Column("inactive", sa.Integer, nullable=False, server_default="0"),
        sa.Column("succeeded", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("runner", sa.String(128), nullable=False, server_default=""),
    )
    op.create_index("ix_cleanup_runs_started", "cleanup_runs", ["started_at"])
    op.create_table(
        "clear_audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("bot_id", sa.String(128), nullable=False),
        sa.Column("user_fingerprint", sa.String(16), nullable=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("clear_session", sa.Boolean, nullable=False),
        sa.Column("clear_redis", sa.Boolean, nullable=False),
        sa.Column("clear_database", sa.Boolean, nullable=False),
        sa.Column("sessions_deleted", sa.Integer, nullable=False),
        sa.Column("redis_keys_deleted", sa.Integer, nullable=False),
        sa.Column("database_rows_deleted", sa.Integer, nullable=False),
    )
    op.create_index("ix_clear_audit_at", "clear_audit", ["at"])


def downgrade() -> None:
    for table in ("clear_audit", "cleanup_runs", "session_history", "sessions"):
        op.drop_table(table)
