"""Funding paid on perpetuals: a column on positions and equity (running total) and on trades
(paid while the trade was open). Negative when received.

Columns are added with `if not exists`: revision 0001 creates its tables from the current schema
module, so a database created fresh already has them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"

COLUMNS = (("positions", "funding_paid"), ("equity", "funding_paid"), ("trades", "funding"))


def upgrade() -> None:
    for table, column in COLUMNS:
        op.execute(f"alter table {table} add column if not exists {column} numeric not null "
                   "default 0")


def downgrade() -> None:
    for table, column in COLUMNS:
        op.execute(f"alter table {table} drop column if exists {column}")
