"""Ledger persistence: one transaction per handled batch, idempotent by natural keys.

Fills are inserted with ON CONFLICT DO NOTHING on (ts, fill_id) and risk decisions (audit rows)
on (ts, decision_id); positions and equity rows are upserts; so replaying a batch after a crash,
or a redelivered record, leaves the tables as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from meridian_common.db import schema


@dataclass(slots=True)
class Batch:
    fills: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    equity: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fills or self.trades or self.equity or self.positions or self.decisions)


def _upsert(table: Any, keys: tuple[str, ...]) -> Any:
    stmt = insert(table)
    cols = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=cols)


class SqlLedgerStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(self, batch: Batch) -> None:
        async with self.engine.begin() as conn:
            if batch.fills:
                await conn.execute(insert(schema.fills).on_conflict_do_nothing(), batch.fills)
            if batch.trades:
                await conn.execute(insert(schema.trades).on_conflict_do_nothing(), batch.trades)
            if batch.equity:
                await conn.execute(
                    _upsert(schema.equity, ("account", "exchange", "symbol", "ts")), batch.equity)
            if batch.positions:
                await conn.execute(_upsert(schema.positions, ("account", "exchange", "symbol")),
                                   list(batch.positions.values()))
            if batch.decisions:
                await conn.execute(insert(schema.risk_decisions).on_conflict_do_nothing(),
                                   batch.decisions)

    async def fills(self, account: str) -> list[dict[str, Any]]:
        """Every fill of the account in booking order (time, then fill id)."""
        t = schema.fills
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(t).where(t.c.account == account)
                                      .order_by(t.c.ts, t.c.fill_id))
            return [dict(r._mapping) for r in rows]

    async def positions(self, account: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(schema.positions).where(schema.positions.c.account == account))
            return [dict(r._mapping) for r in rows]
