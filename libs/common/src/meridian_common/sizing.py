"""Order sizing in exact decimals: exchange market rules and the sizing methods built on them.

Every method here works in Decimal end to end (a float would make "never exceed the budget"
unprovable) and rounds the quantity *down* to the lot: sizing may order less than the budget
allows, never more. When the rounded quantity falls below an exchange minimum the result is
quantity 0 with a reason instead of an order the exchange would reject, and every result carries
the numbers it used as strings so the risk decision can report what it compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from meridian.v1 import common_pb2
from meridian_common.money import (
    MONEY_CONTEXT,
    ONE,
    ZERO,
    dec,
    quantize_down,
    require_non_negative,
    require_positive,
    to_str,
)

RoundMode = Literal["down", "up", "nearest"]
# Kelly fractions are cut (down) to this step: finer digits carry no information about an edge
# estimated from a few dozen trades, and short strings read better in decisions.
KELLY_QUANTUM = Decimal("0.00000001")
DEFAULT_MIN_TRADES = 20


def _floor_units(amount: Decimal, unit_value: Decimal) -> Decimal:
    """Exact floor(amount / unit_value) for amount >= 0, unit_value > 0.

    divide_int truncates the exact quotient, so unlike rounding amount / unit_value to 34 digits
    first it can never round a quotient that is a hair below an integer up to that integer.
    """
    return MONEY_CONTEXT.divide_int(amount, unit_value)


def _lots_for_notional(notional: Decimal, price: Decimal, lot: Decimal) -> Decimal:
    """Largest multiple of `lot` whose value at `price` is <= notional (0 for notional <= 0)."""
    if notional <= 0:
        return ZERO
    units = _floor_units(notional, MONEY_CONTEXT.multiply(price, lot))
    return MONEY_CONTEXT.multiply(units, lot)


def quantity_for_notional(notional: Decimal, price: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of the lot step whose value at `price` does not exceed `notional`."""
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    return _lots_for_notional(notional, price, step)


# --------------------------------------------------------------------------- market rules


def _side_is_buy(side: str | int) -> bool:
    if side in ("buy", common_pb2.SIDE_BUY):
        return True
    if side in ("sell", common_pb2.SIDE_SELL):
        return False
    raise ValueError(f"side: expected 'buy'/'sell' or SIDE_BUY/SIDE_SELL, got {side!r}")


