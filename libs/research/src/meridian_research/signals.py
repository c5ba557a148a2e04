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
  with the released windows the rows decided are exactly `trend_events`' rows;
- rules: `meridian_common.strategy.trend.trend_states`, the batch form of `TrendRules`
  (bit-identical states), one loop over time across all columns of a chunk;
- barriers: as `meridian_signals.meta_model.exit_prices`: a fraction of the entry signal's
  close, or with `use_atr` that many ATRs (ATR = atr_pct x close, i.e. a fraction
  atr_pct x multiple of the close). The service rounds the stop and target prices to the close's
  decimals; here they stay unrounded (at most half a price tick apart).

A signal is known at its candle's close; the portfolio fills it at the next open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from meridian_common.features import TREND_V2, feature_matrix
from meridian_common.features.batch import h4_completion
from meridian_common.indicators import atr_batch, ema_batch, macd_batch, rsi_batch
from meridian_common.marketdata import timeframe_ms
from meridian_common.strategy.trend import INPUTS, trend_states
from meridian_research.data import Wide
from meridian_research.grid import NAMES, Combo, Windows, build_grid, columns

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
# Columns of TREND_V2 whose readiness depends on the combination, not on the released set.
_OWN_COLUMNS = (*INPUTS, "atr_pct")
# Rough bytes of working memory per (row, column) while a chunk's states are computed: four
# float inputs, the score, the readiness and four decision masks, the int8 states.
_BYTES_PER_CELL = 64


def _ratio(a: Array, b: Array) -> Array:
    """a / b - 1 (NaN where b is 0): the feature set's ratio columns, operation for operation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0.0, np.nan, a / b - 1.0)


class SymbolIndicators:
    """One symbol's candles (its own rows only) and its indicators, each window computed once;
    values come back on the wide axis (NaN where the symbol has no candle)."""

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
        self._h4: dict[tuple[str], tuple[Array, npt.NDArray[np.intp]]] = {}
        self.base_ready = self._base_ready()

    def _wide(self, compact: Array) -> Array:
        out = np.full(self.size, np.nan)
        out[self.rows] = compact
        return out

    def _base_ready(self) -> Mask:
        """The released feature set's readiness, without the columns a combination brings."""
        matrix = feature_matrix(self.open_ms, self.high, self.low, self.close, self.volume,
                                timeframe_ms=self.tf_ms)
        spec = TREND_V2
        cols = [spec.index(c) for c in spec.columns
                if c not in spec.context and c not in _OWN_COLUMNS]
        ready = np.zeros(self.size, dtype=bool)
        ready[self.rows] = ~np.isnan(matrix[:, cols]).any(axis=1)
        return ready

    def _memo(self, key: tuple[Any, ...], compute: Any) -> Array:
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = compute()
        return value

    def ema(self, period: int) -> Array:
        return self._memo(("ema", period), lambda: ema_batch(self.close, period))

    def ema_ratio(self, fast: int, slow: int) -> Array:
        return self._memo(("ema_ratio", fast, slow),
                          lambda: self._wide(_ratio(self.ema(fast), self.ema(slow))))

    def rsi(self, period: int) -> Array:
        return self._memo(("rsi", period), lambda: self._wide(rsi_batch(self.close, period)))

    def macd_hist_pct(self, fast: int, slow: int, signal: int) -> Array:
        def compute() -> Array:
            _, _, hist = macd_batch(self.close, fast, slow, signal)
            return self._wide(hist / self.close)
        return self._memo(("macd", fast, slow, signal), compute)

    def atr_pct(self, period: int) -> Array:
        return self._memo(("atr", period), lambda: self._wide(
            atr_batch(self.high, self.low, self.close, period) / self.close))

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
            return self._wide(compact)
        return self._memo(("h4", fast, slow), compute)

    def inputs(self, w: Windows) -> tuple[Array, Array, Array, Array]:
        """The rule inputs in `INPUTS` order for one set of windows."""
        return (self.ema_ratio(w.ema_fast, w.ema_slow),
                self.macd_hist_pct(w.macd_fast, w.macd_slow, w.macd_signal),
                self.rsi(w.rsi_window), self.h4_ema_ratio(w.h4_fast, w.h4_slow))

    def ready(self, w: Windows) -> Mask:
        own = [*self.inputs(w), self.atr_pct(w.atr_window)]
        return self.base_ready & ~np.isnan(np.column_stack(own)).any(axis=1)


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


def _transitions(states: npt.NDArray[np.int8], side: int) -> tuple[Mask, Mask]:
    """(entries, exits) of one side: the rows where the state becomes / stops being `side`."""
    now = states == side
    before = np.zeros_like(now)
    before[1:] = now[:-1]
    return now & ~before, before & ~now


class TrendFactory:
    """Signals of the released trend rules over a hyperparameter grid (module docstring)."""

    def __init__(self, memory_bytes: int = 512 * 2**20) -> None:
        self.memory_bytes = memory_bytes  # working memory of one chunk of columns

    def run(self, wide: Wide, **hyperparams: Any) -> TrendSignals:
        """Every combination of `hyperparams` (grid.NAMES; scalars or lists) x every symbol of
        `wide`, in one pass."""
        grid = build_grid(**hyperparams)
        symbols = wide.symbols
        cols = columns(grid, symbols)
        cells = [(combo, s) for combo in grid.combos for s in symbols]
        per_symbol = {s: SymbolIndicators(wide, s) for s in symbols}
        n = len(wide.index)
        states = np.empty((n, len(cells)), dtype=np.int8)
        for part in _chunks(len(cells), n, self.memory_bytes):
            chunk = cells[part]
            inputs = [np.column_stack(x) for x in zip(
                *(per_symbol[s].inputs(c.windows) for c, s in chunk), strict=True)]
            ready = np.column_stack([per_symbol[s].ready(c.windows) for c, s in chunk])
            states[:, part] = trend_states(*inputs, [c.rules for c, _ in chunk], ready=ready)
        long_in, long_out = _transitions(states, 1)
        short_in, short_out = _transitions(states, -1)
        stop, target = self._barriers(cells, per_symbol, long_in | short_in)

        def frame(values: npt.NDArray[Any]) -> pd.DataFrame:
            return pd.DataFrame(values, index=wide.index, columns=cols)

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
