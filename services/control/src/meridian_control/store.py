"""The control plane's PostgreSQL access: reads of the ledger's and the risk gate's tables, and
the one write it makes (moving a promoted mark).

Why a class behind a `Store` protocol: the routes and the WebSocket need not know SQL, and the
unit tests give the app a fake store, so auth, validation and response models are tested without
a database. Every call is bounded by MERIDIAN_CONTROL_DB_TIMEOUT_S, and every failure becomes
`DatabaseUnavailable` with one line that names neither the URL nor its password: an operator's
page must never show them, and a traceback tells an operator nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from sqlalchemy import Table, func, or_, select, true
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meridian_common import db
from meridian_common.db import schema
from meridian_control.schemas import Decision, EquityPoint, Fill, Position, RuleVerdict

log = logging.getLogger(__name__)
T = TypeVar("T")

SIDES = {1: "buy", 2: "sell"}

# Why a connection failed, by the class of the innermost error: a class name alone tells an
# operator little, and the driver's own message can carry the host, the port or the user.
_HINTS = {
    "InvalidPasswordError": "authentication failed",
    "InvalidAuthorizationSpecificationError": "authentication failed",
    "InvalidCatalogNameError": "the database does not exist",
    "ConnectionRefusedError": "connection refused",
    "CannotConnectNowError": "the server is starting or shutting down",
    "TooManyConnectionsError": "too many connections",
    "gaierror": "the host name does not resolve",
}
_UNDEFINED_TABLE = "42P01"


class DatabaseUnavailable(Exception):
    """The database cannot answer: one line, no URL, no password."""


class UnknownVersion(LookupError):
    """A promotion names a version that is not in the table."""


@dataclass(frozen=True, slots=True)
class PromotionResult:
    name: str
    version: str
    previous: str | None
    promoted_at: datetime


@dataclass(frozen=True, slots=True)
class LastEvents:
    """The newest event time each table holds (None: empty)."""

    candle: datetime | None
    decision: datetime | None
    fill: datetime | None
    mark: datetime | None


@dataclass(frozen=True, slots=True)
class PromotedRow:
    name: str
    version: str
    promoted_at: datetime


class Store(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def positions(self) -> list[Position]: ...

    async def fills(self, symbol: str | None, limit: int) -> list[Fill]: ...

    async def accounts(self) -> list[str]: ...

    async def equity(self, account: str, start: datetime | None, end: datetime | None,
                     max_points: int, capital: Decimal) -> tuple[int, list[EquityPoint]]: ...

    async def decisions(self, limit: int, approved: bool | None,
                        symbol: str | None) -> list[Decision]: ...

    async def last_events(self) -> LastEvents: ...

    async def promoted(self) -> tuple[list[PromotedRow], list[PromotedRow]]: ...

    async def promote_model(self, name: str, version: str) -> PromotionResult: ...

    async def promote_config(self, strategy: str, version: str) -> PromotionResult: ...


def describe(exc: BaseException) -> str:
    """One line about a database failure, from the innermost cause's class (never its text)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == _UNDEFINED_TABLE or \
            getattr(root, "sqlstate", None) == _UNDEFINED_TABLE:
        return ("the database has no ledger schema yet (the ledger creates it when it starts: "
                "run it once)")
    name = type(root).__name__
    hint = _HINTS.get(name)
    if hint is None and isinstance(root, OSError):
        hint = "cannot connect"
    why = f"{hint} ({name})" if hint else name
    return f"PostgreSQL unavailable: {why}; check MERIDIAN_DATABASE_URL and that it is running"


