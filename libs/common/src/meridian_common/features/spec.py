"""Feature sets: a named, versioned list of columns with their parameters.

The version is part of every features.v1 message and of every model's metadata: a model trained
on one version is never fed another. `fingerprint` hashes the columns and parameters, so a change
that forgets to bump the version is still caught (the registry refuses a known name+version with
a different fingerprint).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class FeatureSet:
    name: str
    version: str
    columns: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        blob = json.dumps({"columns": self.columns, "params": self.params}, sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()

    def index(self, column: str) -> int:
        return self.columns.index(column)


HOUR_MS = 3_600_000
H4_MS = 4 * HOUR_MS

TREND_V2 = FeatureSet(
    name="trend",
    version="2.0.0",
    columns=(
        # trend and momentum (1h)
        "ema_ratio", "rsi", "macd_hist_pct", "adx", "di_diff", "roc", "cci",
        # volatility and range position (Bollinger width, not %b: with the population std %b is
        # a linear function of the z-score column, and its ratio amplifies float noise when the
        # bands are narrow)
        "atr_pct", "bb_width", "stoch_k", "stoch_d", "donchian_pos", "keltner_pos", "zscore",
        "rvol",
        # volume
        "mfi", "vwap_dist", "vol_ratio",
        # returns over horizons (log, in candles)
        "ret_1", "ret_4", "ret_24",
        # calendar (UTC, of the candle's open)
        "hour", "dow",
        # 4h confirmation, resampled in-stream from 1h; only completed 4h candles
        "h4_ema_ratio", "h4_rsi",
        # context: perpetual funding (last settled at or before the close), cross-asset
        "funding_last", "btc_ret_1",
    ),
    params={
        "ema_fast": 20, "ema_slow": 50, "rsi": 14, "macd": (12, 26, 9), "adx": 14, "roc": 10,
        "cci": 20, "atr": 14, "bbands": (20, 2.0), "stoch": (5, 3, 3), "donchian": 20,
        "keltner": (20, 10, 2.0), "zscore": 20, "rvol": 20, "mfi": 14, "vol_ratio": 24,
        "returns": (1, 4, 24), "h4_ema": (12, 26), "h4_rsi": 14, "bucket_ms": H4_MS,
    },
)

FEATURE_SETS: dict[tuple[str, str], FeatureSet] = {(TREND_V2.name, TREND_V2.version): TREND_V2}


def feature_set(name: str, version: str) -> FeatureSet:
    try:
        return FEATURE_SETS[(name, version)]
    except KeyError:
        known = ", ".join(f"{n}@{v}" for n, v in sorted(FEATURE_SETS))
        raise KeyError(f"unknown feature set {name}@{version} (known: {known})") from None
