"""tenancies: who lived in an apartment when (the rental administration's register)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 12:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import central.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenancy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("apartment_id", sa.Integer(), nullable=False),
        sa.Column("tenant_ref", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("move_in", sa.Date(), nullable=False),
        sa.Column("move_out", sa.Date(), nullable=True),
        sa.Column("updated_at", central.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["apartment_id"], ["apartment.id"], name=op.f("fk_tenancy_apartment_id_apartment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenancy")),
        sa.UniqueConstraint("apartment_id", "move_in", name="uq_tenancy_apartment_move_in"),
    )
    with op.batch_alter_table("tenancy", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tenancy_apartment_id"), ["apartment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tenancy_tenant_ref"), ["tenant_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tenancy", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tenancy_tenant_ref"))
        batch_op.drop_index(batch_op.f("ix_tenancy_apartment_id"))
    op.drop_table("tenancy")
