"""Parsing and stateless validation of a Bybit v5 order-create request.

Real Bybit rejects malformed orders with specific codes, and ccxt turns those codes into
specific exception classes that the executor under test branches on (BadRequest is not
retried, InsufficientFunds is not, InvalidOrder is not...). So each rule answers the code Bybit
uses: linear size/price rules are retCode 10001 with a message naming the field, spot ones are
the 1701xx family. Checks that need account state (duplicate orderLinkId, reduce-only, margin,
balances) live in matching.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from meridian_fake_exchange.specs import Spec
from meridian_fake_exchange.venue import ParamError

PARAMS = 10001
SPOT_QTY_DECIMALS = (170137, "Order volume decimal too long")
SPOT_AMOUNT_DECIMALS = (170148, "Market Order amount decimal too long")
SPOT_PRICE_DECIMALS = (170134, "Order price decimal too long")
SPOT_QTY_MIN = (170136, "Order quantity lower than the minimum.")
SPOT_QTY_MAX = (170135, "Order quantity too large.")
SPOT_VALUE_MIN = (170140, "Order value exceeded lower limit.")
SPOT_QUOTE_PRECISION = Decimal("0.00000001")
LINK_ID = re.compile(r"^[A-Za-z0-9_-]*$")
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "PostOnly")


@dataclass(frozen=True)
class OrderRequest:
    """A create request that passed the stateless checks."""

    category: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal
    price: Decimal | None
    time_in_force: str
    link_id: str
    reduce_only: bool
    position_idx: int | None
    take_profit: Decimal | None
    stop_loss: Decimal | None
    market_unit: str


def params_error(msg: str) -> ParamError:
    return ParamError(PARAMS, msg)


def decimal_param(params: Mapping[str, Any], name: str, *, required: bool = False,
                  allow_zero: bool = False) -> Decimal | None:
    """A positive decimal given as a JSON string or number; '' counts as absent."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise params_error(f"params error: {name} is required")
        return None
    if isinstance(raw, bool):
        raise params_error(f"params error: {name} invalid")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise params_error(f"params error: {name} invalid") from None
    if not value.is_finite() or value < 0 or (value == 0 and not allow_zero):
        raise params_error(f"params error: {name} invalid")
    return value


def bool_param(params: Mapping[str, Any], name: str) -> bool:
    raw = params.get(name, False)
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "1"):
        return True
    if str(raw).lower() in ("false", "0", ""):
        return False
    raise params_error(f"params error: {name} invalid")


