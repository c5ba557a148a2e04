"""Orders, trades, positions and the account in Binance USDT-M futures' JSON shapes.

The same engine objects as bybit_views.py renders, seen through Binance's eyes: integer order
and trade ids, UPPERCASE enums, positionSide BOTH / LONG / SHORT for positionIdx 0 / 1 / 2,
quantities with the step's decimals and money as exact decimals in strings. Used by the
private routes (binance_private.py) and by the truth methods with `venue="binance"`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meridian_fake_exchange.bybit_views import fixed, plain
from meridian_fake_exchange.specs import Spec, split_symbol
from meridian_fake_exchange.trading import (
    MAINTENANCE_RATE,
    ZERO,
    Account,
    Execution,
    Fees,
    Order,
    Position,
    PriceOf,
)

POSITION_SIDES = ("BOTH", "LONG", "SHORT")  # by positionIdx
TIME_IN_FORCE = {"GTC": "GTC", "IOC": "IOC", "FOK": "FOK", "PostOnly": "GTX"}
#: the single leverage bracket served (its maintenance rate is the one the ledger uses)
MAX_LEVERAGE = 125
NOTIONAL_CAP = 10_000_000_000


def status(order: Order) -> str:
    """NEW / PARTIALLY_FILLED / FILLED / CANCELED (by the user) / EXPIRED (by the system:
    IOC/FOK remainders, reduce-only orders left with nothing to reduce)."""
    if order.status == "New":
        return "NEW"
    if order.status == "PartiallyFilled":
        return "PARTIALLY_FILLED"
    if order.status == "Filled":
        return "FILLED"
    return "CANCELED" if order.cancel_type == "CancelByUser" else "EXPIRED"


def price_str(value: Decimal | None, spec: Spec) -> str:
    return "0" if value is None else fixed(value, spec.tick)


def order_view(order: Order, spec: Spec, *, with_time: bool = True) -> dict[str, Any]:
    """One order as GET /fapi/v1/order returns it (`with_time=False`: the create/cancel
    answer, which has no "time")."""
    kind = order.order_type.upper()
    view: dict[str, Any] = {
        "orderId": int(order.order_id), "symbol": order.symbol, "status": status(order),
        "clientOrderId": order.link_id, "price": price_str(order.price, spec),
        "avgPrice": plain(order.avg_price) if order.cum_qty else "0",
        "origQty": fixed(order.qty, spec.step), "executedQty": fixed(order.cum_qty, spec.step),
        "cumQty": fixed(order.cum_qty, spec.step), "cumQuote": plain(order.cum_value),
        "timeInForce": "GTC" if kind == "MARKET" else TIME_IN_FORCE[order.time_in_force],
        "type": kind, "reduceOnly": order.reduce_only, "closePosition": False,
        "side": order.side.upper(), "positionSide": POSITION_SIDES[order.position_idx],
        "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
        "origType": kind, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0, "updateTime": order.updated_ms,
    }
    if with_time:
        view["time"] = order.created_ms
    return view


def acknowledged(view: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """The create answer with newOrderRespType=ACK (the futures default): the order as it was
    accepted, before any fill."""
    zero = fixed(ZERO, spec.step)
    return {**view, "status": "NEW", "executedQty": zero, "cumQty": zero, "cumQuote": "0",
            "avgPrice": "0"}


def trade_view(execution: Execution, spec: Spec) -> dict[str, Any]:
    """One item of GET /fapi/v1/userTrades (commission and realizedPnl in USDT; realizedPnl
    is before the commission, as Binance reports it)."""
    order = execution.order
    return {
        "buyer": order.side == "Buy", "commission": plain(execution.fee),
        "commissionAsset": execution.fee_coin or "USDT", "id": int(execution.exec_id),
        "maker": execution.maker, "orderId": int(order.order_id),
        "price": plain(execution.price), "qty": fixed(execution.qty, spec.step),
        "quoteQty": plain(execution.value), "realizedPnl": plain(execution.realised),
        "side": order.side.upper(), "positionSide": POSITION_SIDES[order.position_idx],
        "symbol": order.symbol, "time": execution.time_ms,
    }


def position_view(account: Account, pos: Position, price: Decimal | None, spec: Spec,
                  open_order_im: Decimal = ZERO, *, v2: bool = False) -> dict[str, Any]:
    """One item of GET /fapi/v3/positionRisk (v2: the older shape with leverage and margin
    type). Margins are on the entry value, as the engine's margin checks use them."""
    leverage = account.leverage_of(pos.symbol)
    mark = price if price is not None else pos.entry
    notional = pos.qty * mark
    position_im = pos.value / leverage
    common = {
        "symbol": pos.symbol, "positionSide": POSITION_SIDES[pos.idx],
        "positionAmt": fixed(pos.qty, spec.step),
        "entryPrice": plain(pos.entry), "breakEvenPrice": plain(pos.entry),
        "markPrice": plain(mark), "unRealizedProfit": plain(pos.upl(price)),
        "liquidationPrice": "0", "isolatedMargin": "0", "notional": plain(notional),
        "isolatedWallet": "0", "updateTime": pos.updated_ms,
    }
    if v2:
        return {**common, "leverage": plain(leverage), "maxNotionalValue": str(NOTIONAL_CAP),
                "marginType": "cross", "isAutoAddMargin": "false", "adlQuantile": 0}
    return {**common, "marginAsset": split_symbol(pos.symbol)[1],
            "initialMargin": plain(position_im + open_order_im),
            "maintMargin": plain(pos.value * MAINTENANCE_RATE),
            "positionInitialMargin": plain(position_im),
            "openOrderInitialMargin": plain(open_order_im), "adl": 2 if pos.qty else 0,
            "bidNotional": "0", "askNotional": "0"}


