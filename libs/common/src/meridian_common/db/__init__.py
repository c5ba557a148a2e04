"""Storage: schema (SQLAlchemy Core), Alembic migrations and engines.

One SQL dialect (PostgreSQL) serves every mode: TimescaleDB in production, plain PostgreSQL in
tests, an embedded PostgreSQL server for `make run`.
"""

from meridian_common.db.engine import async_url, conninfo, create_engine, migrate, sync_url

__all__ = ["async_url", "conninfo", "create_engine", "migrate", "sync_url"]
