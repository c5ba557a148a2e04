"""`meridian bench` model figures: serving the meta-model with onnxruntime versus xgboost's own
predict on the same model, and the time of the default walk-forward training on BTCUSDT 1h.

The latency and throughput figures count only if the two runtimes agree (the fingerprint: every
probability within 1e-5) on the rows being timed.
"""

from __future__ import annotations

import time

import numpy as np

from meridian_common.features import TREND_V2
from meridian_common.fills import PaperFillModel
from meridian_common.labels import Barriers
from meridian_common.marketdata import default_data_dir
from meridian_common.strategy import TrendParams
from meridian_ml.dataset import build_events, csv_funding, load_csv
from meridian_ml.model import fit
from meridian_ml.onnx_model import OnnxModel, to_onnx
from meridian_ml.splits import WalkForward
from meridian_ml.train import TrainConfig, walk_forward

DAY_MS = 86_400_000
SINGLE_ROWS = 2000
BATCH = 1000


def _latencies(call, rows: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.empty(rows.shape[0])
    for i in range(rows.shape[0]):
        started = time.perf_counter()
        call(rows[i:i + 1])
        out[i] = time.perf_counter() - started
    return out


def main() -> int:
    data_dir = default_data_dir()
    candles = load_csv(data_dir, ["BTCUSDT"], None, None)
    events = build_events(candles, TREND_V2, TrendParams(allow_short=True),
                          Barriers(2.0, 1.0, 48, use_atr=True), PaperFillModel(),
                          csv_funding(data_dir))
    model = fit(events.x, events.y)
    onnx = OnnxModel(to_onnx(model, events.x.shape[1]))
    rng = np.random.default_rng(0)
    rows = events.x[rng.integers(0, len(events), SINGLE_ROWS)]
    batch = np.resize(events.x, (BATCH, events.x.shape[1])).astype(np.float32)
    worst = float(np.max(np.abs(onnx.proba(rows) - model.predict_proba(rows)[:, 1])))
    if worst > 1e-5:
        print(f"MODEL FINGERPRINT MISMATCH: onnxruntime and xgboost differ by {worst:.2e}; "
              "figures do not count")
        return 1
    ort = _latencies(lambda r: onnx.proba_one(r[0]), rows) * 1e6
    xgb = _latencies(lambda r: model.predict_proba(r), rows) * 1e6
    started = time.perf_counter()
    for _ in range(20):
        onnx.proba(batch)
    ort_batch = 20 * BATCH / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(20):
        model.predict_proba(batch)
    xgb_batch = 20 * BATCH / (time.perf_counter() - started)
    print(f"\nmeta-model (200 trees, depth 4, {events.x.shape[1]} inputs), BTCUSDT events, "
          f"one thread; onnxruntime == xgboost within {worst:.1e}")
    print(f"{'runtime':<14}{'1 row p50 us':>14}{'p99 us':>10}{'rows/s (1000)':>16}"
          f"{'p50 vs xgboost':>16}")
    for name, lat, thr in (("xgboost", xgb, xgb_batch), ("onnxruntime", ort, ort_batch)):
        print(f"{name:<14}{np.percentile(lat, 50):>14.1f}{np.percentile(lat, 99):>10.1f}"
              f"{thr:>16,.0f}{np.percentile(xgb, 50) / np.percentile(lat, 50):>15.1f}x")
    config = TrainConfig(WalkForward(365 * DAY_MS, 90 * DAY_MS, 2 * DAY_MS))
    started = time.perf_counter()
    result = walk_forward(events, config)
    seconds = time.perf_counter() - started
    print(f"default walk-forward training, BTCUSDT 1h 2020-2023 ({len(events):,} events, "
          f"{len(result.folds)} folds x {config.trials} Optuna trials): {seconds:.1f}s; "
          f"out-of-sample AUC {result.metrics['auc']:.3f}")
    return 0
