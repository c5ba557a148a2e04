"""Binance USDT-M futures private REST routes: what ccxt's `binanceusdm` (or `binance` with
defaultType "future") calls to trade, over the same matching engine code as Bybit's routes.

fapi.binance.com
  POST   /fapi/v1/order             MARKET / LIMIT (GTC, IOC, FOK, GTX); newClientOrderId,
                                    reduceOnly, positionSide, newOrderRespType ACK | RESULT
  GET    /fapi/v1/order             by orderId or origClientOrderId, any status (-2013)
  DELETE /fapi/v1/order             cancel by orderId or origClientOrderId (-2011)
  DELETE /fapi/v1/allOpenOrders     cancel every open order of a symbol
  GET    /fapi/v1/openOrders, /fapi/v1/openOrder, /fapi/v1/allOrders
  GET    /fapi/v1/userTrades        fills, oldest first; symbol required; orderId, fromId,
                                    startTime/endTime (7 days, default the last 7), limit
  GET    /fapi/v2|v3/positionRisk, /fapi/v2|v3/account, /fapi/v2|v3/balance
  POST   /fapi/v1/leverage          1..125 (an unchanged value is answered normally)
  GET    /fapi/v1/positionSide/dual, POST it (-4059 when unchanged, -4068 / -4067 with
                                    positions / open orders); the mode is account-wide
  GET    /fapi/v1/leverageBracket, /fapi/v1/commissionRate, /fapi/v1/symbolConfig
api.binance.com (what ccxt signs while loading markets with keys)
  GET    /sapi/v1/capital/config/getall, /sapi/v1/margin/allPairs,
         /sapi/v1/margin/isolated/allPairs

Each Binance account is separate from the Bybit account of the same key: its own engine
(server.binance_engine) with Binance's instrument rules, fees and answers (Rules below).
Errors are {"code": -XXXX, "msg": ...} with HTTP 400 (401 for an unknown/missing key).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from meridian_fake_exchange.auth import Authenticator, BinanceAuthError
from meridian_fake_exchange.binance_views import (
    MAX_LEVERAGE,
    NOTIONAL_CAP,
    POSITION_SIDES,
    account_view,
    acknowledged,
    balance_view,
    bracket_view,
    coin_view,
    order_view,
    position_view,
    trade_view,
)
from meridian_fake_exchange.bybit_views import SpecOf, plain
from meridian_fake_exchange.context import Context, dumps
from meridian_fake_exchange.faults import OrderFaults
from meridian_fake_exchange.matching import Engine, Rules
from meridian_fake_exchange.order_rules import OrderRequest, on_grid
from meridian_fake_exchange.specs import Spec, decimals, split_symbol
from meridian_fake_exchange.trading import ZERO, Account, Order
from meridian_fake_exchange.venue import WEEK_MS, ParamError, history_window

FAPI, SPOT = "fapi.binance.com", "api.binance.com"
CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
TIME_IN_FORCE = {"GTC": "GTC", "IOC": "IOC", "FOK": "FOK", "GTX": "PostOnly"}
CONDITIONAL = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                         "TRAILING_STOP_MARKET"})
#: parameters of features the fake does not model: refused loudly instead of ignored
UNSUPPORTED = ("stopPrice", "activationPrice", "callbackRate", "priceMatch", "goodTillDate",
               "icebergQty", "quoteOrderQty")
BINANCE_RULES = Rules(
    params=-1102,
    not_enough_margin=(-2019, "Margin is insufficient."),
    duplicate_link_id=(-4116, "ClientOrderId is duplicated."),
    zero_position=(-2022, "ReduceOnly Order is rejected."),
    reduce_only=(-2022, "ReduceOnly Order is rejected."),
    min_notional=(-4164, "Order's notional must be no smaller than {min_notional} (unless you "
                         "choose reduce only)."),
    not_found=(-2011, "Unknown order sent."),
    position_idx=(-4061, "Order's position side does not match user's setting."),
    unique_among_open_only=True,
    default_leverage=Decimal(20),
    numeric_ids=True,
)
NOT_EXIST = ParamError(-2013, "Order does not exist.")
Params = dict[str, str]
Handler = Callable[[Account, Params, int], Any]


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=dumps(obj), content_type="application/json")


def _error(code: int, msg: str, status: int = 400) -> web.Response:
    return _json({"code": code, "msg": msg}, status)


def mandatory(name: str) -> ParamError:
    return ParamError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or "
                             "malformed.")


def not_required(name: str) -> ParamError:
    return ParamError(-1106, f"Parameter '{name}' sent when not required.")


def _decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise ParamError(-1100, f"Illegal characters found in parameter '{name}'; legal range "
                                "is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
    return value


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ParamError(-1100, f"Illegal characters found in parameter '{name}'; legal range "
                                "is '^[0-9]{1,20}$'.") from None


def _bool(params: Mapping[str, str], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() not in ("true", "false"):
        raise ParamError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return raw.lower() == "true"


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def parse_order(params: Mapping[str, str], symbols: tuple[str, ...],
                spec_of: Callable[[str], Spec]) -> OrderRequest:
    """Validate the fields of POST /fapi/v1/order the way Binance does; -> the engine's
    request (positionSide BOTH / LONG / SHORT -> positionIdx 0 / 1 / 2)."""
    symbol = params.get("symbol") or ""
    if not symbol:
        raise mandatory("symbol")
    if symbol not in symbols:
        raise ParamError(-1121, "Invalid symbol.")
    side = params.get("side") or ""
    if not side:
        raise mandatory("side")
    if side not in ("BUY", "SELL"):
        raise ParamError(-1117, "Invalid side.")
    kind = _order_type(params)
    spec = spec_of(symbol)
    qty = _quantity(params, spec, kind)
    price, tif = _price(params, spec, kind)
    link_id = params.get("newClientOrderId") or ""
    if link_id and not CLIENT_ID.match(link_id):
        raise ParamError(-4015, "Client order id is not valid.")
    position_side = params.get("positionSide") or "BOTH"
    if position_side not in POSITION_SIDES:
        raise ParamError(-4060, "Invalid position side.")
    if params.get("newOrderRespType") not in (None, "", "ACK", "RESULT"):
        raise ParamError(-1136, "Invalid newOrderRespType")
    return OrderRequest("linear", symbol, side.capitalize(), kind.capitalize(), qty, price, tif,
                        link_id, bool(_bool(params, "reduceOnly")),
                        POSITION_SIDES.index(position_side), None, None, "")


def _order_type(params: Mapping[str, str]) -> str:
    kind = params.get("type") or ""
    if not kind:
        raise mandatory("type")
    if kind in CONDITIONAL:
        raise ParamError(-4120, "Order type not supported for this endpoint. Please use the "
                                "Algo Order API endpoints instead.")
    if kind not in ("MARKET", "LIMIT"):
        raise ParamError(-1116, "Invalid orderType.")
    for name in UNSUPPORTED:
        if params.get(name) not in (None, "", "0"):
            raise not_required(name)
    if _bool(params, "closePosition"):
        raise not_required("closePosition")
    return kind


def _quantity(params: Mapping[str, str], spec: Spec, kind: str) -> Decimal:
    qty = _decimal(params, "quantity")
    if qty is None:
        raise mandatory("quantity")
    if qty <= 0:
        raise ParamError(-4003, "Quantity less than or equal to zero.")
    if _decimals(qty) > decimals(spec.step):
        raise ParamError(-1111, "Precision is over the maximum defined for this asset.")
    if not on_grid(qty, Decimal(spec.step)):
        raise ParamError(-4023, "Quantity not increased by step size.")
    if qty < Decimal(spec.min_qty):
        raise ParamError(-4004, "Quantity less than min quantity.")
    if qty > Decimal(spec.max_mkt_qty if kind == "MARKET" else spec.max_qty):
        raise ParamError(-4005, "Quantity greater than max quantity.")
    return qty


def _price(params: Mapping[str, str], spec: Spec, kind: str) -> tuple[Decimal | None, str]:
    """(limit price, the engine's timeInForce); a market order is IOC with no price."""
    price = _decimal(params, "price")
    if kind == "MARKET":
        if price not in (None, Decimal(0)):
            raise not_required("price")
        return None, "IOC"
    if price is None:
        raise mandatory("price")
    tif = params.get("timeInForce") or ""
    if not tif:
        raise mandatory("timeInForce")
    if tif not in TIME_IN_FORCE:
        raise ParamError(-1115, "Invalid timeInForce.")
    if price <= 0:
        raise ParamError(-4001, "Price less than 0.")
    if _decimals(price) > decimals(spec.tick):
        raise ParamError(-1111, "Precision is over the maximum defined for this asset.")
    if not on_grid(price, Decimal(spec.tick)):
        raise ParamError(-4014, "Price not increased by tick size.")
    return price, TIME_IN_FORCE[tif]


class BinancePrivate:
    """The private endpoints of one server, over the Binance engine and the shared faults."""

    def __init__(self, ctx: Context, engine: Engine, auth: Authenticator, spec_of: SpecOf,
                 faults: OrderFaults, closing: asyncio.Event) -> None:
        self.ctx, self.engine, self.auth = ctx, engine, auth
        self.spec_of, self.faults, self.closing = spec_of, faults, closing
        self._auto_ids = 0
        self.routes: dict[tuple[str, str, str], Handler] = {
            (FAPI, "GET", "fapi/v1/order"): self._query,
            (FAPI, "DELETE", "fapi/v1/order"): self._cancel,
            (FAPI, "DELETE", "fapi/v1/allOpenOrders"): self._cancel_all,
            (FAPI, "GET", "fapi/v1/openOrders"): self._open_orders,
            (FAPI, "GET", "fapi/v1/openOrder"): self._open_order,
            (FAPI, "GET", "fapi/v1/allOrders"): self._all_orders,
            (FAPI, "GET", "fapi/v1/userTrades"): self._user_trades,
            (FAPI, "GET", "fapi/v2/positionRisk"): self._positions_v2,
            (FAPI, "GET", "fapi/v3/positionRisk"): self._positions,
            (FAPI, "GET", "fapi/v2/account"): self._account,
            (FAPI, "GET", "fapi/v3/account"): self._account,
            (FAPI, "GET", "fapi/v2/balance"): self._balance,
            (FAPI, "GET", "fapi/v3/balance"): self._balance,
            (FAPI, "POST", "fapi/v1/leverage"): self._leverage,
            (FAPI, "GET", "fapi/v1/positionSide/dual"): self._get_dual,
            (FAPI, "POST", "fapi/v1/positionSide/dual"): self._set_dual,
            (FAPI, "GET", "fapi/v1/leverageBracket"): self._brackets,
            (FAPI, "GET", "fapi/v1/symbolConfig"): self._symbol_config,
            (FAPI, "GET", "fapi/v1/commissionRate"): self._commission,
            (SPOT, "GET", "sapi/v1/capital/config/getall"): self._coins,
            (SPOT, "GET", "sapi/v1/margin/allPairs"): lambda a, p, n: [],
            (SPOT, "GET", "sapi/v1/margin/isolated/allPairs"): lambda a, p, n: [],
        }

    def handles(self, host: str, method: str, path: str) -> bool:
        return (host, method, path) in self.routes or \
            (host, method, path) == (FAPI, "POST", "fapi/v1/order")

    def spec(self, symbol: str) -> Spec:
        return self.spec_of("linear", symbol)

    async def handle(self, request: web.Request, host: str,
                     path: str) -> tuple[web.Response, bool]:
        """Answer one private request; the flag says whether it is an error answer."""
        now = self.ctx.now_ms()
        body = (await request.read()).decode("utf-8", "replace")
        clock = self.ctx.market.clock
        try:
            api_key, params = self.auth.verify_binance(
                request.headers, request.rel_url.raw_query_string, body, now,
                1.0 if clock.paused else clock.speed)
            self.engine.step(now)
            account = self.engine.accounts[api_key]
            if (request.method, path) == ("POST", "fapi/v1/order"):
                return await self._create(request, account, params, now)
            result = self.routes[(host, request.method, path)](account, params, now)
        except BinanceAuthError as exc:
            return _error(exc.code, exc.msg, exc.status), True
        except ParamError as exc:
            return _error(exc.code, exc.msg), True
        return _json(result), False

    # -- orders --------------------------------------------------------------------------------

    async def _create(self, request: web.Request, account: Account, params: Params,
                      now: int) -> tuple[web.Response, bool]:
        link_id = params.get("newClientOrderId")
        if link_id:
            self.engine.create_requests[link_id] += 1
        rejected = self.faults.take_reject()
        if rejected is not None:
            code, msg = rejected
            return _error(code, msg, self.faults.reject_status or 400), True
        req = parse_order(params, self.engine.symbols, self.spec)
        if req.symbol in account.hedged and "reduceOnly" in params:
            raise not_required("reduceOnly")  # hedge mode: the positionSide says it
        if not req.link_id:  # Binance names every order
            self._auto_ids += 1
            req = replace(req, link_id=f"fakex-auto-{self._auto_ids}")
        self._check_maker_taker(req, now)
        order = self.engine.accept(account, req, now)
        spec = self.spec(order.symbol)
        view = order_view(order, spec, with_time=False)
        if params.get("newOrderRespType") != "RESULT":
            view = acknowledged(view, spec)
        response = _json(view)
        held = self.faults.take_timeout()
        if held is not None:
            delay_s, drop = held
            if drop and request.transport is not None:
                request.transport.abort()  # accepted, but the client never hears of it
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), delay_s)
        return response, False

    def _check_maker_taker(self, req: OrderRequest, now: int) -> None:
        """Binance rejects (instead of accepting and expiring) a GTX order that would take and
        a FOK order that cannot fill at once (without a book: a FOK that is not marketable)."""
        if req.price is None or req.time_in_force not in ("PostOnly", "FOK"):
            return
        last = self.engine.last(req.symbol, now)
        marketable = last <= req.price if req.side == "Buy" else last >= req.price
        if req.time_in_force == "PostOnly" and marketable:
            raise ParamError(-5022, "Due to the order could not be executed as maker, the Post "
                                    "Only order will be rejected.")
        if req.time_in_force == "FOK" and not marketable:
            raise ParamError(-5021, "Due to the order could not be filled immediately, the FOK "
                                    "order has been rejected.")

    def _symbol(self, params: Params, *, required: bool = True) -> str:
        symbol = params.get("symbol") or ""
        if not symbol:
            if required:
                raise mandatory("symbol")
            return ""
        if symbol not in self.engine.symbols:
            raise ParamError(-1121, "Invalid symbol.")
        return symbol

    def _find(self, account: Account, params: Params) -> Order | None:
        symbol = self._symbol(params)
        order_id, link_id = params.get("orderId"), params.get("origClientOrderId")
        if not order_id and not link_id:
            raise ParamError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but "
                                    "both were empty/null!")
        order = account.by_id.get(order_id) if order_id else account.by_link.get(str(link_id))
        return order if order is not None and order.symbol == symbol else None

    def _view(self, order: Order) -> dict[str, Any]:
        return order_view(order, self.spec(order.symbol))

    def _query(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        order = self._find(account, params)
        if order is None:
            raise NOT_EXIST
        return self._view(order)

    def _open_order(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        order = self._find(account, params)
        if order is None:
            raise NOT_EXIST
        if not order.is_open:
            raise ParamError(-2013, "Order does not exist.")
        return self._view(order)

    def _cancel(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        order = self.engine.cancel_order(account, self._find(account, params), now)
        return order_view(order, self.spec(order.symbol), with_time=False)

    def _cancel_all(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        symbol = self._symbol(params)
        for order in account.open_orders():
            if order.symbol == symbol:
                self.engine.cancel_order(account, order, now)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _open_orders(self, account: Account, params: Params, now: int) -> list[dict[str, Any]]:
        symbol = self._symbol(params, required=False)
        return [self._view(o) for o in account.open_orders() if symbol in ("", o.symbol)]

    def _all_orders(self, account: Account, params: Params, now: int) -> list[dict[str, Any]]:
        symbol = self._symbol(params)
        orders = [o for o in account.orders if o.symbol == symbol]
        from_id = _int(params, "orderId")
        if from_id is not None:
            orders = [o for o in orders if int(o.order_id) >= from_id]
        else:
            start, end = _window(params, now)
            orders = [o for o in orders if start <= o.created_ms <= end]
        return [self._view(o) for o in orders[-_limit(params, 500, 1000):]]

    def _user_trades(self, account: Account, params: Params, now: int) -> list[dict[str, Any]]:
        symbol = self._symbol(params)
        fills = [e for e in account.executions if e.order.symbol == symbol]
        order_id, from_id = params.get("orderId"), _int(params, "fromId")
        if order_id:
            fills = [e for e in fills if e.order.order_id == order_id]
        if from_id is not None:
            if params.get("startTime") or params.get("endTime"):
                raise ParamError(-4133, "The parameter fromId cannot be sent with startTime or "
                                        "endTime.")
            fills = [e for e in fills if int(e.exec_id) >= from_id]
        elif not order_id or params.get("startTime") or params.get("endTime"):
            start, end = _window(params, now)
            fills = [e for e in fills if start <= e.time_ms <= end]
        fills.sort(key=lambda e: (e.time_ms, e.seq))
        limit = _limit(params, 500, 1000)
        fills = fills[:limit] if from_id is not None or params.get("startTime") \
            else fills[-limit:]
        return [trade_view(e, self.spec(symbol)) for e in fills]

    # -- positions and account -----------------------------------------------------------------

    def _position_rows(self, account: Account, params: Params, now: int, *,
                       v2: bool) -> list[dict[str, Any]]:
        symbol = self._symbol(params, required=False)
        price_of = self.engine.price_of(now)
        rows = []
        for s in self.engine.symbols:
            if symbol not in ("", s):
                continue
            idxs = (1, 2) if s in account.hedged else (0,)
            for idx in idxs:
                pos = account.position(s, idx)
                order_im = self._order_im(account, s, idx)
                if v2 or pos.qty != 0 or order_im > 0:  # v3: only what is open
                    rows.append(position_view(account, pos, price_of(s), self.spec(s), order_im,
                                              v2=v2))
        return rows

    def _order_im(self, account: Account, symbol: str, idx: int) -> Decimal:
        """Margin held by the open orders of one position side (as Account.order_im)."""
        total = ZERO
        taker = self.engine.fees.linear_taker
        for o in account.open_orders():
            if o.symbol == symbol and o.position_idx == idx and not o.closing \
                    and o.price is not None:
                notional = account.opening_qty(symbol, idx, o.side, o.leaves_qty) * o.price
                total += notional / account.leverage_of(symbol) + notional * taker
        return total

    def _positions(self, account: Account, params: Params, now: int) -> list[dict[str, Any]]:
        return self._position_rows(account, params, now, v2=False)

    def _positions_v2(self, account: Account, params: Params,
                      now: int) -> list[dict[str, Any]]:
        return self._position_rows(account, params, now, v2=True)

    def _account(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        return account_view(account, self.engine.price_of(now), self.engine.fees, now)

    def _balance(self, account: Account, params: Params, now: int) -> list[dict[str, Any]]:
        return balance_view(account, self.engine.price_of(now), self.engine.fees, now)

    def _leverage(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        symbol = self._symbol(params)
        raw = params.get("leverage")
        if not raw:
            raise mandatory("leverage")
        leverage = _int(params, "leverage")
        if leverage is None or not 1 <= leverage <= MAX_LEVERAGE:
            raise ParamError(-4028, f"Leverage {raw} is not valid")
        account.leverage[symbol] = Decimal(leverage)
        account.touch(*(p for (s, _), p in account.positions.items() if s == symbol))
        return {"leverage": leverage, "maxNotionalValue": str(NOTIONAL_CAP), "symbol": symbol}

    def _get_dual(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        return {"dualSidePosition": bool(account.hedged)}

    def _set_dual(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        """Hedge ("dual side") mode is one setting for every symbol of the account."""
        dual = _bool(params, "dualSidePosition")
        if dual is None:
            raise mandatory("dualSidePosition")
        if dual == bool(account.hedged):
            raise ParamError(-4059, "No need to change position side.")
        if any(p.qty != 0 for p in account.positions.values()):
            raise ParamError(-4068, "Position side cannot be changed if there exists position.")
        if account.open_orders():
            raise ParamError(-4067, "Position side cannot be changed if there exists open "
                                    "orders.")
        account.hedged = set(self.engine.symbols) if dual else set()
        return {"code": 200, "msg": "success"}

    def _brackets(self, account: Account, params: Params,
                  now: int) -> list[dict[str, Any]] | dict[str, Any]:
        symbol = self._symbol(params, required=False)
        if symbol:
            return bracket_view(symbol)
        return [bracket_view(s) for s in self.engine.symbols]

    def _symbol_config(self, account: Account, params: Params,
                       now: int) -> list[dict[str, Any]]:
        """Leverage and margin type per symbol (ccxt fetch_leverage(s)); always cross."""
        symbol = self._symbol(params, required=False)
        return [{"symbol": s, "marginType": "CROSSED", "isAutoAddMargin": "false",
                 "leverage": int(account.leverage_of(s)), "maxNotionalValue": str(NOTIONAL_CAP)}
                for s in self.engine.symbols if symbol in ("", s)]

    def _commission(self, account: Account, params: Params, now: int) -> dict[str, Any]:
        fees = self.engine.fees
        return {"symbol": self._symbol(params), "makerCommissionRate": plain(fees.linear_maker),
                "takerCommissionRate": plain(fees.linear_taker)}

    def _coins(self, account: Account, params: Params, now: int) -> list[dict[str, Any]]:
        coins = sorted({c for s in self.engine.symbols for c in split_symbol(s)})
        return [coin_view(c) for c in coins]


def _limit(params: Params, default: int, maximum: int) -> int:
    limit = _int(params, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise ParamError(-1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, maximum)


def _window(params: Params, now: int) -> tuple[int, int]:
    """[startTime, endTime] of a history query: at most 7 days, by default the last 7."""
    start, end = history_window(_int(params, "startTime"), _int(params, "endTime"), now)
    if start > end:
        raise ParamError(-1023, "Start time is greater than end time.")
    if end - start > WEEK_MS:
        raise ParamError(-1127, "More than 168 hours between startTime and endTime.")
    return start, end
