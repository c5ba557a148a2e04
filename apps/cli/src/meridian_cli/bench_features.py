"""`meridian bench` feature figures: rows per second per core for the full feature set.

- incremental: FeatureState.update once per candle (the streaming service's work);
- batch: feature_matrix over whole arrays (research and training);
- the baseline for incremental: recomputing each new row from scratch over the trailing window
  it needs (what a service without incremental state would do), measured on a sample of rows.

The figures count only if the incremental and batch matrices agree (the fingerprint: identical
missing positions and values within 1e-12 relative); a faster wrong answer does not count.
"""

from __future__ import annotations

import time

import numpy as np

from meridian_common.features import TREND_V2, FeatureState, feature_matrix
from meridian_common.marketdata import CsvCandleSource, default_data_dir

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
# Rows of history a row needs: the slowest indicators are 4h EMA(26)/RSI(14) and ADX(14) with
# Wilder smoothing; 1000 hourly candles make every column warm (and Wilder's seed effects small).
WINDOW = 1000


def _arrays(symbol: str) -> tuple[np.ndarray, ...]:
    rows = list(CsvCandleSource(default_data_dir(), symbol, "1h").rows())
    t = np.array([r.open_time_ms for r in rows], dtype=np.int64)
    h, lo, c, v = (np.array([float(getattr(r, f)) for r in rows])
                   for f in ("high", "low", "close", "volume"))
    return t, h, lo, c, v


def _agree(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    ok = ~np.isnan(a)
    return bool(np.all(np.abs(a[ok] - b[ok]) <= 1e-12 * np.maximum(np.abs(b[ok]), 1e-9)))


def main() -> int:
    data = {s: _arrays(s) for s in SYMBOLS}
    rows = sum(d[0].size for d in data.values())
    started = time.perf_counter()
    streamed = {}
    for s, (t, h, lo, c, v) in data.items():
        state = FeatureState()
        streamed[s] = np.array([state.update(ti, hi, li, ci, vi) for ti, hi, li, ci, vi in zip(
            t.tolist(), h.tolist(), lo.tolist(), c.tolist(), v.tolist(), strict=True)])
    incremental_s = time.perf_counter() - started
    started = time.perf_counter()
    batch = {s: feature_matrix(*d) for s, d in data.items()}
    batch_s = time.perf_counter() - started
    if not all(_agree(streamed[s], batch[s]) for s in SYMBOLS):
        print("FEATURE FINGERPRINT MISMATCH: incremental != batch; figures do not count")
        return 1
    t, h, lo, c, v = data["BTCUSDT"]
    sample = range(WINDOW, t.size, max(1, (t.size - WINDOW) // 200))
    started = time.perf_counter()
    for i in sample:
        feature_matrix(t[i - WINDOW:i + 1], h[i - WINDOW:i + 1], lo[i - WINDOW:i + 1],
                       c[i - WINDOW:i + 1], v[i - WINDOW:i + 1])[-1]
    scratch_per_row = (time.perf_counter() - started) / len(sample)
    inc_per_row = incremental_s / rows
    print(f"\nfeatures {TREND_V2.name}@{TREND_V2.version} ({len(TREND_V2.columns)} columns), "
          f"4 symbols, {rows:,} rows, one core (incremental == batch checked)")
    print(f"{'':<40}{'rows/s':>12}{'vs from scratch':>17}")
    print(f"{'from scratch per row (window ' + str(WINDOW) + ')':<40}{1 / scratch_per_row:>12,.0f}"
          f"{1:>16.1f}x")
    print(f"{'incremental (FeatureState.update)':<40}{1 / inc_per_row:>12,.0f}"
          f"{scratch_per_row / inc_per_row:>16.1f}x")
    print(f"{'batch (feature_matrix over arrays)':<40}{rows / batch_s:>12,.0f}"
          f"{scratch_per_row * rows / batch_s:>16.1f}x")
    return 0
