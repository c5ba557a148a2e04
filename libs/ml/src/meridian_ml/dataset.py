"""The meta-labelling dataset: one row per primary entry, features as of its decision.

For each symbol: the feature set's batch form over its candles (BTC's return joined as the
cross-asset input, funding as of each close where a funding history exists), the primary rules'
entries over those rows (`trend_events`, the code the signals service runs), and a triple-barrier
label per entry (`meridian_common.labels`). The meta-model sees the feature row plus the
primary vote (direction, strength) and learns whether the trade would have paid.

Times: t0 is the decision candle's close (when the features became known); t1 is the exit
candle's close (the end of what the label looked at), both in ms, for purging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meridian.v1 import common_pb2
from meridian_common.features import FeatureSet, aligned_returns, feature_matrix, funding_asof
from meridian_common.fills import PaperFillModel
from meridian_common.indicators import atr_batch
from meridian_common.labels import NO_LABEL, Barriers, triple_barrier
from meridian_common.marketdata import CsvCandleSource, CsvFundingSource, RawCandle
from meridian_common.strategy import TrendParams, trend_events

EXTRA_COLUMNS = ("direction", "strength")  # the primary vote, appended to the feature row


@dataclass(frozen=True, slots=True)
class Candles:
    """One symbol's candles as arrays (ascending open time)."""

    symbol: str
    open_ms: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]
    timeframe_ms: int = 3_600_000

    @classmethod
    def from_rows(cls, symbol: str, rows: Iterable[RawCandle],
                  timeframe_ms: int = 3_600_000) -> Candles:
        cols = list(zip(*[(r.open_time_ms, float(r.open), float(r.high), float(r.low),
                           float(r.close), float(r.volume)) for r in rows], strict=True))
        if not cols:
            raise ValueError(f"{symbol}: no candles in the requested range")
        t, o, h, lo, c, v = cols
        return cls(symbol, np.array(t, dtype=np.int64), *(np.array(x) for x in (o, h, lo, c, v)),
                   timeframe_ms=timeframe_ms)


@dataclass(frozen=True, slots=True)
class Events:
    """Labelled primary entries of all symbols, ordered by decision time then symbol."""

    columns: tuple[str, ...]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    t0: npt.NDArray[np.int64]
    t1: npt.NDArray[np.int64]
    net_return: npt.NDArray[np.float64]
    direction: npt.NDArray[np.int64]
    symbol: npt.NDArray[np.str_]

    def __len__(self) -> int:
        return int(self.y.size)

    def take(self, idx: npt.NDArray[np.int64]) -> Events:
        return Events(self.columns, self.x[idx], self.y[idx], self.t0[idx], self.t1[idx],
                      self.net_return[idx], self.direction[idx], self.symbol[idx])


def load_csv(data_dir: object, symbols: Iterable[str], start_ms: int | None,
             end_ms: int | None) -> dict[str, Candles]:
    return {s: Candles.from_rows(s, CsvCandleSource(data_dir, s, "1h").rows(start_ms, end_ms))
            for s in symbols}  # type: ignore[arg-type]


def csv_funding(data_dir: object) -> Callable[[str], tuple[np.ndarray, np.ndarray] | None]:
    def funding(symbol: str) -> tuple[np.ndarray, np.ndarray] | None:
        source = CsvFundingSource(data_dir, symbol)  # type: ignore[arg-type]
        if not source.exists():
            return None
        rows = list(source.rows())
        return (np.array([t for t, _ in rows], dtype=np.int64),
                np.array([float(r) for _, r in rows]))
    return funding


def build_events(candles: dict[str, Candles], spec: FeatureSet, params: TrendParams,
                 barriers: Barriers, fills: PaperFillModel,
                 funding: Callable[[str], tuple[np.ndarray, np.ndarray] | None] | None = None,
                 ) -> Events:
    reference = candles.get(spec.params["cross_symbol"])
    parts = []
    for symbol, cs in candles.items():
        close_ms = cs.open_ms + cs.timeframe_ms
        settled = funding(symbol) if funding else None
        matrix = feature_matrix(
            cs.open_ms, cs.high, cs.low, cs.close, cs.volume, spec=spec,
            timeframe_ms=cs.timeframe_ms,
            funding_last=funding_asof(close_ms, *settled) if settled else None,
            btc_ret_1=(aligned_returns(cs.open_ms, reference.open_ms, reference.close)
                       if reference is not None else None))
        rows, directions, strengths = trend_events(matrix, spec, params)
        entry = directions != common_pb2.DIRECTION_FLAT
        rows, directions, strengths = rows[entry], directions[entry], strengths[entry]
        atr = atr_batch(cs.high, cs.low, cs.close, spec.params["atr"])
        labels = triple_barrier(rows, directions, cs.open, cs.high, cs.low, cs.close, atr,
                                barriers, fills)
        ok = labels.label != NO_LABEL
        rows, directions, strengths = rows[ok], directions[ok], strengths[ok]
        sign = np.where(directions == common_pb2.DIRECTION_LONG, 1.0, -1.0)
        x = np.column_stack([matrix[rows], sign, strengths]).astype(np.float32)
        parts.append((close_ms[rows], close_ms[labels.exit_row[ok]], x, labels.label[ok],
                      labels.net_return[ok], directions, np.full(rows.size, symbol)))
    t0 = np.concatenate([p[0] for p in parts])
    sym = np.concatenate([p[6] for p in parts])
    order = np.lexsort((sym, t0))
    columns = (*spec.columns, *EXTRA_COLUMNS)
    return Events(columns,
                  np.concatenate([p[2] for p in parts]).reshape(-1, len(columns))[order],
                  np.concatenate([p[3] for p in parts])[order], t0[order],
                  np.concatenate([p[1] for p in parts])[order],
                  np.concatenate([p[4] for p in parts])[order],
                  np.concatenate([p[5] for p in parts])[order], sym[order])
