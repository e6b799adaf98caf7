"""reading_month: month summaries of the billing registers (central.reading_months), filled from the readings

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import central.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reading_month",
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("register", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("quantity", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("first_day", sa.Integer(), nullable=False),
        sa.Column("first_at", central.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("first_value", central.models.ExactDecimal(length=64), nullable=False),
        sa.Column("last_day", sa.Integer(), nullable=False),
        sa.Column("last_at", central.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_value", central.models.ExactDecimal(length=64), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("meter_id", "register", "month", name=op.f("pk_reading_month")),
    )
    from central.reading_months import rebuild_sync

    rebuild_sync(op.get_bind())  # a database with history gets its summaries now, not on first view


def downgrade() -> None:
    op.drop_table("reading_month")
