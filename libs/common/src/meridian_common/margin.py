"""Margin and liquidation prices for linear USDT perpetuals (Bybit / Binance style), in Decimal.

Conventions shared by every function here, and the assumptions behind the liquidation prices:
- Linear contract: PnL is quantity x price change, in the quote currency (USDT).
- Maintenance margin is position value at the *entry* price x the maintenance margin rate
  (mmr), with a single mmr tier (Bybit's formula; Binance charges mmr on the mark-price value
  and has tiers with a maintenance amount, which moves the price by a few ticks).
- No fees, funding or liquidation fee are reserved: the real exchange liquidates slightly
  earlier. Use these prices to check a stop is safely on the right side, not to aim at them.
A side is "long"/"short" or common_pb2.DIRECTION_LONG / DIRECTION_SHORT.
"""

from __future__ import annotations

from decimal import Decimal

from meridian.v1 import common_pb2
from meridian_common.money import (
    MONEY_CONTEXT,
    ONE,
    ZERO,
    require_non_negative,
    require_positive,
    to_str,
)

# The highest leverage any major venue offers on linear perpetuals; more is an input error.
MAX_LEVERAGE = Decimal(125)

Side = str | int


def _sign(side: Side) -> int:
    """+1 for long, -1 for short."""
    if side in ("long", common_pb2.DIRECTION_LONG):
        return 1
    if side in ("short", common_pb2.DIRECTION_SHORT):
        return -1
    raise ValueError(f"side: expected 'long'/'short' or DIRECTION_LONG/DIRECTION_SHORT, "
                     f"got {side!r}")


def _check_leverage(leverage: Decimal) -> None:
    if not ONE <= leverage <= MAX_LEVERAGE:
        raise ValueError(f"leverage must be in [1, {MAX_LEVERAGE}], got {to_str(leverage)}")


def _check_mmr(mmr: Decimal) -> None:
    if not ZERO <= mmr < ONE:
        raise ValueError(f"mmr must be in [0, 1), got {to_str(mmr)}")


def initial_margin(notional: Decimal, leverage: Decimal) -> Decimal:
    """Margin locked to open `notional` at `leverage`: notional / leverage."""
    require_non_negative(notional, "notional")
    _check_leverage(leverage)
    return MONEY_CONTEXT.divide(notional, leverage)


def maintenance_margin(notional: Decimal, mmr: Decimal) -> Decimal:
    """Equity the position must keep to stay open: notional x mmr."""
    require_non_negative(notional, "notional")
    _check_mmr(mmr)
    return MONEY_CONTEXT.multiply(notional, mmr)


def unrealized_pnl(side: Side, entry: Decimal, qty: Decimal, price: Decimal) -> Decimal:
    """Linear-contract PnL at `price`: qty x (price - entry), negated for a short."""
    sign = _sign(side)
    require_positive(qty, "qty")
    return MONEY_CONTEXT.multiply(sign * qty, MONEY_CONTEXT.subtract(price, entry))


def liquidation_price_isolated(side: Side, entry: Decimal, qty: Decimal, leverage: Decimal,
                               mmr: Decimal) -> Decimal:
    """Price at which an isolated position's equity falls to its maintenance margin.

    Isolated equity at price P is IM + PnL(P) with IM = qty x entry / leverage; setting it
    equal to MM = qty x entry x mmr and solving gives (qty cancels):
        long:  P = entry x (1 - 1/leverage + mmr)
        short: P = entry x (1 + 1/leverage - mmr)
    Assumptions: no fees or funding, one maintenance tier, MM on the entry value (see module).
    mmr must be below 1/leverage: otherwise the initial margin is already at or under the
    maintenance margin and the position would be liquidated at entry.
    """
    sign = _sign(side)
    require_positive(entry, "entry")
    require_positive(qty, "qty")
    _check_leverage(leverage)
    _check_mmr(mmr)
    if MONEY_CONTEXT.multiply(mmr, leverage) >= 1:
        raise ValueError(f"mmr {to_str(mmr)} >= 1/leverage (leverage {to_str(leverage)}): "
                         "the position would be liquidated at entry")
    # entry - entry/L + entry*mmr (long), computed term by term: entry/L is the only rounding.
    cushion = MONEY_CONTEXT.subtract(MONEY_CONTEXT.divide(entry, leverage),
                                     MONEY_CONTEXT.multiply(entry, mmr))
    return MONEY_CONTEXT.subtract(entry, MONEY_CONTEXT.multiply(sign, cushion))


def liquidation_price_cross(side: Side, entry: Decimal, qty: Decimal, wallet_balance: Decimal,
                            mmr: Decimal, other_maintenance: Decimal = ZERO,
                            other_unrealized_pnl: Decimal = ZERO) -> Decimal:
    """Price of this position at which the whole cross-margin account hits maintenance.

    In cross mode every position draws on one wallet. The account is liquidated when
        wallet + PnL(P) + other_unrealized_pnl == qty x entry x mmr + other_maintenance
    where PnL(P) = s x qty x (P - entry), s = +1 long / -1 short. Holding the other positions'
    PnL and maintenance constant (they move with their own prices, which this cannot know) and
    solving for P:
        P = entry + s x (qty x entry x mmr + other_maintenance - wallet - other_unrealized_pnl)
                      / qty
    With no other positions and wallet = the initial margin this is exactly the isolated price.
    A long whose account covers a fall to zero has no liquidation price: 0 is returned. A short
    whose formula gives a price <= 0 is below maintenance at every price: that is an error.
    """
    sign = _sign(side)
    require_positive(entry, "entry")
    require_positive(qty, "qty")
    require_non_negative(wallet_balance, "wallet_balance")
    _check_mmr(mmr)
    require_non_negative(other_maintenance, "other_maintenance")
    shortfall = MONEY_CONTEXT.subtract(
        MONEY_CONTEXT.add(MONEY_CONTEXT.multiply(MONEY_CONTEXT.multiply(qty, entry), mmr),
                          other_maintenance),
        MONEY_CONTEXT.add(wallet_balance, other_unrealized_pnl))
    move = MONEY_CONTEXT.divide(shortfall, qty)
    price = MONEY_CONTEXT.add(entry, MONEY_CONTEXT.multiply(sign, move))
    if price > 0:
        return price
    if sign == 1:
        return ZERO
    raise ValueError(f"wallet_balance {to_str(wallet_balance)}: the account is below its "
                     "maintenance margin at every price of this short")


def stop_before_liquidation(side: Side, stop: Decimal, liquidation: Decimal) -> bool:
    """True when the stop triggers before liquidation: long stop > liq, short stop < liq.

    A long with liquidation price 0 (cross, fully covered) accepts any positive stop.
    """
    if _sign(side) == 1:
        return stop > liquidation
    return stop < liquidation
