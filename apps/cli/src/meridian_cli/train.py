"""`meridian train` and `meridian model promote`: the meta-model's training job and its release.

train: labelled primary entries from history (the shared CSVs), a purged walk-forward with an
Optuna search inside each training window, out-of-sample metrics for the primary rules alone and
with the meta-filter, then the model to serve (tuned and fit on the most recent window), checked
against its ONNX export, registered with its model card. `--promote` makes it the served model.

promote: marks a registered version as promoted (PostgreSQL when MERIDIAN_DATABASE_URL is set,
else the registry directory) and, with MERIDIAN_BUS=kafka, announces it on control.v1 so running
signals services load it without a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from meridian_common import config, logs
from meridian_common.features import TREND_V2
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.labels import Barriers
from meridian_common.marketdata import default_data_dir
from meridian_common.strategy import TrendParams

DAY_MS = 86_400_000
PARITY_LIMIT = 1e-5


def _ms(date: str | None) -> int | None:
    if date is None:
        return None
    return int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _model_dir(ns: argparse.Namespace) -> Path:
    """--model-dir, else the directory the signals service reads (MERIDIAN_SIGNALS_MODEL_DIR),
    so a trained model is where the service looks for it."""
    if ns.model_dir:
        return Path(ns.model_dir)
    from meridian_signals.settings import SignalsSettings

    return Path(config.load(SignalsSettings).model_dir)


def _database_url() -> str | None:
    common = config.load(config.CommonSettings)
    return common.database_url.get_secret_value() if common.database_url else None


def _strategy(ns: argparse.Namespace) -> tuple[TrendParams, Barriers, PaperFillModel]:
    try:
        params = TrendParams(allow_short=ns.allow_short, entry_score=ns.entry_score)
        barriers = Barriers(ns.take_profit, ns.stop_loss, ns.max_holding, use_atr=not ns.fixed)
        fills = PaperFillModel(FeeSchedule(Decimal(ns.fee), Decimal(ns.fee)),
                               Decimal(ns.slippage_bps))
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None
    return params, barriers, fills


def cmd_train(ns: argparse.Namespace) -> int:
    from meridian_ml.card import model_card
    from meridian_ml.dataset import build_events, csv_funding, load_csv
    from meridian_ml.model import xgb_json
    from meridian_ml.onnx_model import OnnxModel, to_onnx
    from meridian_ml.registry import ModelRegistry
    from meridian_ml.splits import WalkForward
    from meridian_ml.train import TrainConfig, effective, final_model, walk_forward

    logs.setup("meridian", "INFO" if ns.verbose else "WARNING")
    started = time.perf_counter()
    symbols = [s.strip().upper() for s in ns.symbols.split(",") if s.strip()]
    params, barriers, fills = _strategy(ns)
    try:
        cfg = TrainConfig(WalkForward(ns.train_days * DAY_MS, ns.test_days * DAY_MS,
                                      ns.gap_days * DAY_MS), trials=ns.trials,
                          threshold=ns.threshold, seed=ns.seed)
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None
    data_dir = Path(ns.data_dir) if ns.data_dir else default_data_dir()
    say = _printer()
    say(f"loading {', '.join(symbols)} 1h from {data_dir}")
    candles = load_csv(data_dir, symbols, _ms(ns.start), _ms(ns.end))
    events = build_events(candles, TREND_V2, params, barriers, fills, csv_funding(data_dir))
    say(f"{len(events):,} labelled primary entries, {events.y.mean():.1%} profitable after costs")
    result = walk_forward(events, cfg, say)
    _print_folds(result)
    _print_metrics(result.metrics)
    model, tuned = final_model(events, cfg, say)
    recent = np.flatnonzero(events.t0 > events.t0.max() - cfg.walk_forward.train_size)
    onnx_bytes = to_onnx(model, len(events.columns))
    worst = float(np.max(np.abs(OnnxModel(onnx_bytes).proba(events.x[recent])
                                - model.predict_proba(events.x[recent])[:, 1])))
    if worst > PARITY_LIMIT:
        print(f"meridian train: ONNX export differs from xgboost by {worst:.2e} "
              f"(> {PARITY_LIMIT:g}); not registered", file=sys.stderr)
        return 1
    strategy = {"primary": dataclasses.asdict(params), "barriers": dataclasses.asdict(barriers),
                "fills": {"taker": str(fills.fees.taker), "slippage_bps": str(fills.slippage_bps)}}
    folds = [dataclasses.asdict(f) for f in result.folds]
    metrics: dict[str, Any] = {**result.metrics, "onnx_max_abs_diff": worst,
                               "events": len(events), "folds": len(result.folds)}
    registry = ModelRegistry(_model_dir(ns), _database_url())
    try:
        manifest = registry.register(
            ns.name, onnx_bytes, xgb_json(model), feature_set=f"{TREND_V2.name}@"
            f"{TREND_V2.version}", feature_fingerprint=TREND_V2.fingerprint(),
            columns=list(events.columns), symbols=symbols, timeframe="1h",
            train_start_ms=int(events.t0[recent].min()), train_end_ms=int(events.t1.max()),
            hyperparameters=effective(tuned), metrics=metrics, threshold=ns.threshold,
            card=lambda m: model_card(m, folds, result.curves), strategy=strategy)
        print(f"registered {manifest.version} (ONNX parity {worst:.1e}) in "
              f"{registry.path(manifest.version)}; card: "
              f"{registry.path(manifest.version) / 'card.html'}")
        if ns.promote:
            registry.promote(manifest.version)
            print(f"promoted {manifest.version}")
    finally:
        registry.close()
    print(f"training took {time.perf_counter() - started:.1f}s")
    return 0


def _printer():  # type: ignore[no-untyped-def]
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)
    return say


def _print_folds(result: Any) -> None:
    print("fold  test window              train  test   AUC  precision  recall  kept  pruned"
          "  primary  filtered")
    for f in result.folds:
        print(f"{f.index + 1:>4}  {_iso(f.test_start_ms)} .. {_iso(f.test_end_ms)}  "
              f"{f.train_events:>5}  {f.test_events:>4}  {f.auc:.3f}  {f.precision:>9.3f}  "
              f"{f.recall:>6.3f}  {f.taken:>4}  {f.trials_pruned:>6}  "
              f"{f.strategy['primary.return']:>+7.1%}  {f.strategy['meta-filtered.return']:>+8.1%}")


def _print_metrics(m: dict[str, float]) -> None:
    print(f"out of sample: AUC {m['auc']:.3f}, precision {m['precision']:.3f} and recall "
          f"{m['recall']:.3f} at threshold {m['threshold']:g} (base rate {m['base_rate']:.3f})")
    print("strategy (net of fees and slippage)   return   Sharpe   max DD   trades")
    for name in ("primary", "meta-filtered"):
        print(f"{name:<36} {m[f'{name}.return']:>+7.1%}  {m[f'{name}.sharpe']:>7.2f}  "
              f"{m[f'{name}.max_drawdown']:>7.1%}  {int(m[f'{name}.trades']):>7}")


def cmd_promote(ns: argparse.Namespace) -> int:
    from meridian_ml.registry import ModelRegistry, RegistryError

    logs.setup("meridian", "WARNING")
    registry = ModelRegistry(_model_dir(ns), _database_url())
    try:
        registry.promote(ns.version)
        manifest, _ = registry.load(ns.version)
    except RegistryError as exc:
        print(f"meridian model promote: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.close()
    print(f"promoted {ns.version}")
    common = config.load(config.CommonSettings)
    if common.bus == "kafka":
        asyncio.run(_announce(common, manifest.name, ns.version))
        print(f"announced on {common.topic_prefix}control.v1")
    return 0


async def _announce(common: config.CommonSettings, name: str, version: str) -> None:
    from meridian.v1 import common_pb2, control_pb2
    from meridian_common import ids
    from meridian_common.control import publish_command
    from meridian_common.service import open_bus

    now = time.time_ns() // 1_000_000
    command = control_pb2.Control(
        meta=common_pb2.Meta(id=ids.digest("model_promotion", name, version), event_time_ms=now,
                             producer="meridian-cli"),
        model_promotion=control_pb2.ModelPromotion(model_name=name, model_version=version))
    await publish_command(open_bus(common, "meridian-cli"), common.topic_prefix,
                          f"model:{name}", command)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    default_dir = None  # MERIDIAN_SIGNALS_MODEL_DIR's value: where the signals service looks
    train = sub.add_parser("train", help="walk-forward training of the meta-model")
    train.add_argument("--symbols", default="BTCUSDT", help="comma-separated (default BTCUSDT)")
    train.add_argument("--start", help="first candle, UTC ISO date (default: whole history)")
    train.add_argument("--end", help="end (exclusive), UTC ISO date")
    train.add_argument("--data-dir", help="directory of the candle CSVs (default: shared data)")
    train.add_argument("--train-days", type=int, default=365)
    train.add_argument("--test-days", type=int, default=90)
    train.add_argument("--gap-days", type=int, default=2,
                       help="embargo between each training window and its test window")
    train.add_argument("--trials", type=int, default=20, help="Optuna trials per window")
    train.add_argument("--threshold", type=float, default=0.5,
                       help="meta-model probability needed to take an entry")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--allow-short", action="store_true", help="primary rules may short")
    train.add_argument("--entry-score", type=float, default=TrendParams().entry_score)
    train.add_argument("--take-profit", type=float, default=2.0,
                       help="take-profit barrier: ATR multiple (fraction with --fixed)")
    train.add_argument("--stop-loss", type=float, default=1.0,
                       help="stop-loss barrier: ATR multiple (fraction with --fixed)")
    train.add_argument("--fixed", action="store_true", help="barriers as price fractions")
    train.add_argument("--max-holding", type=int, default=48, help="time barrier, candles")
    train.add_argument("--fee", default="0.001", help="taker fee rate per side")
    train.add_argument("--slippage-bps", default="5")
    train.add_argument("--model-dir", default=default_dir,
                       help="model registry root (default: MERIDIAN_SIGNALS_MODEL_DIR, "
                            ".local/models)")
    train.add_argument("--name", default="meta-trend", help="model name in the registry")
    train.add_argument("--promote", action="store_true", help="promote the new version")
    train.add_argument("-v", "--verbose", action="store_true")
    train.set_defaults(func=cmd_train)
    model = sub.add_parser("model", help="model registry: promote")
    msub = model.add_subparsers(dest="model_command", required=True)
    promote = msub.add_parser("promote", help="serve a registered version")
    promote.add_argument("version")
    promote.add_argument("--model-dir", default=default_dir)
    promote.set_defaults(func=cmd_promote)
