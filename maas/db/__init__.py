"""Relational state: ORM tables, engine and session scope, Alembic migrations."""
