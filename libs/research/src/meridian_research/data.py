"""The shared market data as one wide frame: every symbol's candles on one time axis.

Research sweeps run on 2-D arrays (rows = candle open times, one column per symbol), so the
symbols are aligned here once, from the same readers the services use
(`meridian_common.marketdata.csvfiles`, which also checks order and the time grid).

The time axis is the union of the candle open times the symbols have. A symbol without a candle
at a time keeps NaN there (before its listing, in an outage): no price is ever invented, because
a filled-in price would let a simulated order fill, or a stop trigger, on a candle that never
traded. Funding rates are kept per symbol as their own settlement series (8-hourly, only where a
funding file exists): the portfolio decides which candle each settlement is paid on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from meridian_common.marketdata import CsvCandleSource, CsvFundingSource, default_data_dir

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
FIELDS = ("open", "high", "low", "close", "volume")
TimeLike = str | int | datetime | pd.Timestamp | None


@dataclass(frozen=True, slots=True)
class Wide:
    """Aligned OHLCV frames (UTC DatetimeIndex of candle open times, one column per symbol)
    and each symbol's funding settlements (UTC settlement time -> per-interval rate)."""

    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame
    volume: pd.DataFrame
    funding: dict[str, pd.Series] = field(default_factory=dict)
    timeframe: str = "1h"

    def __post_init__(self) -> None:
        for name in FIELDS[1:]:
            frame = getattr(self, name)
            if not frame.index.equals(self.open.index) or list(frame.columns) != self.symbols:
                raise ValueError(f"{name} is not aligned with open (index and columns)")

    @property
    def symbols(self) -> list[str]:
        return [str(c) for c in self.open.columns]

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.open.index  # type: ignore[return-value]

    @property
    def open_ms(self) -> npt.NDArray[np.int64]:
        """Candle open times in epoch ms (what `meridian_common.features` takes)."""
        return to_ms(self.index)

    def present(self, symbol: str) -> npt.NDArray[np.bool_]:
        """Rows at which `symbol` has a candle."""
        return ~np.isnan(self.close[symbol].to_numpy())

    def select(self, symbols: Sequence[str]) -> Wide:
        """The same data for a subset of the symbols (rows no symbol of the subset has are
        dropped, so the axis stays the union of what the subset has)."""
        cols = list(symbols)
        keep = self.close[cols].notna().any(axis=1).to_numpy()
        frames = {name: getattr(self, name).loc[keep, cols] for name in FIELDS}
        funding = {s: r for s, r in self.funding.items() if s in cols}
        return Wide(**frames, funding=funding, timeframe=self.timeframe)


def to_ms(index: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
    """Epoch milliseconds of a UTC DatetimeIndex (any resolution pandas chose)."""
    return np.asarray(index.as_unit("ms").asi8, dtype=np.int64)


def _ms(value: TimeLike) -> int | None:
    """Epoch ms of a time bound; naive times are UTC, integers are epoch ms already."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)  # Timestamp.value is always in ns


def _candles(data_dir: Path, symbol: str, timeframe: str, start_ms: int | None,
             end_ms: int | None) -> pd.DataFrame:
    rows = list(CsvCandleSource(data_dir, symbol, timeframe).rows(start_ms, end_ms))
    times = np.array([r.open_time_ms for r in rows], dtype=np.int64)
    values = np.array([r[1:] for r in rows], dtype=np.float64).reshape(len(rows), len(FIELDS))
    index = pd.DatetimeIndex(pd.to_datetime(times, unit="ms", utc=True), name="time")
    return pd.DataFrame(values, index=index, columns=list(FIELDS))


def _funding(data_dir: Path, symbol: str, start_ms: int | None,
             end_ms: int | None) -> pd.Series | None:
    source = CsvFundingSource(data_dir, symbol)
    if not source.exists():
        return None
    rows = list(source.rows(start_ms, end_ms))
    times = np.array([t for t, _ in rows], dtype=np.int64)
    rates = np.array([float(r) for _, r in rows], dtype=np.float64)
    index = pd.DatetimeIndex(pd.to_datetime(times, unit="ms", utc=True), name="time")
    return pd.Series(rates, index=index, name=symbol)


def load_wide(symbols: Sequence[str] = DEFAULT_SYMBOLS, start: TimeLike = None,
              end: TimeLike = None, data_dir: str | Path | None = None,
              timeframe: str = "1h") -> Wide:
    """Candles with start <= open time < end for each symbol, aligned on the union of their open
    times, and the funding settlements from `start` up to the last candle's close.

    start/end: anything `pandas.Timestamp` reads (naive = UTC) or epoch ms; None = all data.
    """
    if not symbols:
        raise ValueError("load_wide needs at least one symbol")
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"symbols repeat: {list(symbols)}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    start_ms, end_ms = _ms(start), _ms(end)
    per_symbol = {s: _candles(root, s, timeframe, start_ms, end_ms) for s in symbols}
    empty = [s for s, frame in per_symbol.items() if frame.empty]
    if empty:
        raise ValueError(f"no {timeframe} candles for {empty} between {start} and {end}")
    index = per_symbol[symbols[0]].index
    for frame in per_symbol.values():
        index = index.union(frame.index)
    frames = {name: pd.DataFrame({s: per_symbol[s][name].reindex(index) for s in symbols},
                                 index=index)
              for name in FIELDS}
    step_ms = int(pd.Timedelta(timeframe).total_seconds() * 1000)
    last_close_ms = int(to_ms(index)[-1]) + step_ms
    funding = {}
    for s in symbols:
        rates = _funding(root, s, start_ms, last_close_ms)
        if rates is not None and not rates.empty:
            funding[s] = rates
    return Wide(**frames, funding=funding, timeframe=timeframe)
