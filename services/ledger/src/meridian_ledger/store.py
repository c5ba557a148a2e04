"""Ledger persistence: one transaction per handled batch, idempotent by natural keys.

Fills are inserted with ON CONFLICT DO NOTHING on (ts, fill_id) and risk decisions (audit rows)
on (ts, decision_id); positions and equity rows are upserts; so replaying a batch after a crash,
or a redelivered record, leaves the tables as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
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

    async def marks(self, account: str) -> tuple[dict[tuple[str, str], Decimal], Decimal]:
        """(each symbol's last net PnL, the highest net PnL of the account curve): the equity
        and its peak at the last marked candle, for the metrics of a restarted ledger. The
        curve is the control plane's: at each marked time, the sum of every symbol's latest
        net PnL (each row adds the change since its symbol's previous row)."""
        e = schema.equity
        newest = func.row_number().over(partition_by=(e.c.exchange, e.c.symbol),
                                        order_by=e.c.ts.desc())
        ranked = (select(e.c.exchange, e.c.symbol, e.c.net_pnl, newest.label("n"))
                  .where(e.c.account == account).subquery("ranked"))
        last = select(ranked.c.exchange, ranked.c.symbol, ranked.c.net_pnl).where(ranked.c.n == 1)
        previous = func.lag(e.c.net_pnl).over(partition_by=(e.c.exchange, e.c.symbol),
                                              order_by=e.c.ts)
        changes = (select(e.c.ts, (e.c.net_pnl - func.coalesce(previous, 0)).label("delta"))
                   .where(e.c.account == account).cte("changes"))
        curve = (select(func.sum(func.sum(changes.c.delta)).over(order_by=changes.c.ts)
                        .label("net_pnl")).group_by(changes.c.ts).subquery("curve"))
        async with self.engine.connect() as conn:
            nets = {(r.exchange, r.symbol): r.net_pnl for r in await conn.execute(last)}
            peak = (await conn.execute(select(func.max(curve.c.net_pnl)))).scalar()
        return nets, peak if peak is not None else Decimal(0)
