"""Position settings of a linear account: leverage, position mode, and a position's TP/SL.

Separate from the matching engine because none of it fills anything; each rule answers the
retCode Bybit uses (ccxt: 110043 -> BadRequest for an unchanged leverage, 110025 -> NoChange
for an unchanged mode, 110024/110028 -> BadRequest when positions/orders block a switch).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from meridian_fake_exchange.matching import Engine
from meridian_fake_exchange.order_rules import (
    category_param,
    check_tpsl,
    decimal_param,
    int_param,
    params_error,
)
from meridian_fake_exchange.specs import split_symbol
from meridian_fake_exchange.trading import Account
from meridian_fake_exchange.venue import ParamError

MAX_LEVERAGE = Decimal(100)


def set_leverage(engine: Engine, account: Account, params: Mapping[str, Any]) -> None:
    """Leverage of one linear symbol (buy = sell, 1..100 in steps of 0.01); 110043 when it
    is unchanged (ccxt raises BadRequest for that, as against the real venue)."""
    symbol = _linear_symbol(engine, params)
    buy = decimal_param(params, "buyLeverage", required=True) or Decimal(0)
    sell = decimal_param(params, "sellLeverage", required=True) or Decimal(0)
    if buy != sell:
        raise params_error("params error: buyLeverage must equal sellLeverage")
    if not Decimal(1) <= buy <= MAX_LEVERAGE or buy % Decimal("0.01") != 0:
        raise params_error(f"params error: leverage {buy} outside [1, {MAX_LEVERAGE}] or "
                           "not a multiple of 0.01")
    if buy == account.leverage_of(symbol):
        raise ParamError(110043, "leverage not modified")
    account.leverage[symbol] = buy
    account.touch(*(p for (s, _), p in account.positions.items() if s == symbol))


def switch_mode(engine: Engine, account: Account, params: Mapping[str, Any]) -> None:
    """One-way (mode 0) or hedge (mode 3) for a symbol, or every symbol settled in `coin`."""
    if category_param(params) != "linear":
        raise params_error("params error: category invalid (linear only)")
    mode = int_param(params, "mode")
    if mode not in (0, 3):
        raise params_error("params error: mode invalid (0: one-way, 3: hedge)")
    symbol, coin = str(params.get("symbol") or ""), str(params.get("coin") or "")
    if symbol:
        if symbol not in engine.symbols:
            raise params_error("Not supported symbols")
        targets = [symbol]
    elif coin:
        targets = [s for s in engine.symbols if split_symbol(s)[1] == coin]
    else:
        raise params_error("params error: symbol or coin is required")
    hedge = mode == 3
    if all((s in account.hedged) == hedge for s in targets):
        raise ParamError(110025, "Position mode is not modified")
    for s in targets:
        if any(p.qty != 0 for (sym, _), p in account.positions.items() if sym == s):
            raise ParamError(110024, "You have an existing position, so position mode "
                                     "cannot be switched")
        if any(o.symbol == s and o.category == "linear" for o in account.open_orders()):
            raise ParamError(110028, "Open orders exist, so you cannot change position mode")
    for s in targets:
        if hedge:
            account.hedged.add(s)
        else:
            account.hedged.discard(s)


def trading_stop(engine: Engine, account: Account, params: Mapping[str, Any],
                 now: int) -> None:
    """Set or clear ("0") the take profit / stop loss of a whole position (tpslMode Full)."""
    symbol = _linear_symbol(engine, params)
    if params.get("tpslMode") not in (None, "", "Full"):
        raise params_error("params error: tpslMode Partial is not supported by the fake "
                           "exchange")
    idx = int_param(params, "positionIdx") or 0
    if (symbol in account.hedged) != (idx in (1, 2)):
        raise params_error("params error: position idx not match position mode")
    pos = account.position(symbol, idx)
    if pos.qty == 0:
        raise params_error("can not set tp/sl/ts for zero position")
    tp = decimal_param(params, "takeProfit", allow_zero=True)
    sl = decimal_param(params, "stopLoss", allow_zero=True)
    tick = Decimal(engine.spec_of("linear", symbol).tick)
    for name, value in (("takeProfit", tp), ("stopLoss", sl)):
        if value is not None and value % tick != 0:
            raise params_error(f"params error: {name} {value} is not a multiple of "
                               f"tickSize {tick}")
    check_tpsl(pos.side, tp, sl, engine.last(symbol, now), "position")
    if tp is not None:
        pos.take_profit = tp or None
    if sl is not None:
        pos.stop_loss = sl or None
    pos.eval_ms, pos.updated_ms = now, now
    account.touch(pos)


def _linear_symbol(engine: Engine, params: Mapping[str, Any]) -> str:
    if category_param(params) != "linear":
        raise params_error("params error: category invalid (linear only)")
    symbol = str(params.get("symbol") or "")
    if symbol not in engine.symbols:
        raise params_error("Not supported symbols" if symbol else
                           "params error: symbol is required")
    return symbol
