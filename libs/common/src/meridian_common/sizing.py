"""Order sizing in exact decimals."""

from __future__ import annotations

from decimal import Decimal

from meridian_common.money import MONEY_CONTEXT, ZERO, quantize_down


def quantity_for_notional(notional: Decimal, price: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of the lot step whose value at `price` does not exceed `notional`."""
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    if notional <= 0:
        return ZERO
    return quantize_down(MONEY_CONTEXT.divide(notional, price), step)
