"""TrendFactory: every hyperparameter a scalar or a list, the Cartesian product over the symbols
in one pass, each indicator window computed once, and with the released defaults exactly the
entries and exits `trend_events` gives over the features service's matrix."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from meridian.v1 import common_pb2
from meridian_common.features import TREND_V2, feature_matrix
from meridian_common.indicators import ema_batch, macd_batch, rsi_batch
from meridian_common.labels import Barriers
from meridian_common.strategy import TrendParams, TrendRules, trend_events
from meridian_research import signals as signals_module
from meridian_research.data import Wide, load_wide
from meridian_research.grid import NAMES, build_grid
from meridian_research.signals import IndicatorCache, SymbolIndicators, TrendFactory, TrendSignals
from meridian_signals.meta_model import exit_prices

LONG, SHORT, FLAT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT, common_pb2.DIRECTION_FLAT


@pytest.fixture(scope="module")
def wide() -> Wide:
    return load_wide(symbols=("BTCUSDT", "ETHUSDT"), start="2022-09-01", end="2023-01-01")


def features(w: Wide, symbol: str) -> np.ndarray:
    rows = w.present(symbol)
    return feature_matrix(w.open_ms[rows], *(getattr(w, f)[symbol].to_numpy()[rows]
                                             for f in ("high", "low", "close", "volume")))


def column(sig: TrendSignals, name: str, key: tuple[Any, ...]) -> np.ndarray:
    return getattr(sig, name)[key].to_numpy()


def test_lists_broadcast_to_the_product_with_symbol_last(wide: Wide) -> None:
    sig = TrendFactory().run(wide, ema_fast=[10, 20], entry_score=[0.25, 0.5, 0.75],
                             allow_short=[False, True], stop_loss=0.02)
    assert sig.columns.names == ["ema_fast", "entry_score", "allow_short", "symbol"]
    assert len(sig.columns) == 2 * 3 * 2 * 2
    assert sig.columns[:2].tolist() == [(10, 0.25, False, "BTCUSDT"), (10, 0.25, False, "ETHUSDT")]
    assert sig.combo_levels == ["ema_fast", "entry_score", "allow_short"]
    for name in ("long_entries", "long_exits", "short_entries", "short_exits"):
        frame = getattr(sig, name)
        assert frame.shape == (len(wide.index), 24)
        assert frame.dtypes.eq(bool).all()
        assert frame.index.equals(wide.index)
    assert sig.states.dtypes.eq(np.int8).all()
    assert list(sig.params.columns) == [*NAMES, "symbol"]
    assert (sig.params["stop_loss"] == 0.02).all()  # a scalar is a value, not a level
    assert sig.symbols[:4] == ["BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT"]
    # no shorts where they are not allowed; entries carry barriers, other rows none
    assert not sig.short_entries.xs(False, level="allow_short", axis=1).to_numpy().any()
    entries = (sig.long_entries | sig.short_entries).to_numpy()
    assert (np.isnan(sig.stop_loss.to_numpy()) == ~entries).all()
    assert np.allclose(sig.stop_loss.to_numpy()[entries], 0.02)


def test_invalid_corners_of_the_grid_are_skipped_with_the_reason() -> None:
    grid = build_grid(ema_fast=[20, 50, 60], ema_slow=50, entry_score=[0.3, 0.5],
                      exit_score=[0.0, 0.4, 0.4])
    # ema_fast 50 / 60 are not below ema_slow 50; exit 0.4 is not below entry 0.3
    assert len(grid.combos) == 3
    assert len(grid.skipped) == 3 * 2 * 2 - 3
    reasons = Counter(reason.split(" ")[0] for _, reason in grid.skipped)
    assert reasons == {"ema_fast": 8, "exit_score": 1}
    assert grid.swept == ("ema_fast", "entry_score", "exit_score")  # duplicates dropped
    with pytest.raises(TypeError, match="unknown hyperparameters"):
        build_grid(ema_fats=10)
    with pytest.raises(TypeError, match="whole numbers"):
        build_grid(ema_fast=10.5)
    with pytest.raises(ValueError, match="no valid combination"):
        build_grid(entry_score=0.2, exit_score=0.3)


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_released_defaults_are_trend_events_over_the_feature_matrix(wide: Wide,
                                                                    symbol: str) -> None:
    sig = TrendFactory().run(wide, allow_short=[False, True])
    rows = np.flatnonzero(wide.present(symbol))
    matrix = features(wide, symbol)
    for allow in (False, True):
        at, directions, _ = trend_events(matrix, TREND_V2, TrendParams(allow_short=allow))
        key = (allow, symbol)
        le, se = column(sig, "long_entries", key), column(sig, "short_entries", key)
        lx, sx = column(sig, "long_exits", key), column(sig, "short_exits", key)
        np.testing.assert_array_equal(np.flatnonzero(le), rows[at[directions == LONG]])
        np.testing.assert_array_equal(np.flatnonzero(se), rows[at[directions == SHORT]])
        flat = (lx & ~se) | (sx & ~le)  # an exit that is not also a reversal
        np.testing.assert_array_equal(np.flatnonzero(flat), rows[at[directions == FLAT]])
        assert at.size > 20
    # reversals: a long exit and a short entry on the same row
    key = (True, symbol)
    assert (column(sig, "long_exits", key) & column(sig, "short_entries", key)).any()


def test_each_indicator_window_is_computed_once(wide: Wide,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, float, int]] = []

    def counted(x: Any, period: int) -> np.ndarray:
        calls.append((len(x), float(x[0]), period))  # which series (symbol, 1h or 4h), window
        return ema_batch(x, period)

    monkeypatch.setattr(signals_module, "ema_batch", counted)
    TrendFactory().run(wide, ema_fast=[10, 20], ema_slow=[50, 100], h4_fast=[6, 12],
                       entry_score=[0.25, 0.5, 0.75])
    assert len(calls) == len(set(calls))  # never the same series and window twice
    assert len(calls) == 2 * (4 + 3)  # per symbol: 4 hourly windows, 3 on the 4h closes
    assert {p for n, _, p in calls if n > 2000} == {10, 20, 50, 100}
    assert {p for n, _, p in calls if n < 2000} == {6, 12, 26}


def test_other_windows_feed_the_rules_from_the_library_indicators(wide: Wide) -> None:
    symbol = "ETHUSDT"
    windows = dict(ema_fast=8, ema_slow=34, rsi_window=21, macd_fast=8, macd_slow=21,
                   macd_signal=5, h4_fast=12, h4_slow=26)
    params = TrendParams(allow_short=True, rsi_band=3.0)
    sig = TrendFactory().run(wide.select([symbol]), **windows, allow_short=True, rsi_band=3.0)
    c = wide.close[symbol].to_numpy()
    _, _, hist = macd_batch(c, 8, 21, 5)
    with np.errstate(invalid="ignore"):
        inputs = np.column_stack([ema_batch(c, 8) / ema_batch(c, 34) - 1.0, hist / c,
                                  rsi_batch(c, 21),
                                  features(wide, symbol)[:, TREND_V2.index("h4_ema_ratio")]])
    ready = SymbolIndicators(wide, symbol).base_ready & ~np.isnan(inputs).any(axis=1)
    ready &= ~np.isnan(features(wide, symbol)[:, TREND_V2.index("atr_pct")])
    rules, states = TrendRules(params), []
    for i, row in enumerate(inputs.tolist()):
        if ready[i]:
            rules.update(*row)
        states.append({LONG: 1, SHORT: -1, FLAT: 0}[rules.state])
    np.testing.assert_array_equal(sig.states.iloc[:, 0].to_numpy(), states)


def test_default_inputs_are_the_feature_columns_bit_for_bit(wide: Wide) -> None:
    ind = SymbolIndicators(wide, "BTCUSDT")
    matrix = features(wide, "BTCUSDT")
    windows = build_grid().combos[0].windows
    for name, values in zip(("ema_ratio", "macd_hist_pct", "rsi", "h4_ema_ratio"),
                            ind.inputs(windows), strict=True):
        np.testing.assert_array_equal(values, matrix[:, TREND_V2.index(name)])
    np.testing.assert_array_equal(ind.atr_pct(14), matrix[:, TREND_V2.index("atr_pct")])


@pytest.mark.parametrize("barriers", [Barriers(), Barriers(stop_loss=1.5, take_profit=3.0,
                                                           use_atr=True)])
def test_barriers_are_the_signal_services_prices(wide: Wide, barriers: Barriers) -> None:
    sig = TrendFactory().run(wide, allow_short=True, stop_loss=barriers.stop_loss,
                             take_profit=barriers.take_profit, use_atr=barriers.use_atr)
    atr_pct = features(wide, "BTCUSDT")[:, TREND_V2.index("atr_pct")]
    close = wide.close["BTCUSDT"].to_numpy()
    checked = 0
    for side, frame, sign in ((LONG, sig.long_entries, 1.0), (SHORT, sig.short_entries, -1.0)):
        for i in np.flatnonzero(frame.iloc[:, 0].to_numpy())[:20].tolist():
            text = repr(float(close[i]))
            stop, target = exit_prices(side, text, float(atr_pct[i]), barriers)
            tick = float(Decimal(1).scaleb(Decimal(text).as_tuple().exponent))  # type: ignore[arg-type]
            assert close[i] * (1 - sign * sig.stop_loss.iloc[i, 0]) == \
                pytest.approx(float(stop), abs=tick / 2 + 1e-9)
            assert close[i] * (1 + sign * sig.take_profit.iloc[i, 0]) == \
                pytest.approx(float(target), abs=tick / 2 + 1e-9)
            checked += 1
    assert checked == 40


def test_a_symbols_missing_hours_carry_no_signal() -> None:
    w = load_wide(symbols=("BTCUSDT", "XRPUSDT"), start="2020-04-01", end="2020-07-01")
    sig = TrendFactory().run(w, allow_short=True)
    missing = ~w.present("BTCUSDT")
    assert missing.sum() > 900  # BTC's file starts 2020-05-11
    for name in ("long_entries", "long_exits", "short_entries", "short_exits"):
        assert not getattr(sig, name)["BTCUSDT"].to_numpy()[missing].any()
    # XRP's signals are those of XRP alone: BTC's absence changes nothing for it
    alone = TrendFactory().run(w.select(["XRPUSDT"]), allow_short=True)
    pd.testing.assert_frame_equal(sig.states[["XRPUSDT"]], alone.states[["XRPUSDT"]])


# --------------------------------------------------------------------------- base readiness
#
# `SymbolIndicators.base_ready` skips most of the feature matrix (only the columns that can be
# NaN past their warm-up are computed over all rows): it must be the matrix's own mask.


def matrix_ready(w: Wide, symbol: str) -> np.ndarray:
    """The released technical columns (less the combination's own) all there, per wide row,
    from the whole feature matrix."""
    cols = [TREND_V2.index(c) for c in TREND_V2.columns
            if c not in TREND_V2.context and c not in signals_module._OWN_COLUMNS]
    ready = np.zeros(len(w.index), dtype=bool)
    ready[w.present(symbol)] = ~np.isnan(features(w, symbol)[:, cols]).any(axis=1)
    return ready


def counted_matrix(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of candles of each feature matrix `SymbolIndicators` computes."""
    sizes: list[int] = []

    def counted(open_ms: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        sizes.append(len(open_ms))
        return feature_matrix(open_ms, *args, **kwargs)

    monkeypatch.setattr(signals_module, "feature_matrix", counted)
    return sizes


def test_base_readiness_is_the_feature_matrix_s_on_all_the_data(
        monkeypatch: pytest.MonkeyPatch) -> None:
    full = load_wide()  # the four symbols' whole history: listings, outages, missing hours
    sizes = counted_matrix(monkeypatch)
    for symbol in full.symbols:
        hours = np.diff(full.open_ms[full.present(symbol)]) // 3_600_000
        assert (hours > 1).sum() > 10  # every one misses hours (4h buckets complete late)
        np.testing.assert_array_equal(SymbolIndicators(full, symbol).base_ready,
                                      matrix_ready(full, symbol))
    assert sizes == [signals_module._HEAD_ROWS] * 4  # the shortcut, never the whole matrix


def degenerate() -> Wide:
    """BTC candles with what the warm-up alone does not explain: a flat, volumeless start (no
    true range, so a Keltner band of width 0), a flat day without volume (Donchian range 0,
    no session volume, volume average 0) and missing hours (4h buckets completing later)."""
    w = load_wide(("BTCUSDT",), start="2022-01-01", end="2022-03-01")
    frames = {f: getattr(w, f).copy() for f in ("open", "high", "low", "close", "volume")}
    day = w.index.get_loc(pd.Timestamp("2022-01-21", tz="UTC"))
    for rows, price in ((slice(0, 40), 47_000.0), (slice(day, day + 30), 40_000.0)):
        for f in ("open", "high", "low", "close"):
            frames[f].iloc[rows] = price
        frames["volume"].iloc[rows] = 0.0
    for f in frames:  # an outage and a few lone missing hours
        frames[f].iloc[np.r_[800:830, 901, 955, 1203]] = np.nan
    return Wide(**frames, funding=w.funding, timeframe=w.timeframe)


def test_base_readiness_keeps_the_gaps_the_data_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    w = degenerate()
    expected = matrix_ready(w, "BTCUSDT")
    rows = np.flatnonzero(w.present("BTCUSDT"))
    assert not expected[rows[60:]].all()  # rows past every warm-up that are not ready
    sizes = counted_matrix(monkeypatch)
    np.testing.assert_array_equal(SymbolIndicators(w, "BTCUSDT").base_ready, expected)
    assert sizes == [signals_module._HEAD_ROWS]


def test_base_readiness_falls_back_to_the_whole_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    w = degenerate()
    w.volume.iloc[700, 0] = np.nan  # a candle the shortcut's reasoning does not cover
    sizes = counted_matrix(monkeypatch)
    np.testing.assert_array_equal(SymbolIndicators(w, "BTCUSDT").base_ready,
                                  matrix_ready(w, "BTCUSDT"))
    assert sizes[0] == w.present("BTCUSDT").sum()


# --------------------------------------------------------------------------- indicator cache


def test_an_indicator_cache_serves_later_runs_on_the_same_data(
        wide: Wide, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(x: Any, period: int) -> np.ndarray:
        calls.append(period)
        return ema_batch(x, period)

    fresh = [TrendFactory().run(wide, allow_short=True, entry_score=0.5),
             TrendFactory().run(wide, allow_short=True, entry_score=[0.3, 0.6], stop_loss=0.03)]
    monkeypatch.setattr(signals_module, "ema_batch", counted)
    cache = IndicatorCache()
    first = TrendFactory(cache=cache).run(wide, allow_short=True, entry_score=0.5)
    computed = len(calls)
    assert computed > 0
    again = TrendFactory(cache=cache).run(wide, allow_short=True, entry_score=[0.3, 0.6],
                                          stop_loss=0.03)
    assert len(calls) == computed  # nothing computed again
    for cached, alone in zip((first, again), fresh, strict=True):
        for name in ("states", "long_entries", "short_exits", "stop_loss", "take_profit"):
            pd.testing.assert_frame_equal(getattr(cached, name), getattr(alone, name))
    # the wide-axis copies are not kept between runs, the indicators are
    assert all(not cache.indicators(wide, s)._views for s in wide.symbols)
    # another Wide (even of the same data) starts over
    TrendFactory(cache=cache).run(wide.select(wide.symbols), allow_short=True)
    assert len(calls) == 2 * computed
