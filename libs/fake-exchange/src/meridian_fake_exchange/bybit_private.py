"""Bybit v5 private REST routes (host api.bybit.com): what ccxt's bybit calls to trade.

  POST /v5/order/create, /v5/order/cancel, /v5/order/cancel-all
  GET  /v5/order/realtime      open orders; by orderId/orderLinkId any status; openOnly=1 closed
  GET  /v5/order/history       closed orders (orderStatus filter, 7-day createdTime window)
  GET  /v5/execution/list      fills, newest first (7-day window, limit 1..100, cursor)
  GET  /v5/position/list       linear; with symbol also empty positions, with settleCoin not
  POST /v5/position/set-leverage, /v5/position/switch-mode, /v5/position/trading-stop
  GET  /v5/account/wallet-balance (accountType=UNIFIED), /v5/account/info, /v5/account/fee-rate
  GET  /v5/user/query-api, /v5/asset/coin/query-info   (ccxt asks these implicitly: the
       unified-account check before trading, and currencies in load_markets when keyed)

Every request is authenticated first (auth.py), then the engine catches up with the clock,
then the route runs. Answers use the v5 envelope; errors are HTTP 200 with a retCode, as on
Bybit, so ccxt maps them by code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from meridian_fake_exchange import position_settings
from meridian_fake_exchange.auth import Authenticator
from meridian_fake_exchange.bybit import envelope
from meridian_fake_exchange.bybit_views import (
    SpecOf,
    coin_rows,
    execution_view,
    order_view,
    plain,
    position_view,
    wallet_view,
)
from meridian_fake_exchange.context import Context
from meridian_fake_exchange.faults import OrderFaults
from meridian_fake_exchange.matching import Engine
from meridian_fake_exchange.order_rules import (
    category_param,
    int_param,
    params_error,
    query_category,
)
from meridian_fake_exchange.specs import split_symbol
from meridian_fake_exchange.trading import Account, Order
from meridian_fake_exchange.venue import WEEK_MS, ParamError, history_window

RECENT_CLOSED = 500
Params = dict[str, Any]
Handler = Callable[[Account, Params, int], Any]


class BybitPrivate:
    """The private endpoints; one instance per server, sharing its engine and faults."""

    def __init__(self, ctx: Context, engine: Engine, auth: Authenticator, spec_of: SpecOf,
                 faults: OrderFaults, closing: asyncio.Event) -> None:
        self.ctx, self.engine, self.auth = ctx, engine, auth
        self.spec_of, self.faults, self.closing = spec_of, faults, closing
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "v5/order/cancel"): self._cancel,
            ("POST", "v5/order/cancel-all"): self._cancel_all,
            ("GET", "v5/order/realtime"): self._realtime,
            ("GET", "v5/order/history"): self._history,
            ("GET", "v5/execution/list"): self._executions,
            ("GET", "v5/position/list"): self._positions,
            ("POST", "v5/position/set-leverage"): self._set_leverage,
            ("POST", "v5/position/switch-mode"): self._switch_mode,
            ("POST", "v5/position/trading-stop"): self._trading_stop,
            ("GET", "v5/account/wallet-balance"): self._wallet,
            ("GET", "v5/account/info"): self._account_info,
            ("GET", "v5/account/fee-rate"): self._fee_rate,
            ("GET", "v5/user/query-api"): self._query_api,
            ("GET", "v5/asset/coin/query-info"): self._coins,
        }

    def handles(self, method: str, path: str) -> bool:
        return (method, path) in self.routes or (method, path) == ("POST", "v5/order/create")

    async def handle(self, request: web.Request, path: str) -> tuple[web.Response, bool]:
        """Answer one private request; the flag says whether it is an error answer."""
        now = self.ctx.now_ms()
        if request.method == "GET":
            payload, params = request.rel_url.raw_query_string, dict(request.query)
        else:
            payload = (await request.read()).decode("utf-8", "replace")
        try:
            clock = self.ctx.market.clock
            api_key = self.auth.verify(request.headers, payload, now,
                                       1.0 if clock.paused else clock.speed)
            if request.method != "GET":
                params = _json_object(payload)
            self.engine.step(now)
            account = self.engine.accounts[api_key]
            if path == "v5/order/create":
                return await self._create(request, account, params, now)
            result = self.routes[(request.method, path)](account, params, now)
        except ParamError as exc:
            return envelope(self.ctx, {}, exc.code, exc.msg), True
        return envelope(self.ctx, result), False

    # -- orders --------------------------------------------------------------------------------

    async def _create(self, request: web.Request, account: Account, params: Params,
                      now: int) -> tuple[web.Response, bool]:
        link_id = params.get("orderLinkId")
        if link_id:
            self.engine.create_requests[str(link_id)] += 1
        rejected = self.faults.take_reject()
        if rejected is not None:
            return envelope(self.ctx, {}, *rejected), True
        order = self.engine.place(account, params, now)
        response = envelope(self.ctx, {"orderId": order.order_id, "orderLinkId": order.link_id})
        held = self.faults.take_timeout()
        if held is not None:
            delay_s, drop = held
            if drop and request.transport is not None:
                request.transport.abort()  # accepted, but the client never hears of it
            else:
                await self._hold(delay_s)
        return response, False

    async def _hold(self, seconds: float) -> None:
        """Sleep, but not past the server's shutdown."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)

    def _order_ref(self, order: Order) -> dict[str, str]:
        return {"orderId": order.order_id, "orderLinkId": order.link_id}

    def _cancel(self, account: Account, params: Params, now: int) -> dict[str, str]:
        return self._order_ref(self.engine.cancel(account, params, now))

    def _cancel_all(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        done = self.engine.cancel_all(account, params, now)
        return {"list": [self._order_ref(o) for o in done], "success": "1"}

    def _view(self, order: Order) -> dict[str, Any]:
        return order_view(order, self.spec_of(order.category, order.symbol))

    def _realtime(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        category = query_category(params)
        orders = self._filtered(account, params, category, require_scope=True)
        order_id, link_id = params.get("orderId"), params.get("orderLinkId")
        if order_id:
            orders = [o for o in orders if o.order_id == order_id]
        elif link_id:
            orders = [o for o in orders if o.link_id == link_id]
        elif int_param(params, "openOnly") in (1, 2):
            orders = [o for o in orders if not o.is_open][-RECENT_CLOSED:]
        else:
            orders = [o for o in orders if o.is_open]
        items, cursor = _page(list(reversed(orders)), params, 20, 50)
        return {"category": category, "list": [self._view(o) for o in items],
                "nextPageCursor": cursor}

    def _history(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        category = query_category(params)
        orders = [o for o in self._filtered(account, params, category, require_scope=False)
                  if not o.is_open]
        order_id, link_id = params.get("orderId"), params.get("orderLinkId")
        if order_id:
            orders = [o for o in orders if o.order_id == order_id]
        elif link_id:
            orders = [o for o in orders if o.link_id == link_id]
        else:
            start, end = _window(params, now)
            orders = [o for o in orders if start <= o.created_ms <= end]
        status = params.get("orderStatus")
        if status:
            orders = [o for o in orders if o.status == status]
        items, cursor = _page(list(reversed(orders)), params, 20, 50)
        return {"category": category, "list": [self._view(o) for o in items],
                "nextPageCursor": cursor}

    def _filtered(self, account: Account, params: Params, category: str, *,
                  require_scope: bool) -> list[Order]:
        symbol = params.get("symbol") or ""
        base, settle = params.get("baseCoin") or "", params.get("settleCoin") or ""
        if require_scope and category == "linear" and not (
                symbol or base or settle or params.get("orderId") or params.get("orderLinkId")):
            raise params_error("Missing some parameters that must be filled in, symbol or "
                               "settleCoin or baseCoin")
        out = []
        for order in account.orders:
            coin, quote = split_symbol(order.symbol)
            if order.category == category and symbol in ("", order.symbol) \
                    and base in ("", coin) and settle in ("", quote):
                out.append(order)
        return out

    def _executions(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        category = query_category(params)
        symbol = params.get("symbol") or ""
        order_id, link_id = params.get("orderId") or "", params.get("orderLinkId") or ""
        exec_type = params.get("execType") or "Trade"
        start, end = _window(params, now)
        fills = [e for e in account.executions
                 if e.order.category == category and symbol in ("", e.order.symbol)
                 and order_id in ("", e.order.order_id) and link_id in ("", e.order.link_id)
                 and exec_type == "Trade" and start <= e.time_ms <= end]
        fills.sort(key=lambda e: (e.time_ms, e.seq), reverse=True)
        items, cursor = _page(fills, params, 50, 100)
        return {"category": category, "nextPageCursor": cursor,
                "list": [execution_view(e, self.spec_of(category, e.order.symbol))
                         for e in items]}

    # -- positions and account -----------------------------------------------------------------

    def _positions(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        category = query_category(params)
        if category == "spot":
            raise params_error("params error: category invalid (no positions in spot)")
        if category != "linear":  # inverse, option: valid, and empty on the fake
            return {"category": category, "nextPageCursor": "", "list": []}
        symbol = params.get("symbol") or ""
        settle, base = params.get("settleCoin") or "", params.get("baseCoin") or ""
        if symbol:
            if symbol not in self.engine.symbols:
                raise params_error("Not supported symbols")
            idxs = (1, 2) if symbol in account.hedged else (0,)
            positions = [account.position(symbol, i) for i in idxs]
        elif settle or base:
            positions = [p for p in account.positions.values() if p.qty != 0
                         and settle in ("", split_symbol(p.symbol)[1])
                         and base in ("", split_symbol(p.symbol)[0])]
        else:
            raise params_error("Missing some parameters that must be filled in, symbol or "
                               "settleCoin")
        positions.sort(key=lambda p: (p.symbol, p.idx))
        items, cursor = _page(positions, params, 20, 200)
        price_of = self.engine.price_of(now)
        return {"category": "linear", "nextPageCursor": cursor, "list": [
            position_view(account, p, price_of(p.symbol), self.spec_of("linear", p.symbol))
            for p in items]}

    def _set_leverage(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        position_settings.set_leverage(self.engine, account, params)
        return {}

    def _switch_mode(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        position_settings.switch_mode(self.engine, account, params)
        return {}

    def _trading_stop(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        position_settings.trading_stop(self.engine, account, params, now)
        return {}

    def _wallet(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        if params.get("accountType") != "UNIFIED":
            raise params_error("accountType only support UNIFIED")
        coins = {c for c in str(params.get("coin") or "").split(",") if c} or None
        return {"list": [wallet_view(account, self.engine.price_of(now), self.engine.fees,
                                     coins)]}

    def _account_info(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        return {"marginMode": "REGULAR_MARGIN", "updatedTime": str(now),
                "unifiedMarginStatus": 6, "dcpStatus": "OFF", "timeWindow": 10,
                "smpGroup": 0, "isMasterTrader": False, "spotHedgingStatus": "OFF"}

    def _fee_rate(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        category = category_param(params)
        symbol = params.get("symbol") or ""
        fees = self.engine.fees
        return {"list": [{"symbol": s, "baseCoin": "" if category == "linear" else
                          split_symbol(s)[0],
                          "takerFeeRate": plain(fees.rate(category, False)),
                          "makerFeeRate": plain(fees.rate(category, True))}
                         for s in self.engine.symbols if symbol in ("", s)]}

    def _query_api(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        permissions = {"ContractTrade": ["Order", "Position"], "Spot": ["SpotTrade"],
                       "Wallet": ["AccountTransfer"], "Options": [], "Derivatives": [],
                       "CopyTrading": [], "BlockTrade": [], "Exchange": [], "NFT": [],
                       "Affiliate": []}
        return {"id": "1", "note": "meridian fake exchange", "apiKey": account.api_key,
                "readOnly": 0, "secret": "", "permissions": permissions, "ips": ["*"],
                "type": 1, "deadlineDay": -1, "expiredAt": "", "createdAt": "",
                "unified": 0, "uta": 1, "userID": 1, "inviterID": 0, "vipLevel": "No VIP",
                "mktMakerLevel": "0", "affiliateID": 0, "rsaPublicKey": "", "isMaster": True,
                "parentUid": "0", "kycLevel": "LEVEL_DEFAULT", "kycRegion": ""}

    def _coins(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        return {"rows": coin_rows(self.engine.symbols)}


def _json_object(payload: str) -> Params:
    try:
        body = json.loads(payload or "{}")
    except ValueError:
        raise params_error("params error: the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise params_error("params error: the body must be a JSON object")
    return body


def _page(items: list[Any], params: Mapping[str, Any], default: int,
          maximum: int) -> tuple[list[Any], str]:
    """One page and the cursor of the next ("" when this is the last)."""
    limit = int_param(params, "limit")
    if limit is None:
        limit = default
    if not 1 <= limit <= maximum:
        raise params_error(f"params error: limit must be in [1, {maximum}]")
    cursor = params.get("cursor") or "0"
    try:
        offset = int(cursor)
    except ValueError:
        raise params_error("params error: cursor invalid") from None
    end = offset + limit
    return items[offset:end], str(end) if end < len(items) else ""


def _window(params: Mapping[str, Any], now: int) -> tuple[int, int]:
    """[startTime, endTime] of a history query: at most 7 days, by default the last 7."""
    start, end = history_window(int_param(params, "startTime"), int_param(params, "endTime"),
                                now)
    if end < start or end - start > WEEK_MS:
        raise params_error("params error: The time range between startTime and endTime "
                           "cannot exceed 7 days")
    return start, end
