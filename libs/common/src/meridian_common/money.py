"""Decimal helpers: money and quantities are exact everywhere in sizing and the ledger.

Values travel as decimal strings on the wire; these helpers parse them strictly (a float or a
malformed string is an error, never a silently rounded number) and quantize with explicit rules.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

ZERO = Decimal(0)
ONE = Decimal(1)
# Enough digits for any price x quantity product the exchanges produce, with room for averages.
MONEY_CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN)
# Fees and cash are kept to 1e-8 (the finest unit exchanges settle in).
CASH_QUANTUM = Decimal("0.00000001")
# Average entry prices are kept to 1e-12: finer than any tick, coarse enough to stay short.
PRICE_QUANTUM = Decimal("0.000000000001")


def dec(value: str | int | Decimal, field: str = "value") -> Decimal:
    """Parse an exact decimal; raise ValueError naming the field for anything else."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int) and not isinstance(value, bool):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{field}: {value!r} is not a decimal number") from None
    else:
        raise ValueError(f"{field}: expected a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{field}: {value!r} is not a finite number")
    return result


def to_str(value: Decimal) -> str:
    """Canonical wire form: no exponent, no trailing zeros ('0' for zero)."""
    if value == 0:
        return "0"
    text = format(value.normalize(MONEY_CONTEXT), "f")
    return text


def quantize_down(value: Decimal, step: Decimal) -> Decimal:
    """Round towards zero to a multiple of step (lot sizes: never order more than was sized)."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    # divide_int truncates the exact quotient: no intermediate rounding that could round up.
    return MONEY_CONTEXT.multiply(MONEY_CONTEXT.divide_int(value, step), step)


def cash(value: Decimal) -> Decimal:
    """Round an amount of quote currency to the cash quantum (banker's rounding)."""
    return value.quantize(CASH_QUANTUM, rounding=ROUND_HALF_EVEN, context=MONEY_CONTEXT)


def price(value: Decimal) -> Decimal:
    """Round a derived price (an average) to the price quantum."""
    return value.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN, context=MONEY_CONTEXT)


def require_positive(value: Decimal, name: str) -> None:
    """Refuse a non-positive amount, naming it (sizing and margin inputs)."""
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {to_str(value)}")


def require_non_negative(value: Decimal, name: str) -> None:
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {to_str(value)}")
