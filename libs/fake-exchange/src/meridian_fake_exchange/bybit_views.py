"""Orders, executions, positions and wallets in Bybit v5's JSON shapes.

One function per shape, used both by the private REST routes and by the FakeExchange truth
methods (`orders()`, `positions()`, ... and GET /_admin/orders), so a test asserting on the
truth and a ccxt client parsing the answers read the same fields. Numbers are strings, as
Bybit sends them; quantities carry the market's step decimals ("0.010"), money values are
exact decimals.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from meridian_fake_exchange.specs import Spec, decimals, split_symbol
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

SpecOf = Callable[[str, str], Spec]


def plain(value: Decimal | None) -> str:
    """A decimal as Bybit prints it: no exponent, no trailing zeros; None -> ""."""
    if value is None:
        return ""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def fixed(value: Decimal, step: str) -> str:
    """A quantity with the step's decimals ("0.010" for step 0.001)."""
    return format(value.quantize(Decimal(1).scaleb(-decimals(step))), "f")


def order_view(order: Order, spec: Spec) -> dict[str, Any]:
    """One item of /v5/order/realtime and /v5/order/history."""
    linear = order.category == "linear"
    qty = plain(order.qty) if order.quote_qty else fixed(order.qty, spec.step)
    view: dict[str, Any] = {
        "orderId": order.order_id, "orderLinkId": order.link_id, "blockTradeId": "",
        "symbol": order.symbol, "price": plain(order.price) if order.price else "0",
        "qty": qty, "side": order.side, "isLeverage": "" if linear else "0",
        "positionIdx": order.position_idx, "orderStatus": order.status,
        "createType": order.create_type, "cancelType": order.cancel_type,
        "rejectReason": order.reject_reason, "avgPrice": plain(order.avg_price),
        "leavesQty": fixed(order.leaves_qty, spec.step),
        "leavesValue": plain(order.leaves_qty * (order.price or ZERO)),
        "cumExecQty": fixed(order.cum_qty, spec.step), "cumExecValue": plain(order.cum_value),
        "cumExecFee": plain(order.cum_fee),
        "cumFeeDetail": {order.fee_coin: plain(order.cum_fee)} if order.cum_qty > 0 else {},
        "timeInForce": order.time_in_force, "orderType": order.order_type,
        "stopOrderType": order.stop_order_type, "orderIv": "",
        "marketUnit": order.market_unit,
        "triggerPrice": plain(order.trigger_price), "takeProfit": plain(order.take_profit),
        "stopLoss": plain(order.stop_loss),
        "tpTriggerBy": "LastPrice" if order.take_profit else "",
        "slTriggerBy": "LastPrice" if order.stop_loss else "",
        "triggerDirection": 0, "triggerBy": "LastPrice" if order.trigger_price else "",
        "lastPriceOnCreated": plain(order.last_price_on_created),
        "reduceOnly": order.reduce_only, "closeOnTrigger": order.stop_order_type != "",
        "placeType": "", "smpType": "None", "smpGroup": 0, "smpOrderId": "",
        "tpLimitPrice": "", "slLimitPrice": "", "ocoTriggerBy": "", "extraFees": "",
        "slippageToleranceType": "UNKNOWN", "slippageTolerance": "0",
        "createdTime": str(order.created_ms), "updatedTime": str(order.updated_ms),
    }
    if linear:  # ccxt tells contract orders from spot ones by this key
        view["tpslMode"] = "Full" if order.take_profit or order.stop_loss else ""
    return view


def execution_view(execution: Execution, spec: Spec) -> dict[str, Any]:
    """One item of /v5/execution/list."""
    order = execution.order
    view: dict[str, Any] = {
        "symbol": order.symbol, "orderType": order.order_type, "underlyingPrice": "",
        "orderLinkId": order.link_id, "side": order.side, "indexPrice": "",
        "orderId": order.order_id, "stopOrderType": order.stop_order_type or "UNKNOWN",
        "leavesQty": fixed(execution.leaves_qty, spec.step),
        "execTime": str(execution.time_ms),
        "feeCurrency": execution.fee_coin if order.category == "spot" else "",
        "isMaker": execution.maker, "execFee": plain(execution.fee),
        "feeRate": plain(execution.fee_rate), "execId": execution.exec_id, "tradeIv": "",
        "blockTradeId": "", "markPrice": plain(execution.mark_price),
        "execPrice": plain(execution.price), "markIv": "",
        "orderQty": plain(order.qty) if order.quote_qty else fixed(order.qty, spec.step),
        "orderPrice": plain(order.price) if order.price else "0",
        "execValue": plain(execution.value), "execType": "Trade",
        "execQty": fixed(execution.qty, spec.step),
        "closedSize": fixed(execution.closed_qty, spec.step) if order.category == "linear"
        else "", "extraFees": "", "seq": execution.seq,
    }
    if order.category == "linear":  # ccxt tells contract fills from spot ones by this key
        view["createType"] = order.create_type
    return view