def _totals(account: Account, price_of: PriceOf, fees: Fees) -> dict[str, Decimal]:
    wallet = account.balances.get("USDT", ZERO)
    upl = account.upl(price_of)
    position_im, order_im = account.position_im(), account.order_im(fees)
    margin = wallet + upl
    available = margin - position_im - order_im
    return {"wallet": wallet, "upl": upl, "margin": margin, "position_im": position_im,
            "order_im": order_im, "available": available,
            "mm": sum((p.value * MAINTENANCE_RATE for p in account.positions.values()), ZERO),
            "withdraw": max(min(available, wallet), ZERO)}


def account_view(account: Account, price_of: PriceOf, fees: Fees, now: int) -> dict[str, Any]:
    """GET /fapi/v3/account (v2 has the same fields that matter to ccxt): USDT is the only
    margin asset; `positions` lists the open ones."""
    t = _totals(account, price_of, fees)
    asset = {
        "asset": "USDT", "walletBalance": plain(t["wallet"]),
        "unrealizedProfit": plain(t["upl"]), "marginBalance": plain(t["margin"]),
        "maintMargin": plain(t["mm"]), "initialMargin": plain(t["position_im"] + t["order_im"]),
        "positionInitialMargin": plain(t["position_im"]),
        "openOrderInitialMargin": plain(t["order_im"]),
        "crossWalletBalance": plain(t["wallet"]), "crossUnPnl": plain(t["upl"]),
        "availableBalance": plain(t["available"]), "maxWithdrawAmount": plain(t["withdraw"]),
        "marginAvailable": True, "updateTime": now,
    }
    positions = []
    for pos in sorted(account.positions.values(), key=lambda p: (p.symbol, p.idx)):
        if pos.qty == 0:
            continue
        price = price_of(pos.symbol)
        positions.append({
            "symbol": pos.symbol, "positionSide": POSITION_SIDES[pos.idx],
            "positionAmt": plain(pos.qty), "unrealizedProfit": plain(pos.upl(price)),
            "isolatedMargin": "0", "notional": plain(pos.qty * (price or pos.entry)),
            "isolatedWallet": "0",
            "initialMargin": plain(pos.value / account.leverage_of(pos.symbol)),
            "maintMargin": plain(pos.value * MAINTENANCE_RATE), "updateTime": pos.updated_ms})
    return {
        "totalInitialMargin": plain(t["position_im"] + t["order_im"]),
        "totalMaintMargin": plain(t["mm"]), "totalWalletBalance": plain(t["wallet"]),
        "totalUnrealizedProfit": plain(t["upl"]), "totalMarginBalance": plain(t["margin"]),
        "totalPositionInitialMargin": plain(t["position_im"]),
        "totalOpenOrderInitialMargin": plain(t["order_im"]),
        "totalCrossWalletBalance": plain(t["wallet"]), "totalCrossUnPnl": plain(t["upl"]),
        "availableBalance": plain(t["available"]), "maxWithdrawAmount": plain(t["withdraw"]),
        "assets": [asset], "positions": positions,
    }


def balance_view(account: Account, price_of: PriceOf, fees: Fees,
                 now: int) -> list[dict[str, Any]]:
    """GET /fapi/v3/balance (and v2)."""
    t = _totals(account, price_of, fees)
    return [{"accountAlias": "FakeX", "asset": "USDT", "balance": plain(t["wallet"]),
             "crossWalletBalance": plain(t["wallet"]), "crossUnPnl": plain(t["upl"]),
             "availableBalance": plain(t["available"]),
             "maxWithdrawAmount": plain(t["withdraw"]), "marginAvailable": True,
             "updateTime": now}]


def bracket_view(symbol: str) -> dict[str, Any]:
    """GET /fapi/v1/leverageBracket: one bracket, with the ledger's maintenance rate."""
    return {"symbol": symbol, "notionalCoef": 1.0, "brackets": [{
        "bracket": 1, "initialLeverage": MAX_LEVERAGE, "notionalCap": NOTIONAL_CAP,
        "notionalFloor": 0, "maintMarginRatio": float(MAINTENANCE_RATE), "cum": 0.0}]}


def coin_view(coin: str) -> dict[str, Any]:
    """One row of GET /sapi/v1/capital/config/getall (ccxt's currencies when keyed)."""
    return {"coin": coin, "name": coin, "depositAllEnable": True, "withdrawAllEnable": True,
            "free": "0", "locked": "0", "freeze": "0", "withdrawing": "0", "ipoing": "0",
            "ipoable": "0", "storage": "0", "isLegalMoney": False, "trading": True,
            "networkList": []}
