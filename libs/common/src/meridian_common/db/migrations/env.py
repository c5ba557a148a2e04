"""Alembic environment: the URL comes from the caller (meridian_common.db.migrate), never a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from meridian_common.db.schema import metadata

url = context.config.attributes.get("url")
if not url:
    raise RuntimeError("run migrations through meridian_common.db.migrate(url)")

connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
