"""incarnations: a returning user's new BotSession starts a new incarnation

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Rows and history written before this migration belong to incarnation 0 (sessions.domain.model.
Version). History is unique per (session, incarnation, revision) instead of per (session,
revision), so a new incarnation's revision 1 is recorded beside the last one's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _incarnation() -> sa.Column[int]:
    return sa.Column("incarnation", sa.BigInteger, nullable=False, server_default="0")


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(_incarnation())
    with op.batch_alter_table("session_history") as batch:
        batch.add_column(_incarnation())
        batch.drop_constraint("uq_history_session_revision", type_="unique")
        batch.create_unique_constraint(
            "uq_history_session_version", ["bot_id", "user_id", "incarnation", "revision"]
        )


def downgrade() -> None:
    with op.batch_alter_table("session_history") as batch:
        batch.drop_constraint("uq_history_session_version", type_="unique")
        batch.create_unique_constraint(
            "uq_history_session_revision", ["bot_id", "user_id", "revision"]
        )
        batch.drop_column("incarnation")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("incarnation")