@dataclass(frozen=True, slots=True)
class MarketRules:
    """One market's order constraints, as the exchange enforces them.

    tick: price step; lot: quantity step; min_qty: smallest quantity; min_notional: smallest
    quantity x price; max_leverage: highest leverage the market allows (1 for spot). Fields
    accept Decimal, int or decimal strings (never floats) and are stored as Decimal.
    """

    tick: Decimal
    lot: Decimal
    min_qty: Decimal = ZERO
    min_notional: Decimal = ZERO
    max_leverage: Decimal = ONE

    def __post_init__(self) -> None:
        for name in ("tick", "lot", "min_qty", "min_notional", "max_leverage"):
            object.__setattr__(self, name, dec(getattr(self, name), name))
        require_positive(self.tick, "tick")
        require_positive(self.lot, "lot")
        require_non_negative(self.min_qty, "min_qty")
        require_non_negative(self.min_notional, "min_notional")
        if self.max_leverage < 1:
            raise ValueError(f"max_leverage must be >= 1, got {to_str(self.max_leverage)}")

    def round_price(self, price: Decimal, side: str | int | None = None,
                    mode: RoundMode | None = None) -> Decimal:
        """Round a limit price to the tick.

        By side, a buy rounds down and a sell rounds up, so rounding never makes a limit order
        more aggressive than asked (never pays more / sells for less). `mode` overrides the side:
        "down", "up" or "nearest" (an exact half goes to the even tick, as MONEY_CONTEXT does).
        """
        require_positive(price, "price")
        if mode is None:
            if side is None:
                raise ValueError("round_price needs a side or a mode")
            mode = "down" if _side_is_buy(side) else "up"
        units = _floor_units(price, self.tick)
        rest = MONEY_CONTEXT.subtract(price, MONEY_CONTEXT.multiply(units, self.tick))
        if mode == "up":
            units += 1 if rest > 0 else 0
        elif mode == "nearest":
            twice = MONEY_CONTEXT.multiply(rest, 2)
            if twice > self.tick or (twice == self.tick and units % 2 == 1):
                units += 1
        elif mode != "down":
            raise ValueError(f"mode: expected 'down', 'up' or 'nearest', got {mode!r}")
        if units == 0:
            raise ValueError(f"price {to_str(price)} rounds to 0 with tick {to_str(self.tick)}")
        return MONEY_CONTEXT.multiply(units, self.tick)

    def round_qty(self, qty: Decimal) -> Decimal:
        """Round a quantity down to the lot (never order more than was sized)."""
        require_non_negative(qty, "qty")
        return quantize_down(qty, self.lot)

    def valid(self, qty: Decimal, price: Decimal) -> list[str]:
        """Every reason the exchange would reject this order; an empty list means it passes."""
        reasons: list[str] = []
        if qty <= 0:
            reasons.append(f"quantity {to_str(qty)} is not positive")
        elif MONEY_CONTEXT.remainder(qty, self.lot) != 0:
            reasons.append(f"quantity {to_str(qty)} is not a multiple of lot {to_str(self.lot)}")
        if price <= 0:
            reasons.append(f"price {to_str(price)} is not positive")
        elif MONEY_CONTEXT.remainder(price, self.tick) != 0:
            reasons.append(f"price {to_str(price)} is not a multiple of tick {to_str(self.tick)}")
        if 0 < qty < self.min_qty:
            reasons.append(f"quantity {to_str(qty)} is below min_qty {to_str(self.min_qty)}")
        if qty > 0 and price > 0:
            notional = MONEY_CONTEXT.multiply(qty, price)
            if notional < self.min_notional:
                reasons.append(f"notional {to_str(notional)} is below min_notional "
                               f"{to_str(self.min_notional)}")
        return reasons

    @classmethod
    def from_ccxt(cls, market: Mapping[str, Any],
                  precision_mode: Literal["tick_size", "decimal_places"] = "tick_size",
                  ) -> MarketRules:
        """Build the rules from a ccxt unified market dict.

        precision.price / precision.amount are tick sizes in ccxt 4.x's TICK_SIZE mode (Binance,
        Bybit); pass precision_mode="decimal_places" for exchanges where they count decimals.
        Both are required: without them no order can be rounded, so a missing one is an error.
        Defaults for missing limits, chosen so a gap can only make orders smaller or rarer:
        limits.amount.min -> one lot (the smallest order any exchange accepts anyway);
        limits.cost.min -> 0 (the risk service's own min_order_notional still applies);
        limits.leverage.max -> 1 (no leverage until the market says it allows some).

        ccxt hands numbers over as floats; they are read through repr(), the shortest decimal that
        round-trips, which is the exchange's published string for any real tick or limit.
        """
        if precision_mode not in ("tick_size", "decimal_places"):
            raise ValueError(f"precision_mode: expected 'tick_size' or 'decimal_places', "
                             f"got {precision_mode!r}")
        symbol = market.get("symbol", "?")
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}

        def number(value: Any, name: str) -> Decimal | None:
            if value is None:
                return None
            if isinstance(value, float):
                value = repr(value)
            return dec(value, f"{symbol} {name}")

        def step(name: str) -> Decimal:
            value = number(precision.get(name), f"precision.{name}")
            if value is None:
                raise ValueError(f"{symbol} precision.{name}: missing, cannot round orders")
            if precision_mode == "decimal_places":
                if value != value.to_integral_value() or value < 0:
                    raise ValueError(f"{symbol} precision.{name}: {value} is not a count of "
                                     "decimal places")
                return Decimal(1).scaleb(-int(value))
            return value

        def limit(group: str, key: str) -> Decimal | None:
            return number((limits.get(group) or {}).get(key), f"limits.{group}.{key}")

        tick, lot = step("price"), step("amount")
        min_qty = limit("amount", "min")
        min_notional = limit("cost", "min")
        max_leverage = limit("leverage", "max")
        return cls(tick=tick, lot=lot,
                   min_qty=lot if min_qty is None else min_qty,
                   min_notional=ZERO if min_notional is None else min_notional,
                   max_leverage=ONE if max_leverage is None else max_leverage)


# --------------------------------------------------------------------------- sizing methods


@dataclass(frozen=True, slots=True)
class Sizing:
    """A sizing decision: quantity already rounded to the lot, or 0 with the reason.

    notional is quantity x the price the size was computed at. inputs holds every number the
    method used, as canonical decimal strings, so the decision that quotes it is reproducible.
    """

    method: str
    quantity: Decimal
    notional: Decimal
    inputs: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.quantity > 0


