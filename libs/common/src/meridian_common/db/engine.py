"""Engines and migrations.

URLs are accepted in libpq form (postgresql://user:pass@host:port/db, or ?host=/socket/dir) and
converted per driver: asyncpg for the services, psycopg (sync) for Alembic and reports.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def _with_driver(url: str, driver: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(
            f"database URL must be PostgreSQL, got backend {parsed.get_backend_name()!r}")
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def async_url(url: str) -> str:
    return _with_driver(url, "asyncpg")


def sync_url(url: str) -> str:
    return _with_driver(url, "psycopg")


def conninfo(url: str) -> str:
    """The URL as libpq takes it (psycopg.connect), whatever driver it names."""
    return sync_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


def create_engine(url: str) -> AsyncEngine:
    return create_async_engine(async_url(url), pool_size=2, max_overflow=2)


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic (synchronous, psycopg)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = sync_url(url)
    command.upgrade(cfg, revision)
