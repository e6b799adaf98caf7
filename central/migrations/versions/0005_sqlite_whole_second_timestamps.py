"""SQLite: whole-second timestamps written by ingest's driver-SQL path get the ORM's text form

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:00:00.000000

Until this revision ingest bound timestamps without the dialect's DateTime processor, so sqlite3
wrote instants with no microseconds as ``2025-03-01 04:00:00`` where the ORM writes and compares
``2025-03-01 04:00:00.000000``. On SQLite timestamps are compared as text, so a query for exactly
that instant (a billing boundary) missed those rows. PostgreSQL stores real timestamps: nothing to do.

A reading whose corrected text would collide with a twin already stored in the ORM's form (the same
meter, register and instant from another path) is left as it is: the twin is the reading queries
find, and deleting the other could cut a billing line's link to it.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SHORT = len("2025-03-01 04:00:00")
# The columns ingest writes with driver SQL; everything else went through the ORM all along.
COLUMNS = {
    "raw_frame": ("received_at", "ingested_at", "decoded_at"),
    "meter": ("last_reading_at", "last_frame_at"),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table, columns in COLUMNS.items():
        for column in columns:
            op.execute(
                f"UPDATE {table} SET {column} = {column} || '.000000' WHERE length({column}) = {SHORT}"
            )
    op.execute(
        f"UPDATE reading SET read_at = read_at || '.000000' WHERE length(read_at) = {SHORT} "
        "AND NOT EXISTS (SELECT 1 FROM reading AS twin WHERE twin.meter_id = reading.meter_id "
        "AND twin.register = reading.register AND twin.read_at = reading.read_at || '.000000')"
    )


def downgrade() -> None:
    """Nothing to undo: the longer text is the same instant."""
