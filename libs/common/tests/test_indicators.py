"""Ema and Rsi against straightforward TA-Lib-convention references, on real BTC closes."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest

from meridian_common.indicators import Ema, Rsi
from meridian_common.marketdata import CsvCandleSource, default_data_dir

_CLOSES: list[float] = []


def closes() -> list[float]:
    if not _CLOSES:
        source = CsvCandleSource(default_data_dir(), "BTCUSDT", "1h")
        _CLOSES.extend(float(r.close) for r in source.rows())
    return _CLOSES


def ref_ema(xs: list[float], period: int) -> list[float | None]:
    """TA-Lib EMA: seeded with the SMA of the first `period` values, then k = 2 / (period + 1)."""
    out: list[float | None] = [None] * len(xs)
    if len(xs) < period:
        return out
    k = 2.0 / (period + 1)
    value = sum(xs[:period]) / period
    out[period - 1] = value
    for i in range(period, len(xs)):
        value = k * xs[i] + (1.0 - k) * value
        out[i] = value
    return out


def ref_rsi(xs: list[float], period: int) -> list[float | None]:
    """TA-Lib RSI (Wilder): first averages are the means of the first `period` changes; the first
    output is at index `period`."""
    out: list[float | None] = [None] * len(xs)
    if len(xs) <= period:
        return out
    changes = [xs[i] - xs[i - 1] for i in range(1, len(xs))]
    gains = [max(c, 0.0) for c in changes]
    losses = [max(-c, 0.0) for c in changes]
    avg_gain = sum(gains[:period]) / period
    avg_loss = sum(losses[:period]) / period

    def rsi(g: float, loss: float) -> float:
        return 0.0 if g + loss == 0 else 100.0 * g / (g + loss)

    out[period] = rsi(avg_gain, avg_loss)
    for i in range(period + 1, len(xs)):
        avg_gain = (avg_gain * (period - 1) + gains[i - 1]) / period
        avg_loss = (avg_loss * (period - 1) + losses[i - 1]) / period
        out[i] = rsi(avg_gain, avg_loss)
    return out


def _assert_series_close(got: list[float | None], want: list[float | None], rel: float) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if w is None:
            assert g is None, f"index {i}: expected None during warm-up, got {g}"
        else:
            assert g is not None, f"index {i}: expected a value"
            assert math.isclose(g, w, rel_tol=rel, abs_tol=1e-9), f"index {i}: {g} != {w}"


def test_shared_data_is_long_enough() -> None:
    assert len(closes()) > 30_000


@pytest.mark.parametrize("period", [1, 2, 12, 20, 50, 200])
def test_ema_matches_reference_on_btc(period: int) -> None:
    xs = closes()
    ema = Ema(period)
    _assert_series_close([ema.update(x) for x in xs], ref_ema(xs, period), 1e-9)


@pytest.mark.parametrize("period", [2, 14, 21])
def test_rsi_matches_reference_on_btc(period: int) -> None:
    xs = closes()
    rsi = Rsi(period)
    got = [rsi.update(x) for x in xs]
    _assert_series_close(got, ref_rsi(xs, period), 1e-9)
    assert all(0.0 <= v <= 100.0 for v in got if v is not None)


def test_warm_up_lengths() -> None:
    xs = closes()[:100]
    ema = Ema(20)
    outs = [ema.update(x) for x in xs]
    assert outs[:19] == [None] * 19
    assert outs[19] == pytest.approx(sum(xs[:20]) / 20, rel=1e-12)
    assert all(v is not None for v in outs[19:])
    rsi = Rsi(14)
    routs = [rsi.update(x) for x in xs]
    assert routs[:14] == [None] * 14
    assert all(v is not None for v in routs[14:])


def test_rsi_extremes() -> None:
    up = Rsi(5)
    assert [up.update(float(x)) for x in range(7)][-1] == 100.0
    down = Rsi(5)
    assert [down.update(float(-x)) for x in range(7)][-1] == 0.0
    flat = Rsi(5)
    assert [flat.update(1.0) for _ in range(7)][-1] == 0.0  # TA-Lib: 0 when nothing moved


def test_state_round_trips_mid_stream() -> None:
    """State is explicit: rebuilding an indicator from its fields continues identically."""
    xs = closes()[:500]
    ema, rsi = Ema(50), Rsi(14)
    for x in xs[:250]:
        ema.update(x)
        rsi.update(x)
    ema2 = Ema(**dataclasses.asdict(ema))
    rsi2 = Rsi(**dataclasses.asdict(rsi))
    for x in xs[250:]:
        assert ema.update(x) == ema2.update(x)
        assert rsi.update(x) == rsi2.update(x)


@pytest.mark.parametrize(("cls", "period"), [(Ema, 0), (Rsi, 1)])
def test_bad_periods(cls: type, period: int) -> None:
    with pytest.raises(ValueError, match="period"):
        cls(period)


@pytest.mark.skipif(importlib.util.find_spec("talib") is None, reason="TA-Lib not installed")
def test_against_talib() -> None:  # pragma: no cover - only where TA-Lib is installed
    import numpy as np
    import talib

    xs = closes()[:3000]
    arr = np.asarray(xs, dtype=float)
    for period in (20, 50):
        want = [None if math.isnan(v) else float(v) for v in talib.EMA(arr, timeperiod=period)]
        ema = Ema(period)
        _assert_series_close([ema.update(x) for x in xs], want, 1e-9)
    want = [None if math.isnan(v) else float(v) for v in talib.RSI(arr, timeperiod=14)]
    rsi = Rsi(14)
    _assert_series_close([rsi.update(x) for x in xs], want, 1e-9)