def int_param(params: Mapping[str, Any], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise params_error(f"params error: {name} invalid") from None


def category_param(params: Mapping[str, Any]) -> str:
    """The `category` of a trading request: the fake trades linear and spot."""
    category = str(params.get("category") or "")
    if category not in ("linear", "spot"):
        raise params_error("params error: category invalid (the fake exchange trades linear "
                           "and spot)")
    return category


def query_category(params: Mapping[str, Any]) -> str:
    """The `category` of a query: inverse and option are valid (and simply empty here)."""
    category = str(params.get("category") or "")
    if category not in ("linear", "spot", "inverse", "option"):
        raise params_error("params error: category invalid")
    return category


def on_grid(value: Decimal, step: Decimal) -> bool:
    return value % step == 0


def parse_order(params: Mapping[str, Any], symbols: tuple[str, ...],
                spec_of: Callable[[str, str], Spec]) -> OrderRequest:
    """Validate the fields of POST /v5/order/create; `spec_of(category, symbol)` -> Spec."""
    category = category_param(params)
    symbol = str(params.get("symbol", ""))
    if not symbol:
        raise params_error("params error: symbol is required")
    if symbol not in symbols:
        raise params_error("Not supported symbols")
    side = params.get("side")
    if side not in ("Buy", "Sell"):
        raise params_error("params error: side invalid")
    order_type = params.get("orderType")
    if order_type not in ("Market", "Limit"):
        raise params_error("params error: orderType invalid")
    _unsupported(params)
    qty = decimal_param(params, "qty", required=True)
    assert qty is not None
    price = decimal_param(params, "price") if order_type == "Limit" else None
    if order_type == "Limit" and price is None:
        raise params_error("params error: price is required for a Limit order")
    tif = str(params.get("timeInForce") or "GTC")
    if tif not in TIME_IN_FORCE:
        raise params_error("params error: timeInForce invalid")
    if order_type == "Market":
        tif = "IOC"  # Bybit treats every market order as IOC
    link_id = _link_id(params)
    idx = int_param(params, "positionIdx")
    if idx not in (None, 0, 1, 2):
        raise params_error("params error: positionIdx invalid")
    request = OrderRequest(
        category, symbol, side, order_type, qty, price, tif, link_id,
        bool_param(params, "reduceOnly"), idx, decimal_param(params, "takeProfit"),
        decimal_param(params, "stopLoss"), _market_unit(params, category, order_type, side))
    spec = spec_of(category, symbol)
    if category == "spot":
        _check_spot(request, spec)
    else:
        _check_linear(request, spec)
    return request


def _link_id(params: Mapping[str, Any]) -> str:
    link_id = str(params.get("orderLinkId") or "")
    if len(link_id) > 36:
        raise params_error("params error: orderLinkId is longer than 36 characters")
    if not LINK_ID.match(link_id):
        raise params_error("params error: orderLinkId may contain only letters, digits, "
                           "'-' and '_'")
    return link_id


def _unsupported(params: Mapping[str, Any]) -> None:
    """Fail loudly on features the fake does not model, instead of ignoring them."""
    for name in ("triggerPrice", "slLimitPrice", "tpLimitPrice", "orderIv"):
        if params.get(name) not in (None, "", "0"):
            raise params_error(f"params error: {name} is not supported by the fake exchange "
                               "(conditional/limit TP-SL/option orders)")
    if params.get("orderFilter") not in (None, "", "Order"):
        raise params_error("params error: orderFilter other than Order is not supported by "
                           "the fake exchange")
    if params.get("tpslMode") not in (None, "", "Full"):
        raise params_error("params error: tpslMode Partial is not supported by the fake "
                           "exchange")
    if str(params.get("isLeverage", "0")) not in ("0", ""):
        raise params_error("params error: spot margin trading (isLeverage=1) is not supported "
                           "by the fake exchange")


def _market_unit(params: Mapping[str, Any], category: str, order_type: str, side: str) -> str:
    if category != "spot" or order_type != "Market":
        return ""
    unit = params.get("marketUnit") or ("quoteCoin" if side == "Buy" else "baseCoin")
    if unit not in ("baseCoin", "quoteCoin"):
        raise params_error("params error: marketUnit invalid")
    return str(unit)


def check_tpsl(side: str, tp: Decimal | None, sl: Decimal | None, base: Decimal,
               what: str) -> None:
    """Bybit refuses a take profit / stop loss on the wrong side of the base price."""
    long = side == "Buy"
    if tp is not None and tp != 0 and (tp <= base if long else tp >= base):
        word = "higher" if long else "lower"
        raise params_error(f"params error: takeProfit {tp} set for {side} {what} should be "
                           f"{word} than base_price {base} (LastPrice)")
    if sl is not None and sl != 0 and (sl >= base if long else sl <= base):
        word = "lower" if long else "higher"
        raise params_error(f"params error: stopLoss {sl} set for {side} {what} should be "
                           f"{word} than base_price {base} (LastPrice)")


def _check_linear(req: OrderRequest, spec: Spec) -> None:
    step, tick = Decimal(spec.step), Decimal(spec.tick)
    if not on_grid(req.qty, step):
        raise params_error(f"params error: qty {req.qty} is not a multiple of qtyStep "
                           f"{spec.step}")
    if req.qty < Decimal(spec.min_qty):
        raise params_error(f"params error: qty {req.qty} is below minOrderQty {spec.min_qty}")
    limit, name = ((spec.max_mkt_qty, "maxMktOrderQty") if req.order_type == "Market"
                   else (spec.max_qty, "maxOrderQty"))
    if req.qty > Decimal(limit):
        raise params_error(f"params error: qty {req.qty} exceeds {name} {limit}")
    for field_name, value in (("price", req.price), ("takeProfit", req.take_profit),
                              ("stopLoss", req.stop_loss)):
        if value is not None and not on_grid(value, tick):
            raise params_error(f"params error: {field_name} {value} is not a multiple of "
                               f"tickSize {spec.tick}")


def _check_spot(req: OrderRequest, spec: Spec) -> None:
    if req.take_profit is not None or req.stop_loss is not None:
        raise params_error("params error: spot TP/SL orders are not supported by the fake "
                           "exchange")
    if req.market_unit == "quoteCoin":
        if not on_grid(req.qty, SPOT_QUOTE_PRECISION):
            raise ParamError(*SPOT_AMOUNT_DECIMALS)
        if req.qty < Decimal(spec.min_notional):
            raise ParamError(*SPOT_VALUE_MIN)
        return
    if not on_grid(req.qty, Decimal(spec.step)):
        raise ParamError(*SPOT_QTY_DECIMALS)
    if req.price is not None and not on_grid(req.price, Decimal(spec.tick)):
        raise ParamError(*SPOT_PRICE_DECIMALS)
    if req.qty < Decimal(spec.min_qty):
        raise ParamError(*SPOT_QTY_MIN)
    if req.qty > Decimal(spec.max_qty):
        raise ParamError(*SPOT_QTY_MAX)
    if req.price is not None and req.qty * req.price < Decimal(spec.min_notional):
        raise ParamError(*SPOT_VALUE_MIN)
