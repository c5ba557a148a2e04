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
    # Context columns a deployment may not provide (funding on spot, the cross-asset reference
    # when it is not ingested): they may stay NaN, and a row's readiness ignores them.
    context: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        blob = json.dumps({"columns": self.columns, "params": self.params,
                           "context": self.context}, sort_keys=True)
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
        "cross_symbol": "BTCUSDT",
    },
    context=("funding_last", "btc_ret_1"),
)

# Every released set with the fingerprint it was released with. Editing a released set's columns
# or parameters without a new version fails here, at import, instead of silently feeding models
# trained on the old definition.
RELEASED: dict[tuple[str, str], str] = {("trend", "2.0.0"): "fc50fc0cf32828cc"}


def _registry(*sets: FeatureSet) -> dict[tuple[str, str], FeatureSet]:
    out = {}
    for spec in sets:
        pinned = RELEASED.get((spec.name, spec.version))
        if pinned != spec.fingerprint():
            raise RuntimeError(
                f"feature set {spec.name}@{spec.version} has fingerprint {spec.fingerprint()}, "
                f"released as {pinned}: give the changed definition a new version")
        out[(spec.name, spec.version)] = spec
    return out


FEATURE_SETS: dict[tuple[str, str], FeatureSet] = _registry(TREND_V2)


def feature_set(name: str, version: str) -> FeatureSet:
    try:
        return FEATURE_SETS[(name, version)]
    except KeyError:
        known = ", ".join(f"{n}@{v}" for n, v in sorted(FEATURE_SETS))
        raise KeyError(f"unknown feature set {name}@{version} (known: {known})") from None
