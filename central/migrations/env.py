"""Alembic environment: always handed a live connection by ``central.db.run_migrations``."""

from __future__ import annotations

from alembic import context

from central.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("central migrations run through central.db.run_migrations (imd central migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
