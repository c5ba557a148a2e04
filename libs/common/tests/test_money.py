"""Exact decimal helpers: strict parsing, canonical strings, rounding that never goes up."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meridian_common.money import (
    CASH_QUANTUM,
    MONEY_CONTEXT,
    cash,
    dec,
    price,
    quantize_down,
    to_str,
)

STEPS = [Decimal(s) for s in ("1", "0.1", "0.00001", "0.001", "0.003", "0.25", "0.5", "7",
                              "0.00000001", "10")]


@pytest.mark.parametrize(("text", "expected"), [
    ("1", Decimal(1)), ("0.1", Decimal("0.1")), ("-2.50", Decimal("-2.50")),
    ("1e-8", Decimal("0.00000001")), ("35050.75", Decimal("35050.75")),
])
def test_dec_parses_exact_strings(text: str, expected: Decimal) -> None:
    result = dec(text)
    assert result == expected
    assert isinstance(result, Decimal)


def test_dec_accepts_int_and_decimal() -> None:
    assert dec(5) == Decimal(5)
    assert dec(Decimal("1.25")) == Decimal("1.25")


@pytest.mark.parametrize("value", [0.1, 1.0, float("nan"), float("inf"), True, None, b"1", [1]])
def test_dec_rejects_non_decimal_types_naming_the_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"^Fill\.price: "):
        dec(value, "Fill.price")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf"])
def test_dec_rejects_non_finite_strings(text: str) -> None:
    with pytest.raises(ValueError, match=r"^Candle\.close: .*not a finite"):
        dec(text, "Candle.close")


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity")])
def test_dec_rejects_non_finite_decimals(value: Decimal) -> None:
    with pytest.raises(ValueError, match=r"^qty: "):
        dec(value, "qty")


@pytest.mark.parametrize("text", ["", "abc", "1,5", "1.2.3", "0x10", "--1"])
def test_dec_rejects_garbage_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match=r"^Signal\.reference_price: .*not a decimal number"):
        dec(text, "Signal.reference_price")


@pytest.mark.parametrize(("value", "text"), [
    (Decimal(0), "0"), (Decimal("0.000"), "0"), (Decimal("-0"), "0"),
    (Decimal("1.500"), "1.5"), (Decimal("1E+2"), "100"), (Decimal("1E-8"), "0.00000001"),
    (Decimal("-12.3400"), "-12.34"), (Decimal("35000"), "35000"),
])
def test_to_str_canonical(value: Decimal, text: str) -> None:
    assert to_str(value) == text


@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=12,
                   allow_nan=False, allow_infinity=False))
def test_to_str_round_trips(value: Decimal) -> None:
    text = to_str(value)
    assert "E" not in text
    assert "e" not in text
    assert Decimal(text) == value


def test_quantize_down_examples() -> None:
    assert quantize_down(Decimal("0.0285299"), Decimal("0.00001")) == Decimal("0.02852")
    assert quantize_down(Decimal("-0.0285299"), Decimal("0.00001")) == Decimal("-0.02852")
    assert quantize_down(Decimal("10"), Decimal("0.003")) == Decimal("9.999")
    assert quantize_down(Decimal("0.0029"), Decimal("0.003")) == 0


@pytest.mark.parametrize("step", [Decimal(0), Decimal("-0.1")])
def test_quantize_down_rejects_bad_step(step: Decimal) -> None:
    with pytest.raises(ValueError, match="step"):
        quantize_down(Decimal(1), step)


@settings(max_examples=300)
@given(st.decimals(min_value=Decimal(0), max_value=Decimal("1e9"), places=10,
                   allow_nan=False, allow_infinity=False),
       st.sampled_from(STEPS))
def test_quantize_down_never_rounds_up(value: Decimal, step: Decimal) -> None:
    q = quantize_down(value, step)
    assert q <= value
    assert MONEY_CONTEXT.subtract(value, q) < step
    assert MONEY_CONTEXT.remainder(q, step) == 0


@settings(max_examples=300)
@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(STEPS),
       st.integers(min_value=1, max_value=40))
@example(k=11, step=Decimal("0.25"), e=33)
@example(k=12346, step=Decimal("0.003"), e=32)
def test_quantize_down_never_rounds_up_just_below_a_step(k: int, step: Decimal, e: int) -> None:
    """Values a hair below a multiple of the step, with up to the context's 34 digits."""
    multiple = MONEY_CONTEXT.multiply(Decimal(k), step)
    value = MONEY_CONTEXT.subtract(multiple, Decimal(1).scaleb(-e))
    if value <= 0 or value == multiple:
        return
    q = quantize_down(value, step)
    assert q <= value, f"quantize_down({value}, {step}) = {q} rounds up"
    assert MONEY_CONTEXT.subtract(value, q) < step


def test_quantize_down_34_digit_value_not_rounded_up() -> None:
    # 34 significant digits: within MONEY_CONTEXT precision, one unit below 12346 * 0.003.
    value = Decimal("37.03799999999999999999999999999999")
    assert len(value.as_tuple().digits) == 34
    assert quantize_down(value, Decimal("0.003")) == Decimal("37.035")


@given(st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=14,
                   allow_nan=False, allow_infinity=False))
def test_cash_and_price_quantize_to_nearest(value: Decimal) -> None:
    c = cash(value)
    assert c.as_tuple().exponent == -8
    assert abs(c - value) <= CASH_QUANTUM / 2
    p = price(value)
    assert p.as_tuple().exponent == -12
    assert abs(p - value) <= Decimal("0.0000000000005")


def test_cash_bankers_rounding() -> None:
    assert cash(Decimal("0.000000005")) == Decimal("0")
    assert cash(Decimal("0.000000015")) == Decimal("0.00000002")
    assert cash(Decimal("-0.000000025")) == Decimal("-0.00000002")