def _check_leverage(leverage: Decimal, rules: MarketRules) -> None:
    if leverage < 1 or leverage > rules.max_leverage:
        raise ValueError(f"leverage must be in [1, {to_str(rules.max_leverage)}], "
                         f"got {to_str(leverage)}")


def _check_fraction(value: Decimal, name: str) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {to_str(value)}")


def _finish(method: str, qty: Decimal, price: Decimal, rules: MarketRules,
            inputs: dict[str, str]) -> Sizing:
    """Apply the exchange minimums to a lot-rounded quantity and package the result."""
    inputs = {**inputs, "price": to_str(price), "lot": to_str(rules.lot),
              "min_qty": to_str(rules.min_qty), "min_notional": to_str(rules.min_notional),
              "sized_quantity": to_str(qty)}
    notional = MONEY_CONTEXT.multiply(qty, price)
    reason = ""
    if qty == 0:
        reason = f"budget buys less than one lot ({to_str(rules.lot)}) at {to_str(price)}"
    elif qty < rules.min_qty:
        reason = f"quantity {to_str(qty)} is below min_qty {to_str(rules.min_qty)}"
    elif notional < rules.min_notional:
        reason = (f"notional {to_str(notional)} is below min_notional "
                  f"{to_str(rules.min_notional)}")
    if reason:
        return Sizing(method, ZERO, ZERO, inputs, reason)
    return Sizing(method, qty, notional, inputs)


def _fraction_of_equity(method: str, equity: Decimal, fraction: Decimal, price: Decimal,
                        rules: MarketRules, leverage: Decimal,
                        extra: dict[str, str]) -> Sizing:
    require_non_negative(equity, "equity")
    _check_fraction(fraction, "fraction")
    require_positive(price, "price")
    _check_leverage(leverage, rules)
    budget = MONEY_CONTEXT.multiply(MONEY_CONTEXT.multiply(equity, fraction), leverage)
    qty = _lots_for_notional(budget, price, rules.lot)
    inputs = {"equity": to_str(equity), **extra, "fraction": to_str(fraction),
              "leverage": to_str(leverage), "budget": to_str(budget)}
    return _finish(method, qty, price, rules, inputs)


def fixed_fraction(equity: Decimal, fraction: Decimal, price: Decimal, rules: MarketRules,
                   leverage: Decimal = ONE) -> Sizing:
    """Spend a fixed fraction of equity (times leverage) per entry: notional <= E x f x L."""
    return _fraction_of_equity("fixed_fraction", equity, fraction, price, rules, leverage, {})


def confidence_scaled(equity: Decimal, base_fraction: Decimal, confidence: Decimal,
                      cap_fraction: Decimal, price: Decimal, rules: MarketRules,
                      leverage: Decimal = ONE) -> Sizing:
    """Fixed fraction scaled by the signal's confidence: f = min(base x confidence, cap).

    The cap keeps an over-confident model (or a base fraction set for weak signals) from
    betting more than the operator allows on any single entry.
    """
    _check_fraction(base_fraction, "base_fraction")
    _check_fraction(confidence, "confidence")
    _check_fraction(cap_fraction, "cap_fraction")
    fraction = min(MONEY_CONTEXT.multiply(base_fraction, confidence), cap_fraction)
    extra = {"base_fraction": to_str(base_fraction), "confidence": to_str(confidence),
             "cap_fraction": to_str(cap_fraction)}
    return _fraction_of_equity("confidence_scaled", equity, fraction, price, rules, leverage,
                               extra)


