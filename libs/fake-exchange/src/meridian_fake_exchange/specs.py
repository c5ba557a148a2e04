"""Instrument rules (tick size, quantity step, minimums) as the venues publish them.

The values are the venues' published filters for these pairs (rounded where they change
often, e.g. maximum order sizes). ccxt derives `precision` and `limits` from them, so code under
test sees realistic rounding rules. A symbol without an entry gets rules derived from the
precision its data uses, so any CSV file can be served.
"""

from __future__ import annotations

from dataclasses import dataclass

QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "BTC", "ETH")


def split_symbol(symbol: str) -> tuple[str, str]:
    """'BTCUSDT' -> ('BTC', 'USDT')."""
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ValueError(f"cannot split {symbol!r} into base and quote (known quotes: {QUOTES})")


@dataclass(frozen=True)
class Spec:
    """One market's trading rules, as decimal strings in the venue's own formatting."""

    tick: str            # price step
    step: str            # quantity step
    min_qty: str
    max_qty: str
    max_mkt_qty: str
    min_notional: str
    launch_ms: int = 1_585_526_400_000  # first trading day, for "created"/"onboardDate"


# (venue, kind, symbol) -> Spec; kind is "spot" or "linear"
_SPECS: dict[tuple[str, str, str], Spec] = {
    ("bybit", "spot", "BTCUSDT"): Spec("0.01", "0.000001", "0.000048", "71.73956243",
                                       "71.73956243", "1"),
    ("bybit", "spot", "ETHUSDT"): Spec("0.01", "0.00001", "0.00062", "1229.2336343",
                                       "1229.2336343", "1"),
    ("bybit", "spot", "XRPUSDT"): Spec("0.0001", "0.01", "0.93", "1000000", "1000000", "1"),
    ("bybit", "spot", "LTCUSDT"): Spec("0.01", "0.00001", "0.011", "10000", "10000", "1"),
    ("bybit", "linear", "BTCUSDT"): Spec("0.10", "0.001", "0.001", "1190.000", "119.000", "5",
                                         1_585_526_400_000),
    ("bybit", "linear", "ETHUSDT"): Spec("0.01", "0.01", "0.01", "7240.00", "724.00", "5",
                                         1_615_766_400_000),
    ("bybit", "linear", "XRPUSDT"): Spec("0.0001", "1", "1", "6000000", "600000", "5",
                                         1_615_766_400_000),
    ("bybit", "linear", "LTCUSDT"): Spec("0.01", "0.1", "0.1", "35000.0", "3500.0", "5",
                                         1_615_766_400_000),
    ("binance", "spot", "BTCUSDT"): Spec("0.01000000", "0.00001000", "0.00001000",
                                         "9000.00000000", "87.04750415", "5.00000000",
                                         1_502_942_400_000),
    ("binance", "spot", "ETHUSDT"): Spec("0.01000000", "0.00010000", "0.00010000",
                                         "9000.00000000", "2207.37419972", "5.00000000",
                                         1_502_942_400_000),
    ("binance", "spot", "XRPUSDT"): Spec("0.00010000", "0.10000000", "0.10000000",
                                         "9222449.00000000", "1006486.51638889",
                                         "5.00000000", 1_525_420_800_000),
    ("binance", "spot", "LTCUSDT"): Spec("0.01000000", "0.00100000", "0.00100000",
                                         "9000.00000000", "7893.44370833", "5.00000000",
                                         1_513_130_400_000),
    ("binance", "linear", "BTCUSDT"): Spec("0.10", "0.001", "0.001", "1000", "120", "100",
                                           1_569_398_400_000),
    ("binance", "linear", "ETHUSDT"): Spec("0.01", "0.001", "0.001", "10000", "2000", "20",
                                           1_569_398_400_000),
    ("binance", "linear", "XRPUSDT"): Spec("0.0001", "0.1", "0.1", "10000000", "2000000", "5",
                                           1_578_960_000_000),
    ("binance", "linear", "LTCUSDT"): Spec("0.01", "0.001", "0.001", "100000", "10000", "20",
                                           1_578_960_000_000),
}


def spec_for(venue: str, kind: str, symbol: str, price_dp: int) -> Spec:
    """The published rules, or rules derived from the data's price precision."""
    known = _SPECS.get((venue, kind, symbol))
    if known is not None:
        return known
    tick = format(10.0 ** -price_dp, f".{price_dp}f") if price_dp else "1"
    return Spec(tick, "0.001", "0.001", "100000", "10000", "5")


def decimals(step: str) -> int:
    """'0.010' -> 2: the number of decimals a step size really has (trailing zeros ignored)."""
    _, dot, frac = step.partition(".")
    return len(frac.rstrip("0")) if dot else 0
