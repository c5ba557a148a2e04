"""The trend strategy's signals for a whole hyperparameter grid over many symbols in one pass.

`TrendFactory.run(wide, **hyperparams)` (each hyperparameter a scalar or a list, see `grid`)
gives, for every combination x symbol column, the rows where the released rules enter and leave
a long or a short, and the stop-loss / take-profit distance each entry carries. It is built
only from the library the services run, so a sweep's entries are the live entries:

- indicators: `meridian_common.indicators` batch forms (TA-Lib warm-up), each distinct window
  computed once per symbol (`SymbolIndicators` caches by window), on the symbol's own candles
  (its missing hours skipped, as the features service never sees them); the 4h confirmation
  uses only completed 4h buckets (`features.batch.h4_completion`), as the features service;
- readiness: a row is decided only when the released feature set's technical columns are all
  there (what the service's `Features.ready` says) and the combination's own inputs are, so
  with the released windows the rows decided are exactly `trend_events`' rows. The released
  columns' readiness is found without computing the whole feature matrix (`_base_ready`);
- reuse: an `IndicatorCache` given to `TrendFactory` keeps each symbol's indicators between runs
  on the same `Wide` (an optimizer asks for one combination per trial on the same data);
- rules: `meridian_common.strategy.trend.trend_states`, the batch form of `TrendRules`
  (bit-identical states), all the columns of a chunk at once;
- barriers: as `meridian_signals.meta_model.exit_prices`: a fraction of the entry signal's
  close, or with `use_atr` that many ATRs (ATR = atr_pct x close, i.e. a fraction
  atr_pct x multiple of the close). The service rounds the stop and target prices to the close's
  decimals; here they stay unrounded (at most half a price tick apart).

A signal is known at its candle's close; the portfolio fills it at the next open.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from meridian_common.features import TREND_V2, feature_matrix
from meridian_common.features.batch import h4_completion
from meridian_common.indicators import (
    atr_batch,
    donchian_batch,
    ema_batch,
    keltner_batch,
    macd_batch,
    rsi_batch,
    sma_batch,
    vwap_batch,
)
from meridian_common.marketdata import timeframe_ms
from meridian_common.strategy.trend import INPUTS, trend_states
from meridian_research.data import Wide
from meridian_research.grid import NAMES, Combo, Windows, build_grid, columns

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
# Columns of TREND_V2 whose readiness depends on the combination, not on the released set.
_OWN_COLUMNS = (*INPUTS, "atr_pct")
# Rough bytes of working memory per (row, column) while a chunk's states are computed: four
# float inputs, the readiness, a few bytes of vote cases and decision keys, the int8 states.
_BYTES_PER_CELL = 64
# The released columns of the base readiness (TREND_V2 without its context and the columns a
# combination brings), by where their NaNs can be, for finite candles with positive prices and
# volumes >= 0 (`_base_ready` checks that, and that these two cover the columns):
# - only in a warm-up run at the start: past it their batch forms give finite values (0 where
#   a ratio has nothing to divide by), and as they are causal the run is as long on the
#   symbol's first `_HEAD_ROWS` candles as on all of them;
# - anywhere, from the data: a range flat over the Donchian window, a Keltner band of width 0,
#   a session with no volume yet (VWAP), a day with no volume (volume ratio), and the 4h RSI
#   whose warm-up is in completed 4h buckets (so it moves with the symbol's missing hours).
_WARMUP_ONLY = frozenset({"adx", "di_diff", "roc", "cci", "bb_width", "stoch_k", "stoch_d",
                          "zscore", "rvol", "mfi", "ret_1", "ret_4", "ret_24", "hour", "dow"})
_FROM_DATA = frozenset({"donchian_pos", "keltner_pos", "vwap_dist", "vol_ratio", "h4_rsi"})
_HEAD_ROWS = 512


def _ratio(a: Array, b: Array) -> Array:
    """a / b - 1 (NaN where b is 0): the feature set's ratio columns, operation for operation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0.0, np.nan, a / b - 1.0)