def position_view(account: Account, pos: Position, price: Decimal | None,
                  spec: Spec) -> dict[str, Any]:
    """One item of /v5/position/list."""
    leverage = account.leverage_of(pos.symbol)
    im = pos.value / leverage
    return {
        "positionIdx": pos.idx, "riskId": 1, "riskLimitValue": "2000000",
        "symbol": pos.symbol, "side": pos.side, "size": fixed(pos.size, spec.step),
        "avgPrice": plain(pos.entry), "positionValue": plain(pos.value) if pos.qty else "",
        "tradeMode": 0, "positionStatus": "Normal", "autoAddMargin": 0,
        "adlRankIndicator": 2 if pos.qty else 0, "leverage": plain(leverage),
        "positionBalance": plain(im), "markPrice": plain(price),
        "liqPrice": "", "bustPrice": "", "positionMM": plain(pos.value * MAINTENANCE_RATE),
        "positionIM": plain(im), "tpslMode": "Full", "takeProfit": plain(pos.take_profit),
        "stopLoss": plain(pos.stop_loss), "trailingStop": "0",
        "unrealisedPnl": plain(pos.upl(price)), "curRealisedPnl": plain(pos.cur_realised),
        "cumRealisedPnl": plain(pos.cum_realised), "sessionAvgPrice": "",
        "isReduceOnly": False, "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "",
        "seq": pos.updated_ms, "createdTime": str(pos.created_ms),
        "updatedTime": str(pos.updated_ms),
    }


def wallet_view(account: Account, price_of: PriceOf, fees: Fees,
                coins: set[str] | None = None) -> dict[str, Any]:
    """The UNIFIED account entry of /v5/account/wallet-balance.

    Only USDT counts as margin for linear positions (spot coins are reported, with their USD
    value, but are not collateral in the fake).
    """
    upl = account.upl(price_of)
    position_im, order_im = account.position_im(), account.order_im(fees)
    position_mm = sum((p.value * MAINTENANCE_RATE for p in account.positions.values()), ZERO)
    usdt = account.balances.get("USDT", ZERO)
    realised = sum((p.cum_realised for p in account.positions.values()), ZERO)
    entries, equity_usd, wallet_usd = [], ZERO, ZERO
    for coin in sorted(account.balances, key=lambda c: (c != "USDT", c)):
        balance = account.balances[coin]
        if coin != "USDT" and balance == 0:
            continue
        usd_price = Decimal(1) if coin == "USDT" else price_of(f"{coin}USDT") or ZERO
        is_usdt = coin == "USDT"
        equity = balance + (upl if is_usdt else ZERO)
        equity_usd += equity * usd_price
        wallet_usd += balance * usd_price
        if coins and coin not in coins:
            continue
        entries.append({
            "coin": coin, "equity": plain(equity), "usdValue": plain(equity * usd_price),
            "walletBalance": plain(balance), "locked": plain(account.spot_locked(coin)),
            "spotHedgingQty": "0", "borrowAmount": "0", "accruedInterest": "0",
            "totalOrderIM": plain(order_im if is_usdt else ZERO),
            "totalPositionIM": plain(position_im if is_usdt else ZERO),
            "totalPositionMM": plain(position_mm if is_usdt else ZERO),
            "unrealisedPnl": plain(upl if is_usdt else ZERO),
            "cumRealisedPnl": plain(realised if is_usdt else ZERO), "bonus": "0",
            "marginCollateral": True, "collateralSwitch": True,
            "availableToWithdraw": "", "availableToBorrow": "", "spotBorrow": "0",
        })
    margin_balance = usdt + upl
    initial = position_im + order_im
    return {
        "accountType": "UNIFIED", "totalEquity": plain(equity_usd),
        "totalWalletBalance": plain(wallet_usd), "totalMarginBalance": plain(margin_balance),
        "totalAvailableBalance": plain(margin_balance - initial),
        "totalPerpUPL": plain(upl), "totalInitialMargin": plain(initial),
        "totalMaintenanceMargin": plain(position_mm),
        "accountIMRate": plain(_rate(initial, margin_balance)),
        "accountMMRate": plain(_rate(position_mm, margin_balance)), "accountLTV": "0",
        "coin": entries,
    }


def _rate(part: Decimal, whole: Decimal) -> Decimal:
    return ZERO if whole <= 0 else (part / whole).quantize(Decimal("0.0001"))


def coin_rows(symbols: tuple[str, ...]) -> list[dict[str, Any]]:
    """/v5/asset/coin/query-info rows for the coins the served symbols use (no chains)."""
    coins = sorted({c for s in symbols for c in split_symbol(s)})
    return [{"name": c, "coin": c, "remainAmount": "1000000", "chains": []} for c in coins]
