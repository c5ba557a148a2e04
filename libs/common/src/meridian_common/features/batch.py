"""The batch form of a feature set: whole arrays in, a (rows x columns) matrix out.

Built from the indicators' batch forms (independent of the streaming classes) under the rules
stated in `streaming.py`; `test_feature_sets.py` proves the two forms give the same rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from meridian_common.features.spec import TREND_V2, FeatureSet
from meridian_common.indicators import (
    adx_batch,
    atr_batch,
    bbands_batch,
    cci_batch,
    donchian_batch,
    ema_batch,
    keltner_batch,
    macd_batch,
    mfi_batch,
    realized_vol_batch,
    roc_batch,
    rsi_batch,
    sma_batch,
    stoch_batch,
    vwap_batch,
    zscore_batch,
)
from meridian_common.indicators.ring import log_returns

Array = npt.NDArray[np.float64]


def _ratio(a: Array, b: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0.0, np.nan, a / b - 1.0)


def _position(x: Array, lower: Array, upper: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(upper == lower, np.nan, (x - lower) / (upper - lower))


def h4_completion(open_ms: npt.NDArray[np.int64], tf_ms: int,
                  bucket_ms: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """For each completed 4h bucket, the row of its last candle (its close) and the row at which
    it completes; buckets never completed within the data are left out."""
    bucket = open_ms // bucket_ms
    last_rows = np.flatnonzero(np.r_[bucket[1:] != bucket[:-1], True])
    ends_bucket = (open_ms[last_rows] + tf_ms) % bucket_ms == 0
    has_next = last_rows < open_ms.size - 1
    completes_at = np.where(ends_bucket, last_rows, last_rows + 1)
    keep = ends_bucket | has_next
    return last_rows[keep], completes_at[keep]


def feature_matrix(open_ms: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike,
                   close: npt.ArrayLike, volume: npt.ArrayLike, *,
                   funding_last: npt.ArrayLike | None = None,
                   btc_ret_1: npt.ArrayLike | None = None, spec: FeatureSet = TREND_V2,
                   timeframe_ms: int = 3_600_000) -> Array:
    """Rows of `spec`'s columns for one symbol's candles (ascending, one row per candle)."""
    if spec is not TREND_V2:
        raise ValueError(f"no batch form for feature set {spec.name}@{spec.version}")
    p = spec.params
    t = np.asarray(open_ms, dtype=np.int64)
    h, lo, c, v = (np.asarray(a, dtype=np.float64) for a in (high, low, close, volume))
    n = c.size
    _, _, hist = macd_batch(c, *p["macd"])
    adx, plus_di, minus_di = adx_batch(h, lo, c, p["adx"])
    upper, middle, lower = bbands_batch(c, p["bbands"][0], p["bbands"][1], p["bbands"][1])
    k, d = stoch_batch(h, lo, c, *p["stoch"])
    dc_up, _, dc_lo = donchian_batch(h, lo, p["donchian"])
    kc_up, _, kc_lo = keltner_batch(h, lo, c, *p["keltner"])
    vol_sma = sma_batch(v, p["vol_ratio"])
    with np.errstate(divide="ignore", invalid="ignore"):
        vol_ratio = np.where(vol_sma == 0.0, np.nan, v / vol_sma)
    seconds = t // 1000
    hour = ((seconds // 3600) % 24).astype(np.float64)
    dow = (((seconds // 86400) + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday
    h4_fast, h4_slow, h4_rsi = _h4(t, c, timeframe_ms, p)
    columns = [
        _ratio(ema_batch(c, p["ema_fast"]), ema_batch(c, p["ema_slow"])),
        rsi_batch(c, p["rsi"]),
        hist / c,
        adx,
        plus_di - minus_di,
        roc_batch(c, p["roc"]),
        cci_batch(h, lo, c, p["cci"]),
        atr_batch(h, lo, c, p["atr"]) / c,
        (upper - lower) / middle,
        k,
        d,
        _position(c, dc_lo, dc_up),
        _position(c, kc_lo, kc_up),
        zscore_batch(c, p["zscore"]),
        realized_vol_batch(c, p["rvol"]),
        mfi_batch(h, lo, c, v, p["mfi"]),
        _ratio(c, vwap_batch(t, h, lo, c, v)),
        vol_ratio,
        *(log_returns(c, horizon) for horizon in p["returns"]),
        hour,
        dow,
        _ratio(h4_fast, h4_slow),
        h4_rsi,
        _context(funding_last, n),
        _context(btc_ret_1, n),
    ]
    return np.column_stack(columns)


def _context(values: npt.ArrayLike | None, n: int) -> Array:
    return np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)


def _h4(t: npt.NDArray[np.int64], c: Array, tf_ms: int,
        p: dict[str, object]) -> tuple[Array, Array, Array]:
    """The latest completed 4h bucket's indicators as seen by each row."""
    n = c.size
    out = [np.full(n, np.nan) for _ in range(3)]
    if n == 0:
        return out[0], out[1], out[2]
    close_rows, completes_at = h4_completion(t, tf_ms, int(p["bucket_ms"]))  # type: ignore[call-overload]
    h4_close = c[close_rows]
    fast_period, slow_period = p["h4_ema"]  # type: ignore[misc]
    series = (ema_batch(h4_close, fast_period), ema_batch(h4_close, slow_period),
              rsi_batch(h4_close, int(p["h4_rsi"])))  # type: ignore[call-overload]
    done = np.searchsorted(completes_at, np.arange(n), side="right")  # buckets done by row i
    seen = done > 0
    for target, values in zip(out, series, strict=True):
        target[seen] = values[done[seen] - 1]
    return out[0], out[1], out[2]


def funding_asof(close_ms: npt.ArrayLike, funding_ms: npt.ArrayLike,
                 rates: npt.ArrayLike) -> Array:
    """The last funding rate settled at or before each candle's close (NaN before the first)."""
    closes = np.asarray(close_ms, dtype=np.int64)
    times = np.asarray(funding_ms, dtype=np.int64)
    values = np.asarray(rates, dtype=np.float64)
    idx = np.searchsorted(times, closes, side="right") - 1
    out = np.full(closes.shape, np.nan)
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def aligned_returns(open_ms: npt.ArrayLike, ref_open_ms: npt.ArrayLike,
                    ref_close: npt.ArrayLike) -> Array:
    """The reference symbol's 1-candle log return at each of our open times (NaN where the
    reference has no candle then, or none before it)."""
    ours = np.asarray(open_ms, dtype=np.int64)
    ref_t = np.asarray(ref_open_ms, dtype=np.int64)
    ref_ret = log_returns(np.asarray(ref_close, dtype=np.float64), 1)
    idx = np.searchsorted(ref_t, ours)
    out = np.full(ours.shape, np.nan)
    ok = (idx < ref_t.size) & (ref_t[np.minimum(idx, ref_t.size - 1)] == ours)
    out[ok] = ref_ret[idx[ok]]
    return out