def volatility_adjusted(equity: Decimal, risk_fraction: Decimal, entry: Decimal, stop: Decimal,
                        rules: MarketRules, leverage: Decimal = ONE,
                        max_notional: Decimal | None = None) -> Sizing:
    """Size so that the loss if the stop is hit equals equity x risk_fraction.

    quantity = equity x risk_fraction / |entry - stop|: a wide (volatile) stop gives a small
    position, a tight stop a large one. Tight stops would ask for unbounded size, so the notional
    is also capped by equity x leverage (what margin allows) and by max_notional when given; the
    binding constraint is reported in inputs["binding"]. Fees and slippage past the stop are
    not included: keep risk_fraction conservative.
    """
    require_non_negative(equity, "equity")
    _check_fraction(risk_fraction, "risk_fraction")
    require_positive(entry, "entry")
    require_positive(stop, "stop")
    _check_leverage(leverage, rules)
    if stop == entry:
        raise ValueError(f"stop {to_str(stop)} equals entry: the risk per unit would be zero")
    risk_budget = MONEY_CONTEXT.multiply(equity, risk_fraction)
    distance = abs(MONEY_CONTEXT.subtract(entry, stop))
    by_risk = MONEY_CONTEXT.multiply(
        _floor_units(risk_budget, MONEY_CONTEXT.multiply(distance, rules.lot)), rules.lot)
    margin_cap = MONEY_CONTEXT.multiply(equity, leverage)
    candidates = [(by_risk, "risk"),
                  (_lots_for_notional(margin_cap, entry, rules.lot), "leverage")]
    inputs = {"equity": to_str(equity), "risk_fraction": to_str(risk_fraction),
              "risk_budget": to_str(risk_budget), "entry": to_str(entry), "stop": to_str(stop),
              "stop_distance": to_str(distance), "leverage": to_str(leverage),
              "leverage_cap_notional": to_str(margin_cap)}
    if max_notional is not None:
        require_non_negative(max_notional, "max_notional")
        candidates.append((_lots_for_notional(max_notional, entry, rules.lot), "max_notional"))
        inputs["max_notional"] = to_str(max_notional)
    qty, binding = min(candidates, key=lambda c: c[0])
    inputs["binding"] = binding
    return _finish("volatility_adjusted", qty, entry, rules, inputs)


def kelly_fraction(wins: int, losses: int, avg_win: Decimal, avg_loss: Decimal,
                   multiplier: Decimal = Decimal("0.5"), cap: Decimal = Decimal("0.25"),
                   min_trades: int = DEFAULT_MIN_TRADES) -> Decimal:
    """Fractional Kelly: (p - (1 - p) / b) x multiplier, clipped to [0, cap].

    p = wins / (wins + losses), b = avg_win / avg_loss (both magnitudes). Full Kelly maximises
    growth only if p and b are known exactly; estimated from a short record they are not, so
    the default halves it and caps it, and below min_trades the estimate is too noisy to bet
    on at all (0). The result is cut down to KELLY_QUANTUM.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"wins/losses must not be negative, got {wins}/{losses}")
    require_non_negative(avg_win, "avg_win")
    require_non_negative(avg_loss, "avg_loss")
    require_non_negative(multiplier, "multiplier")
    _check_fraction(cap, "cap")
    if wins + losses < min_trades or wins == 0 or avg_win == 0:
        return ZERO
    if losses == 0:
        raw = ONE  # p = 1: nothing to lose by the record; the cap does the limiting
    else:
        require_positive(avg_loss, "avg_loss")
        p = MONEY_CONTEXT.divide(Decimal(wins), Decimal(wins + losses))
        # (1 - p) / b == (1 - p) * avg_loss / avg_win
        raw = MONEY_CONTEXT.subtract(p, MONEY_CONTEXT.divide(
            MONEY_CONTEXT.multiply(ONE - p, avg_loss), avg_win))
    scaled = MONEY_CONTEXT.multiply(raw, multiplier)
    clipped = min(max(scaled, ZERO), cap)
    return quantize_down(clipped, KELLY_QUANTUM)


def fractional_kelly(equity: Decimal, wins: int, losses: int, avg_win: Decimal,
                     avg_loss: Decimal, price: Decimal, rules: MarketRules,
                     leverage: Decimal = ONE, multiplier: Decimal = Decimal("0.5"),
                     cap: Decimal = Decimal("0.25"),
                     min_trades: int = DEFAULT_MIN_TRADES) -> Sizing:
    """Fixed-fraction sizing with the fraction from kelly_fraction on the strategy's record."""
    fraction = kelly_fraction(wins, losses, avg_win, avg_loss, multiplier, cap, min_trades)
    extra = {"wins": str(wins), "losses": str(losses), "avg_win": to_str(avg_win),
             "avg_loss": to_str(avg_loss), "multiplier": to_str(multiplier),
             "cap": to_str(cap), "min_trades": str(min_trades)}
    sizing = _fraction_of_equity("fractional_kelly", equity, fraction, price, rules, leverage,
                                 extra)
    if fraction == 0:
        reason = (f"kelly fraction is 0 (fewer than {min_trades} trades or no edge)")
        return Sizing(sizing.method, ZERO, ZERO, sizing.inputs, reason)
    return sizing