class SqlStore:
    """`Store` over SQLAlchemy's async engine (asyncpg), created when the app starts: its pool
    belongs to the event loop that serves the requests."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._engine: AsyncEngine | None = None

    async def start(self) -> None:
        self._engine = db.create_engine(self._url)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def __repr__(self) -> str:
        return "SqlStore(url=**********)"

    async def _run(self, body: Callable[[AsyncConnection], Awaitable[T]], *,
                   write: bool = False) -> T:
        if self._engine is None:
            raise DatabaseUnavailable("the database connection is not started")
        engine = self._engine

        async def call() -> T:
            context = engine.begin() if write else engine.connect()
            async with context as conn:
                return await body(conn)

        try:
            return await asyncio.wait_for(call(), self._timeout_s)
        except TimeoutError:
            raise DatabaseUnavailable(f"PostgreSQL did not answer within "
                                      f"{self._timeout_s:g}s") from None
        except (SQLAlchemyError, OSError) as exc:
            line = describe(exc)
            log.error("database read failed: %s", line)
            raise DatabaseUnavailable(line) from None

    # ------------------------------------------------------------------------- reads

    async def positions(self) -> list[Position]:
        p, e = schema.positions, schema.equity
        mark = (select(e.c.ts, e.c.mark_price, e.c.unrealized_pnl, e.c.net_pnl)
                .where(e.c.account == p.c.account, e.c.exchange == p.c.exchange,
                       e.c.symbol == p.c.symbol)
                .order_by(e.c.ts.desc()).limit(1).lateral("mark"))
        query = (select(p, mark.c.mark_price, mark.c.unrealized_pnl, mark.c.net_pnl)
                 .select_from(p.outerjoin(mark, true()))
                 .order_by(p.c.account, p.c.exchange, p.c.symbol))

        async def body(conn: AsyncConnection) -> list[Position]:
            return [_position(row._mapping) for row in await conn.execute(query)]

        return await self._run(body)

    async def fills(self, symbol: str | None, limit: int) -> list[Fill]:
        f = schema.fills
        query = select(f).order_by(f.c.ts.desc(), f.c.fill_id.desc()).limit(limit)
        if symbol is not None:
            query = query.where(f.c.symbol == symbol)

        async def body(conn: AsyncConnection) -> list[Fill]:
            return [Fill(time=r.ts, fill_id=r.fill_id, account=r.account,
                         client_order_id=r.client_order_id, exchange=r.exchange,
                         symbol=r.symbol, side=SIDES.get(r.side, "unspecified"),
                         quantity=r.quantity, price=r.price, fee=r.fee,
                         fee_currency=r.fee_currency)
                    for r in await conn.execute(query)]

        return await self._run(body)

    async def accounts(self) -> list[str]:
        p = schema.positions
        query = select(p.c.account).distinct().order_by(p.c.account)

        async def body(conn: AsyncConnection) -> list[str]:
            return list((await conn.execute(query)).scalars())

        return await self._run(body)

    async def equity(self, account: str, start: datetime | None, end: datetime | None,
                     max_points: int, capital: Decimal) -> tuple[int, list[EquityPoint]]:
        query = _curve_query(account, start, end, max_points)

        async def body(conn: AsyncConnection) -> tuple[int, list[EquityPoint]]:
            rows = (await conn.execute(query)).all()
            total = int(rows[0].n) if rows else 0
            return total, [EquityPoint(time=r.ts, net_pnl=r.net_pnl, equity=capital + r.net_pnl)
                           for r in rows]

        return await self._run(body)

    async def decisions(self, limit: int, approved: bool | None,
                        symbol: str | None) -> list[Decision]:
        d = schema.risk_decisions
        query = select(d).order_by(d.c.ts.desc(), d.c.decision_id.desc()).limit(limit)
        if approved is not None:
            query = query.where(d.c.approved == approved)
        if symbol is not None:
            query = query.where(d.c.symbol == symbol)

        async def body(conn: AsyncConnection) -> list[Decision]:
            return [_decision(row._mapping) for row in await conn.execute(query)]

        return await self._run(body)

    async def last_events(self) -> LastEvents:
        c, d, f, e = schema.candles, schema.risk_decisions, schema.fills, schema.equity
        query = select(select(func.max(c.c.open_time)).scalar_subquery().label("candle"),
                       select(func.max(d.c.ts)).scalar_subquery().label("decision"),
                       select(func.max(f.c.ts)).scalar_subquery().label("fill"),
                       select(func.max(e.c.ts)).scalar_subquery().label("mark"))

        async def body(conn: AsyncConnection) -> LastEvents:
            row = (await conn.execute(query)).one()
            return LastEvents(row.candle, row.decision, row.fill, row.mark)

        return await self._run(body)

    async def promoted(self) -> tuple[list[PromotedRow], list[PromotedRow]]:
        m, a = schema.models, schema.active_configs
        models = (select(m.c.name, m.c.version, m.c.promoted_at)
                  .where(m.c.promoted_at.is_not(None)).order_by(m.c.name))
        configs = (select(a.c.strategy, a.c.version, a.c.promoted_at)
                   .where(a.c.promoted_at.is_not(None)).order_by(a.c.strategy))

        async def body(conn: AsyncConnection) -> tuple[list[PromotedRow], list[PromotedRow]]:
            return ([PromotedRow(*row) for row in await conn.execute(models)],
                    [PromotedRow(*row) for row in await conn.execute(configs)])

        return await self._run(body)

    # ------------------------------------------------------------------------- the write

    async def promote_model(self, name: str, version: str) -> PromotionResult:
        m = schema.models
        return await self._run(lambda conn: _promote(conn, m, m.c.name, name, version, "model"),
                               write=True)

    async def promote_config(self, strategy: str, version: str) -> PromotionResult:
        a = schema.active_configs
        return await self._run(
            lambda conn: _promote(conn, a, a.c.strategy, strategy, version, "config"),
            write=True)


async def _promote(conn: AsyncConnection, table: Table, name_col: Any, name: str, version: str,
                   what: str) -> PromotionResult:
    """Move the promoted mark of `name` to `version`, in the caller's transaction.

    The name's rows are locked first, so two promotions of one name serialize; the old mark is
    cleared before the new one is set, because the partial unique index allows one promoted
    row per name at any moment, inside the transaction too.
    """
    rows = (await conn.execute(select(table.c.version, table.c.promoted_at)
                               .where(name_col == name).with_for_update())).all()
    if not rows:
        raise UnknownVersion(f"no {what} named {name!r}")
    if version not in {r.version for r in rows}:
        known = ", ".join(sorted(r.version for r in rows)[:20])
        raise UnknownVersion(f"{what} {name!r} has no version {version!r} (it has: {known})")
    previous = next((r.version for r in rows if r.promoted_at is not None), None)
    await conn.execute(table.update().where(name_col == name, table.c.version != version,
                                            table.c.promoted_at.is_not(None))
                       .values(promoted_at=None))
    promoted_at = (await conn.execute(
        table.update().where(name_col == name, table.c.version == version)
        .values(promoted_at=func.now()).returning(table.c.promoted_at))).scalar_one()
    return PromotionResult(name, version, previous, promoted_at)


def _curve_query(account: str, start: datetime | None, end: datetime | None,
                 max_points: int) -> Any:
    """The account curve in SQL, downsampled there.

    Each equity row contributes the change of its symbol's net PnL since that symbol's previous
    row; the running sum of those changes over time is, at every marked time, the sum of every
    symbol's latest net PnL (a symbol not marked at that time keeps its previous value). Exact
    (numeric) and one pass, instead of a lateral look-up per time and symbol. Downsampling keeps
    the last point of each of `max_points` equal runs, so the newest point is always exact.
    """
    e = schema.equity
    previous = func.lag(e.c.net_pnl).over(partition_by=(e.c.exchange, e.c.symbol),
                                          order_by=e.c.ts)
    changes = (select(e.c.ts, (e.c.net_pnl - func.coalesce(previous, 0)).label("delta"))
               .where(e.c.account == account).cte("changes"))
    curve = (select(changes.c.ts,
                    func.sum(func.sum(changes.c.delta)).over(order_by=changes.c.ts)
                    .label("net_pnl"))
             .group_by(changes.c.ts).cte("curve"))
    ranged = select(curve.c.ts, curve.c.net_pnl,
                    func.row_number().over(order_by=curve.c.ts).label("i"),
                    func.count().over().label("n"))
    if start is not None:
        ranged = ranged.where(curve.c.ts >= start)
    if end is not None:
        ranged = ranged.where(curve.c.ts <= end)
    r = ranged.cte("ranged")
    # the last row of each run: its run index (i - 1) * max // n differs from the next row's
    last_of_run = (r.c.i - 1) * max_points // r.c.n != r.c.i * max_points // r.c.n
    return (select(r.c.ts, r.c.net_pnl, r.c.n)
            .where(or_(r.c.n <= max_points, r.c.i == r.c.n, last_of_run))
            .order_by(r.c.ts))


def _position(row: Any) -> Position:
    quantity: Decimal = row["quantity"]
    unrealized = row["unrealized_pnl"] if row["unrealized_pnl"] is not None else Decimal(0)
    net = row["net_pnl"]
    if net is None:  # never marked: what is booked
        net = row["realized_pnl"] - row["fees_paid"] - row["funding_paid"]
    side = "long" if quantity > 0 else "short" if quantity < 0 else "flat"
    return Position(account=row["account"], exchange=row["exchange"], symbol=row["symbol"],
                    quantity=quantity, side=side, average_price=row["average_price"],
                    mark_price=row["mark_price"], realized_pnl=row["realized_pnl"],
                    unrealized_pnl=unrealized, fees_paid=row["fees_paid"],
                    funding_paid=row["funding_paid"], net_pnl=net,
                    trades_closed=row["trades_closed"], as_of=row["as_of"])


def _decision(row: Any) -> Decision:
    details = {r.get("rule"): str(r.get("detail", "")) for r in row["rules"] or ()
               if isinstance(r, dict)}
    return Decision(time=row["ts"], decision_id=row["decision_id"], signal_id=row["cause_id"],
                    exchange=row["exchange"], symbol=row["symbol"], approved=row["approved"],
                    client_order_id=row["client_order_id"], side=row["side"],
                    quantity=row["quantity"], reference_price=row["reference_price"],
                    reduce_only=row["reduce_only"],
                    failed_rules=[RuleVerdict(rule=name, detail=details.get(name, ""))
                                  for name in row["failed_rules"]])
