"""WebSocket /v1/ws/portfolio: the positions and each account's latest equity, pushed whenever
they change.

Why polling the database: the ledger commits positions and equity in one transaction per batch,
so the table is the one place where the book is consistent (portfolio.v1 carries one symbol per
message and would need a consumer per connection). Each connection reads the positions every
MERIDIAN_CONTROL_PUSH_S (one indexed query) and sends only when what it would send differs from
what it sent last: an idle book costs no traffic, and a client never receives the same state
twice. When the database cannot be read, the connection stays open and gets one `error` message
(again only on change), then the book once it answers again.

Protocol: authenticate (see `auth.websocket_access`), then receive `PortfolioMessage`s as JSON.
Anything the client sends after its token is ignored.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from meridian_control.auth import websocket_access
from meridian_control.context import Context
from meridian_control.schemas import AccountEquity, PortfolioMessage, Position
from meridian_control.store import DatabaseUnavailable

log = logging.getLogger(__name__)

PATH = "/v1/ws/portfolio"


def account_equity(positions: list[Position], capital: Decimal) -> list[AccountEquity]:
    """Each account's latest equity: capital + the sum of its symbols' latest net PnL, at its
    newest mark (the last point of GET /v1/equity)."""
    accounts: dict[str, list[Position]] = {}
    for p in positions:
        accounts.setdefault(p.account, []).append(p)
    out = []
    for account, rows in sorted(accounts.items()):
        net = sum((p.net_pnl for p in rows), Decimal(0))
        out.append(AccountEquity(account=account, time=max(p.as_of for p in rows),
                                 net_pnl=net, equity=capital + net))
    return out


async def snapshot(ctx: Context) -> PortfolioMessage:
    try:
        positions = await ctx.db().positions()
    except DatabaseUnavailable as exc:
        return PortfolioMessage(type="error", detail=str(exc))
    return PortfolioMessage(type="portfolio", positions=positions,
                            equity=account_equity(positions, ctx.settings.initial_capital))


async def _until_gone(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it disconnects."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _push(websocket: WebSocket, ctx: Context) -> None:
    gone = asyncio.create_task(_until_gone(websocket))
    last: dict[str, Any] | None = None
    try:
        while not gone.done():
            message = (await snapshot(ctx)).model_dump(mode="json")
            if message != last:
                await websocket.send_json(message)
                last = message
            await asyncio.wait({gone}, timeout=ctx.settings.push_s)
    except (WebSocketDisconnect, OSError):
        pass  # the client went away between two pushes
    finally:
        gone.cancel()


def install(app: FastAPI, ctx: Context) -> None:
    @app.websocket(PATH)
    async def portfolio(websocket: WebSocket) -> None:
        if await websocket_access(websocket) is None:
            return
        log.info("portfolio stream opened", extra={
            "client": websocket.client.host if websocket.client else "-"})
        await _push(websocket, ctx)
