"""Alembic environment: the URL comes from the caller (meridian_common.db.migrate), never a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from meridian_common.db.schema import metadata

# Services migrate on start, several at once on a fresh database (risk and ledger in one
# deployment): one transaction-scoped advisory lock makes them take turns; the later one then
# finds the schema at head and does nothing. A fixed key, apart from ingest's per-symbol locks.
MIGRATION_LOCK = 0x6D6572696469616E  # "meridian"

url = context.config.attributes.get("url")
if not url:
    raise RuntimeError("run migrations through meridian_common.db.migrate(url)")

connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        connection.execute(text("select pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()
connectable.dispose()
