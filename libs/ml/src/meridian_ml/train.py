"""Walk-forward training of the meta-model, with an Optuna search inside each training window.

Outer loop: `WalkForward` folds over the labelled events. For each fold, hyperparameters are
searched only on that fold's training events (an inner purged walk-forward; a trial reports its
running mean AUC after each inner fold, so the median pruner stops poor trials early); the best
parameters are refit on the whole training window and score the test window, which no choice
has seen. The out-of-sample probabilities of all folds give the overall metrics: AUC,
precision/recall at the threshold, and the strategy's net results with and without the filter.

The model to serve is then tuned and fit the same way on the most recent training window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import optuna
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from meridian_common.performance import curve_stats
from meridian_ml.dataset import Events
from meridian_ml.model import XGB_DEFAULTS, fit
from meridian_ml.splits import WalkForward

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TrainConfig:
    walk_forward: WalkForward
    trials: int = 20
    threshold: float = 0.5
    allocation: float = 0.25  # fraction of equity per trade in the strategy curves
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.allocation <= 1.0:
            raise ValueError(f"allocation must be in (0, 1], got {self.allocation}")

    @property
    def inner(self) -> WalkForward:
        wf = self.walk_forward
        return WalkForward(train_size=wf.train_size // 2, test_size=max(wf.train_size // 6, 1),
                           gap=wf.gap)


@dataclass(slots=True)
class FoldResult:
    index: int
    test_start_ms: int
    test_end_ms: int
    train_events: int
    test_events: int
    params: dict[str, Any]
    auc: float
    precision: float
    recall: float
    taken: int
    trials_pruned: int
    # the fold's test window traded by the primary rules alone and with the meta-filter
    strategy: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class TrainResult:
    folds: list[FoldResult]
    metrics: dict[str, float]
    curves: dict[str, list[tuple[int, float]]]
    final_params: dict[str, Any]
    model: Any = None
    oos_proba: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    oos_index: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def _space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 400, step=50),
        "max_depth": trial.suggest_int("max_depth", 2, 6),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 10.0, log=True),
    }


def _auc(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64]) -> float:
    return float(roc_auc_score(y, p)) if np.unique(y).size == 2 else math.nan


def tune(events: Events, config: TrainConfig,
         on_trial: Callable[[int, float | None], None] | None = None) -> tuple[dict[str, Any], int]:
    """Best parameters on `events` by inner walk-forward AUC, as overrides of XGB_DEFAULTS
    ({} keeps the defaults: no inner fold had both classes, or every trial was pruned), and
    how many trials were pruned."""
    folds = [f for f in config.inner.split(events.t0, events.t1)
             if np.unique(events.y[f.train]).size == 2 and np.unique(events.y[f.test]).size == 2]
    if not folds:
        return {}, 0

    def objective(trial: optuna.Trial) -> float:
        params = _space(trial)
        scores = []
        for k, f in enumerate(folds):
            model = fit(events.x[f.train], events.y[f.train], params, seed=config.seed)
            scores.append(_auc(events.y[f.test], model.predict_proba(events.x[f.test])[:, 1]))
            trial.report(float(np.mean(scores)), k)
            if trial.should_prune():
                raise optuna.TrialPruned
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    for _ in range(config.trials):
        study.optimize(objective, n_trials=1)
        last = study.trials[-1]
        if on_trial:
            on_trial(last.number, last.value)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        return {}, pruned
    return dict(study.best_params), pruned


def equity_curve(t1: npt.NDArray[np.int64], returns: npt.NDArray[np.float64],
                 allocation: float, start_ms: int, end_ms: int) -> list[tuple[int, float]]:
    """Daily equity from 1.0: each trade moves equity by allocation x its net return at its
    exit (an approximation of the portfolio; the faithful one is the topic-replay backtest)."""
    days = np.arange(start_ms // DAY_MS * DAY_MS, end_ms + DAY_MS, DAY_MS)
    if t1.size == 0:
        return [(int(d), 1.0) for d in days]  # no trade: equity stays flat
    order = np.argsort(t1, kind="stable")
    growth = np.cumprod(1.0 + allocation * returns[order])
    done = np.searchsorted(t1[order], days, side="right")
    values = np.where(done > 0, growth[np.maximum(done - 1, 0)], 1.0)
    return [(int(d), float(v)) for d, v in zip(days, values, strict=True)]


def _strategy(curve: list[tuple[int, float]], trades: int) -> dict[str, float]:
    values = [v for _, v in curve]
    stats = curve_stats(values, bars_per_year=365)
    return {"return": values[-1] - 1.0, "sharpe": stats.sharpe, "max_drawdown": stats.max_drawdown,
            "trades": float(trades)}


def walk_forward(events: Events, config: TrainConfig,
                 progress: Callable[[str], None] | None = None) -> TrainResult:
    say = progress or (lambda _msg: None)
    folds = list(config.walk_forward.split(events.t0, events.t1))
    if not folds:
        raise ValueError(f"no walk-forward fold fits in {len(events)} events with "
                         f"{config.walk_forward}: use a longer range or smaller windows")
    results, proba, index = [], [], []
    for f in folds:
        train = events.take(f.train)
        params, pruned = tune(train, config, lambda n, v, k=f.index: say(
            f"fold {k + 1}/{len(folds)} trial {n + 1}/{config.trials}: "
            f"{'pruned' if v is None else f'inner AUC {v:.3f}'}"))
        model = fit(train.x, train.y, params, seed=config.seed)
        p = model.predict_proba(events.x[f.test])[:, 1]
        y = events.y[f.test]
        take = p >= config.threshold
        r, t1 = events.net_return[f.test], events.t1[f.test]
        end = int(t1.max())
        strategy = {
            f"{name}.{k}": v
            for name, keep in (("primary", np.ones_like(take)), ("meta-filtered", take))
            for k, v in _strategy(equity_curve(t1[keep], r[keep], config.allocation,
                                               f.test_start, end), int(keep.sum())).items()}
        results.append(FoldResult(
            f.index, f.test_start, f.test_end, f.train.size, f.test.size, params, _auc(y, p),
            float(precision_score(y, take, zero_division=0)),
            float(recall_score(y, take, zero_division=0)), int(take.sum()), pruned, strategy))
        say(f"fold {f.index + 1}/{len(folds)}: AUC {results[-1].auc:.3f}, "
            f"{int(take.sum())}/{f.test.size} entries kept")
        proba.append(p)
        index.append(f.test)
    oos_p, oos_i = np.concatenate(proba), np.concatenate(index)
    y, r, t1 = events.y[oos_i], events.net_return[oos_i], events.t1[oos_i]
    take = oos_p >= config.threshold
    start, end = int(events.t0[oos_i].min()), int(t1.max())
    curves = {"primary": equity_curve(t1, r, config.allocation, start, end),
              "meta-filtered": equity_curve(t1[take], r[take], config.allocation, start, end)}
    metrics = {"auc": _auc(y, oos_p),
               "precision": float(precision_score(y, take, zero_division=0)),
               "recall": float(recall_score(y, take, zero_division=0)),
               "base_rate": float(y.mean()), "threshold": config.threshold}
    for name, curve in curves.items():
        trades = int(take.sum()) if name == "meta-filtered" else int(take.size)
        metrics |= {f"{name}.{k}": v for k, v in _strategy(curve, trades).items()}
    return TrainResult(results, metrics, curves, {}, None, oos_p, oos_i)


def final_model(events: Events, config: TrainConfig,
                progress: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Tune and fit on the most recent training window: the model to serve."""
    say = progress or (lambda _msg: None)
    end = int(events.t0.max())
    recent = np.flatnonzero(events.t0 > end - config.walk_forward.train_size)
    window = events.take(recent)
    params, _ = tune(window, config, lambda n, v: say(
        f"final trial {n + 1}/{config.trials}: {'pruned' if v is None else f'AUC {v:.3f}'}"))
    return fit(window.x, window.y, params, seed=config.seed), params


def effective(params: dict[str, Any]) -> dict[str, Any]:
    """The full hyperparameters a model was fit with (defaults plus overrides), for the record."""
    return {k: v for k, v in {**XGB_DEFAULTS, **params}.items() if k != "random_state"}