def _position(x: Array, lower: Array, upper: Array) -> Array:
    """Where x is in [lower, upper] (NaN for a band of width 0): the feature set's position
    columns, operation for operation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(upper == lower, np.nan, (x - lower) / (upper - lower))


def _sane(*series: Array) -> bool:
    """Candles `_WARMUP_ONLY` holds for: finite, prices (high, low, close) positive, volume
    (the last series) >= 0, all below 1e100 so that no square or product of two overflows."""
    *prices, volume = series
    return bool(all(np.all((p > 0.0) & (p < 1e100)) for p in prices)
                and np.all((volume >= 0.0) & (volume < 1e100)))


class SymbolIndicators:
    """One symbol's candles (its own rows only) and its indicators, each window computed once;
    values come back on the wide axis (NaN where the symbol has no candle).

    The indicators themselves (on the symbol's own rows) are kept for the object's life; their
    wide-axis copies only until `release_views`, so that an object kept across many runs
    (`IndicatorCache`) holds one array per window, not one per pair of windows."""

    def __init__(self, wide: Wide, symbol: str) -> None:
        present = wide.present(symbol)
        self.rows = np.flatnonzero(present)
        self.size = present.size
        self.open_ms = wide.open_ms[self.rows]
        self.high, self.low, self.close, self.volume = (
            getattr(wide, f)[symbol].to_numpy(dtype=np.float64)[self.rows]
            for f in ("high", "low", "close", "volume"))
        self.tf_ms = timeframe_ms(wide.timeframe)
        self._cache: dict[tuple[Any, ...], Array] = {}
        self._views: dict[tuple[Any, ...], npt.NDArray[Any]] = {}
        self._h4: dict[tuple[str], tuple[Array, npt.NDArray[np.intp]]] = {}
        self.base_ready = self._base_ready()

    def _wide(self, compact: Array) -> Array:
        out = np.full(self.size, np.nan)
        out[self.rows] = compact
        return out

    def _base_ready(self) -> Mask:
        """The released feature set's readiness, without the columns a combination brings: the
        rows where none of its other technical columns is NaN, as `feature_matrix` has them.

        Only the columns that can be NaN past their warm-up are computed over all the rows
        (`_FROM_DATA`); the others' warm-up is read off the feature matrix of the first
        `_HEAD_ROWS` candles. That is a tenth of the work of the whole matrix, and the whole
        matrix is still used whenever those shortcuts are not known to hold (short history,
        candles outside `_sane`, a feature set with other columns)."""
        spec = TREND_V2
        cols = [c for c in spec.columns if c not in spec.context and c not in _OWN_COLUMNS]
        ready = np.zeros(self.size, dtype=bool)
        shortcut = (set(cols) == _WARMUP_ONLY | _FROM_DATA and self.rows.size > _HEAD_ROWS
                    and _sane(self.high, self.low, self.close, self.volume))
        warmup = self._warmup([spec.index(c) for c in cols if c in _WARMUP_ONLY]) \
            if shortcut else None
        if warmup is None:
            matrix = self._features(self.rows.size)
            ready[self.rows] = ~np.isnan(matrix[:, [spec.index(c) for c in cols]]).any(axis=1)
            return ready
        compact = ~self._missing_from_data()
        compact[:warmup] = False
        ready[self.rows] = compact
        return ready

    def _features(self, n: int) -> Array:
        """The released feature matrix of the symbol's first n candles."""
        return feature_matrix(self.open_ms[:n], self.high[:n], self.low[:n], self.close[:n],
                              self.volume[:n], timeframe_ms=self.tf_ms)

    def _warmup(self, cols: list[int]) -> int | None:
        """Rows of warm-up of the matrix columns `cols` (the longest leading run of NaN) on the
        first `_HEAD_ROWS` candles; None if one of them is NaN anywhere else there, or
        throughout (then its warm-up is not known from these rows)."""
        missing = np.isnan(self._features(_HEAD_ROWS)[:, cols])
        lead = missing.argmin(axis=0)
        if missing.all(axis=0).any() or (missing.sum(axis=0) != lead).any():
            return None
        return int(lead.max(initial=0))

    def _missing_from_data(self) -> Mask:
        """Per candle, whether a `_FROM_DATA` column is NaN, each from the same batch form and
        arithmetic as `feature_matrix`."""
        p = TREND_V2.params
        h, lo, c, v = self.high, self.low, self.close, self.volume
        dc_up, _, dc_lo = donchian_batch(h, lo, p["donchian"])
        kc_up, _, kc_lo = keltner_batch(h, lo, c, *p["keltner"])
        vol_sma = sma_batch(v, p["vol_ratio"])
        with np.errstate(divide="ignore", invalid="ignore"):
            vol_ratio = np.where(vol_sma == 0.0, np.nan, v / vol_sma)
        h4_close, done = self._h4_buckets()
        h4_rsi = np.full(c.size, np.nan)
        seen = done > 0
        h4_rsi[seen] = rsi_batch(h4_close, int(p["h4_rsi"]))[done[seen] - 1]
        missing = np.isnan(_position(c, dc_lo, dc_up)) | np.isnan(_position(c, kc_lo, kc_up))
        missing |= np.isnan(_ratio(c, vwap_batch(self.open_ms, h, lo, c, v)))
        missing |= np.isnan(vol_ratio) | np.isnan(h4_rsi)
        return missing

    def _memo(self, key: tuple[Any, ...], compute: Any) -> Array:
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = compute()
        return value

    def _view(self, key: tuple[Any, ...], compact: Any) -> Array:
        """A wide-axis copy of compact(), kept until `release_views`."""
        value = self._views.get(key)
        if value is None:
            value = self._views[key] = self._wide(compact())
        return value

    def release_views(self) -> None:
        """Drop the wide-axis copies (the indicators they came from stay)."""
        self._views.clear()

    def ema(self, period: int) -> Array:
        return self._memo(("ema", period), lambda: ema_batch(self.close, period))

    def ema_ratio(self, fast: int, slow: int) -> Array:
        return self._view(("ema_ratio", fast, slow),
                          lambda: _ratio(self.ema(fast), self.ema(slow)))

    def rsi(self, period: int) -> Array:
        return self._view(("rsi", period), lambda: self._memo(
            ("rsi", period), lambda: rsi_batch(self.close, period)))

    def macd_hist_pct(self, fast: int, slow: int, signal: int) -> Array:
        def compute() -> Array:
            _, _, hist = macd_batch(self.close, fast, slow, signal)
            return hist / self.close  # type: ignore[no-any-return]
        key = ("macd", fast, slow, signal)
        return self._view(key, lambda: self._memo(key, compute))

    def atr_pct(self, period: int) -> Array:
        return self._view(("atr", period), lambda: self._memo(("atr", period), lambda: atr_batch(
            self.high, self.low, self.close, period) / self.close))

    def _h4_buckets(self) -> tuple[Array, npt.NDArray[np.intp]]:
        """Closes of the completed 4h buckets and, per row, how many are complete by then."""
        key = ("h4_buckets",)
        if key not in self._h4:
            close_rows, completes_at = h4_completion(self.open_ms, self.tf_ms,
                                                     int(TREND_V2.params["bucket_ms"]))
            done = np.searchsorted(completes_at, np.arange(self.rows.size), side="right")
            self._h4[key] = (self.close[close_rows], done)
        return self._h4[key]

    def h4_ema(self, period: int) -> Array:
        """EMA of the completed 4h closes (one value per bucket)."""
        return self._memo(("h4_ema", period), lambda: ema_batch(self._h4_buckets()[0], period))

    def h4_ema_ratio(self, fast: int, slow: int) -> Array:
        def compute() -> Array:
            _, done = self._h4_buckets()
            ratio = _ratio(self.h4_ema(fast), self.h4_ema(slow))
            compact = np.full(self.rows.size, np.nan)
            seen = done > 0
            compact[seen] = ratio[done[seen] - 1]
            return compact
        return self._view(("h4", fast, slow), compute)

    def inputs(self, w: Windows) -> tuple[Array, Array, Array, Array]:
        """The rule inputs in `INPUTS` order for one set of windows."""
        return (self.ema_ratio(w.ema_fast, w.ema_slow),
                self.macd_hist_pct(w.macd_fast, w.macd_slow, w.macd_signal),
                self.rsi(w.rsi_window), self.h4_ema_ratio(w.h4_fast, w.h4_slow))

    def ready(self, w: Windows) -> Mask:
        """The base readiness and the combination's own inputs (and ATR) all there."""
        def compute() -> Mask:
            out = self.base_ready.copy()
            for values in (*self.inputs(w), self.atr_pct(w.atr_window)):
                out &= ~np.isnan(values)
            return out
        key = ("ready", w)
        found = self._views.get(key)
        if found is None:
            found = self._views[key] = compute()
        return found


class IndicatorCache:
    """Each symbol's `SymbolIndicators` of one `Wide`, kept between `TrendFactory.run` calls on
    it: a study's trials ask for one combination at a time on the same data, and after the
    first each finds its indicators computed. Keyed on the Wide object itself (held, so its
    identity is not reused); another Wide starts over. Safe to share between threads: a race
    at worst computes an indicator twice."""

    def __init__(self) -> None:
        self._wide: Wide | None = None
        self._symbols: dict[str, SymbolIndicators] = {}
        self._lock = threading.Lock()

    def indicators(self, wide: Wide, symbol: str) -> SymbolIndicators:
        with self._lock:
            if wide is not self._wide:
                self._wide, self._symbols = wide, {}
            found = self._symbols.get(symbol)
        if found is None:
            found = SymbolIndicators(wide, symbol)
            with self._lock:
                if wide is self._wide:
                    found = self._symbols.setdefault(symbol, found)
        return found


@dataclass(frozen=True, slots=True)
class TrendSignals:
    """Boolean signal frames (rows = the wide axis, columns = (swept hyperparameters...,
    symbol)) known at each row's close, and the barriers of each entry.

    stop_loss / take_profit: at entry rows, the distance of the stop / target from the entry
    signal's close as a fraction of that close; NaN elsewhere.
    states: the rules' position after each row (+1 long, -1 short, 0 flat).
    params: one row per column with every hyperparameter (swept or not) and the symbol.
    skipped: the grid's refused combinations with the reason.
    """

    long_entries: pd.DataFrame
    long_exits: pd.DataFrame
    short_entries: pd.DataFrame
    short_exits: pd.DataFrame
    stop_loss: pd.DataFrame
    take_profit: pd.DataFrame
    states: pd.DataFrame
    params: pd.DataFrame
    skipped: list[tuple[dict[str, Any], str]]

    @property
    def columns(self) -> pd.MultiIndex:
        return self.long_entries.columns  # type: ignore[return-value]

    @property
    def symbols(self) -> list[str]:
        """The symbol of each column."""
        return [str(s) for s in self.columns.get_level_values("symbol")]

    @property
    def combo_levels(self) -> list[str]:
        """The column levels naming a combination (all but the symbol)."""
        return [str(n) for n in self.columns.names[:-1]]


def _chunks(n_cols: int, n_rows: int, memory_bytes: int) -> list[slice]:
    width = max(1, min(n_cols, memory_bytes // max(1, n_rows * _BYTES_PER_CELL)))
    return [slice(i, min(i + width, n_cols)) for i in range(0, n_cols, width)]


def _by_column(columns: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """The columns side by side as a (rows, columns) array laid out column after column
    (Fortran order): each column is one contiguous copy, and it is the order `trend_states`
    walks the columns in."""
    return np.array(columns).T


def _transitions(states: npt.NDArray[np.int8], side: int) -> tuple[Mask, Mask]:
    """(entries, exits) of one side: the rows where the state becomes / stops being `side`."""
    now = states == side
    before = np.zeros_like(now)
    before[1:] = now[:-1]
    return now & ~before, before & ~now


class TrendFactory:
    """Signals of the released trend rules over a hyperparameter grid (module docstring)."""

    def __init__(self, memory_bytes: int = 512 * 2**20,
                 cache: IndicatorCache | None = None) -> None:
        self.memory_bytes = memory_bytes  # working memory of one chunk of columns
        self.cache = cache  # indicators kept between runs (None: computed for each run)

    def run(self, wide: Wide, **hyperparams: Any) -> TrendSignals:
        """Every combination of `hyperparams` (grid.NAMES; scalars or lists) x every symbol of
        `wide`, in one pass."""
        grid = build_grid(**hyperparams)
        symbols = wide.symbols
        cols = columns(grid, symbols)
        cells = [(combo, s) for combo in grid.combos for s in symbols]
        per_symbol = {s: SymbolIndicators(wide, s) if self.cache is None else
                      self.cache.indicators(wide, s) for s in symbols}
        n = len(wide.index)
        states = np.empty((n, len(cells)), dtype=np.int8)
        for part in _chunks(len(cells), n, self.memory_bytes):
            chunk = cells[part]
            per_cell = [per_symbol[s].inputs(c.windows) for c, s in chunk]
            inputs = [_by_column([x[k] for x in per_cell]) for k in range(len(INPUTS))]
            ready = _by_column([per_symbol[s].ready(c.windows) for c, s in chunk])
            states[:, part] = trend_states(*inputs, [c.rules for c, _ in chunk], ready=ready)
        long_in, long_out = _transitions(states, 1)
        short_in, short_out = _transitions(states, -1)
        stop, target = self._barriers(cells, per_symbol, long_in | short_in)
        if self.cache is not None:
            for ind in per_symbol.values():
                ind.release_views()

        def frame(values: npt.NDArray[Any]) -> pd.DataFrame:
            # each array is new and only this frame's: wrapped, not copied (pandas would copy
            # it into its own column-major layout, 40 ms for 52,915 x 72 floats)
            return pd.DataFrame(values, index=wide.index, columns=cols, copy=False)

        params = pd.DataFrame([{**{k: c.values[k] for k in NAMES}, "symbol": s}
                               for c, s in cells], index=cols)
        return TrendSignals(frame(long_in), frame(long_out), frame(short_in), frame(short_out),
                            frame(stop), frame(target), frame(states), params, grid.skipped)

    @staticmethod
    def _barriers(cells: list[tuple[Combo, str]], per_symbol: dict[str, SymbolIndicators],
                  entries: Mask) -> tuple[Array, Array]:
        """Stop and target distances (fractions of the close) at the entry rows."""
        stop = np.full(entries.shape, np.nan)
        target = np.full(entries.shape, np.nan)
        for j, (combo, symbol) in enumerate(cells):
            rows = np.flatnonzero(entries[:, j])
            if rows.size == 0:
                continue
            b = combo.barriers
            unit = per_symbol[symbol].atr_pct(combo.windows.atr_window)[rows] if b.use_atr \
                else 1.0
            stop[rows, j] = b.stop_loss * unit
            target[rows, j] = b.take_profit * unit
        return stop, target
