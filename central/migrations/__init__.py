"""Alembic migrations of central's schema (run programmatically at start-up, see ``central.db``)."""
