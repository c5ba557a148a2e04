"""The read routes: positions, fills, the account's equity curve and the risk decisions from
PostgreSQL (the tables the ledger writes), and recent orders from order.event.v1.

Every list is bounded (a `limit` with a ceiling, or `max_points` for the curve), so no request
can make the control plane read a table whole into memory.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError

from meridian_control.auth import ReadAccess
from meridian_control.context import BUS_DOWN, DB_DOWN, UNAUTHORIZED, Context
from meridian_control.orders import recent_orders
from meridian_control.schemas import Decisions, EquityCurve, Fills, Orders, Positions

Symbol = Annotated[str | None, Query(max_length=64, description="Only this symbol (BTCUSDT).")]


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC, as every time in the tables is."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", field), "msg": message,
                                    "type": "value_error", "input": None}])


def install(app: FastAPI, ctx: Context) -> None:
    responses = {**UNAUTHORIZED, **DB_DOWN}

    @app.get("/v1/positions", response_model=Positions, tags=["ledger"],
             summary="Every account's book per symbol, marked at the latest candle",
             responses=responses)
    async def positions(_: ReadAccess) -> Positions:
        return Positions(positions=await ctx.db().positions())

    @app.get("/v1/fills", response_model=Fills, tags=["ledger"],
             summary="Recent fills, newest first", responses=responses)
    async def fills(_: ReadAccess, symbol: Symbol = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Fills:
        return Fills(fills=await ctx.db().fills(symbol, limit))

    @app.get("/v1/equity", response_model=EquityCurve, tags=["ledger"],
             summary="The account's equity curve, downsampled",
             description="Capital (MERIDIAN_CONTROL_INITIAL_CAPITAL) plus the sum of every "
                         "symbol's latest net PnL at each marked time. `account` may be left "
                         "out when the ledger books to one account. `from`/`to` are "
                         "inclusive; a time without a zone is UTC.",
             responses={**responses, 422: {"description": "Bad parameters, or several "
                                                          "accounts and none named."}})
    async def equity(
            _: ReadAccess,
            account: Annotated[str | None, Query(max_length=64)] = None,
            start: Annotated[datetime | None, Query(alias="from")] = None,
            end: Annotated[datetime | None, Query(alias="to")] = None,
            max_points: Annotated[int, Query(ge=2, le=10_000)] = 1000) -> EquityCurve:
        start, end = _utc(start), _utc(end)
        if start is not None and end is not None and start > end:
            raise _invalid("from", "must not be after to")
        store = ctx.db()
        capital = ctx.settings.initial_capital
        if account is None:
            accounts = await store.accounts()
            if not accounts:
                return EquityCurve(account=None, initial_capital=capital, points_total=0,
                                   points=[])
            if len(accounts) > 1:
                raise _invalid("account", "several accounts: name one of "
                                          + ", ".join(accounts))
            account = accounts[0]
        total, points = await store.equity(account, start, end, max_points, capital)
        return EquityCurve(account=account, initial_capital=capital, points_total=total,
                           points=points)

    @app.get("/v1/decisions", response_model=Decisions, tags=["risk"],
             summary="Recent risk decisions with the rules that failed, newest first",
             responses=responses)
    async def decisions(_: ReadAccess,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        approved: Annotated[bool | None, Query()] = None,
                        symbol: Symbol = None) -> Decisions:
        return Decisions(decisions=await ctx.db().decisions(limit, approved, symbol))

    @app.get("/v1/orders", response_model=Orders, tags=["orders"],
             summary="The latest state of recent orders (from order.event.v1)",
             description="Orders are not stored in the database: this reads the last "
                         "MERIDIAN_CONTROL_ORDERS_SCAN records of each partition of "
                         "order.event.v1 and keeps each order's latest transition.",
             responses={**UNAUTHORIZED, **BUS_DOWN})
    async def orders(_: ReadAccess, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                     symbol: Symbol = None) -> Orders:
        return await ctx.on_bus(recent_orders(ctx.bus, ctx.prefix, ctx.settings.orders_scan,
                                              limit, symbol))
