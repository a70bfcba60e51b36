"""The database tables (SQLAlchemy Core). Alembic migrations in migrations/ beside this
module create them; a test checks that the migrated schema equals this metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no time zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        result: datetime = value
        if result.tzinfo is None:
            return result.replace(tzinfo=UTC)
        return result.astimezone(UTC)


metadata = sa.MetaData()

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("bot_id", sa.String(128), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("incarnation", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("phone_number", sa.String(20), nullable=False, server_default=""),
    sa.Column("display_name", sa.String(256), nullable=False, server_default=""),
    sa.Column("session_id", sa.String(256), nullable=False, server_default=""),
    sa.Index("ix_sessions_bot_phase", "bot_id", "phase"),
    sa.Index("ix_sessions_bot_last_seen", "bot_id", "last_seen"),
    sa.Index("ix_sessions_phase_updated", "phase", "updated_at"),
)

# Append-only. One row per (session, incarnation, revision): a retried or duplicated write
# is harmless, and a returning user's new incarnation starts its own revisions.
history = sa.Table(
    "session_history",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("bot_id", sa.String(128), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("incarnation", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("from_phase", sa.String(16), nullable=True),
    sa.Column("to_phase", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.UniqueConstraint(
        "bot_id", "user_id", "incarnation", "revision", name="uq_history_session_version"
    ),
    sa.Index("ix_history_at", "at"),
)

cleanup_runs = sa.Table(
    "cleanup_runs",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("removed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("inactive", sa.Integer, nullable=False, server_default="0"),
    sa.Column("succeeded", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("runner", sa.String(128), nullable=False, server_default=""),
    sa.Index("ix_cleanup_runs_started", "started_at"),
)

# Who cleared what and when, without personal data: the userId is kept only as a
# fingerprint (a sha256 prefix) so repeated clears of one session can be correlated.
clear_audit = sa.Table(
    "clear_audit",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
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
    sa.Index("ix_clear_audit_at", "at"),
)
