"""The trend strategy as an Optuna `Evaluator`: the search space, and one out-of-sample window
simulated by the vectorbt engine on the shared rules.

Signals are computed once per parameter set over the whole history (so indicators and the
rules' state are warm at every window's start, as in a service that has run all along) and cut
to the window; the indicators are kept between trials (`IndicatorCache`: trials differ in the
rule parameters and barriers, so after the first one only the rules are run again); each window
starts flat with its own wallet (`simulate` on the window's rows), so windows are independent
samples. Sizing is a fixed fraction of the initial capital times the leverage (the risk gate's
`fixed_fraction`), so leverage scales the position and its risk.

The default space searches the rule parameters, the barriers and leverage; the feature windows
stay at the released feature set's, because only those can be promoted
(`meridian_common.strategy.configured`). Pass `windows=True` to search them in research.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from meridian_research.data import Wide, to_ms
from meridian_research.portfolio import simulate
from meridian_research.signals import IndicatorCache, TrendFactory, TrendSignals
from meridian_research.study import WindowResult
from meridian_research.walkforward import Window

# name -> (low, high, step or None); floats unless both bounds are ints
RULE_SPACE: dict[str, tuple[float, float, float | None]] = {
    "entry_score": (0.3, 0.9, 0.05),
    "rsi_band": (0.0, 15.0, 1.0),
    "stop_loss": (0.005, 0.06, 0.005),
    "take_profit": (0.01, 0.15, 0.005),
}
WINDOW_SPACE: dict[str, tuple[int, int, int]] = {
    "ema_fast": (5, 40, 5), "ema_slow": (30, 200, 10), "rsi_window": (7, 28, 7),
}
LEVERAGE = (1, 10)


@dataclass
class TrendEvaluator:
    wide: Wide
    fraction: float = 0.1
    margin_mode: str = "isolated"
    init_cash: float = 10_000.0
    allow_short: bool = True
    windows: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)
    _cache: OrderedDict[tuple[tuple[str, Any], ...], TrendSignals] = field(
        default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _indicators: IndicatorCache = field(default_factory=IndicatorCache, repr=False)

    def space(self, trial: optuna.Trial) -> dict[str, Any]:
        params: dict[str, Any] = dict(self.fixed)
        # rounded: a stepped float suggestion carries binary noise (-0.19999999999999996)
        for name, (low, high, step) in RULE_SPACE.items():
            params[name] = round(trial.suggest_float(name, low, high, step=step), 6)
        # the exit score below the entry score, as TrendParams requires
        params["exit_score"] = round(trial.suggest_float("exit_score", -0.5, 0.2, step=0.05), 6)
        if params["exit_score"] >= params["entry_score"]:
            params["exit_score"] = round(params["entry_score"] - 0.05, 2)
        if self.windows:
            for name, (low, high, step) in WINDOW_SPACE.items():
                params[name] = trial.suggest_int(name, low, high, step=step)
        params["leverage"] = trial.suggest_int("leverage", *LEVERAGE)
        params["allow_short"] = self.allow_short
        params["margin_mode"] = self.margin_mode
        trial.set_user_attr("fixed", {k: params[k] for k in
                                      ("allow_short", "margin_mode", "exit_score", *self.fixed)})
        return params

    def signals(self, params: Mapping[str, Any]) -> TrendSignals:
        """The whole history's signals for `params` (a few kept: pruning re-asks windows)."""
        hyper = {k: v for k, v in params.items() if k not in ("leverage", "margin_mode")}
        key = tuple(sorted(hyper.items()))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        computed = TrendFactory(cache=self._indicators).run(self.wide, **hyper)
        if computed.skipped:
            raise ValueError(f"parameters refused: {computed.skipped[0][1]}")
        with self._lock:
            self._cache[key] = computed
            while len(self._cache) > 4:
                self._cache.popitem(last=False)
        return computed

    def evaluate(self, params: Mapping[str, Any], window: Window) -> WindowResult:
        signals = self.signals(params)
        wide, cut = window_slice(self.wide, signals, window.test_start, window.test_end)
        result = simulate(wide, cut, notional=None, fraction=self.fraction,
                          leverage=float(params["leverage"]),
                          margin_mode=params.get("margin_mode", self.margin_mode),
                          init_cash=self.init_cash)
        row = result.combos.iloc[0]
        liquidated = bool(row["liquidated"])
        total = max(float(row["total_return"]), -1.0)
        return WindowResult(total_return=total, max_drawdown=min(float(row["max_drawdown"]), 1.0),
                            liquidated=liquidated, trades=int(row["trades"]))


def window_slice(wide: Wide, signals: TrendSignals, start_ms: int,
                 end_ms: int) -> tuple[Wide, TrendSignals]:
    """The rows of [start_ms, end_ms) of the data and of the signals."""
    t = to_ms(wide.index)
    rows = (t >= start_ms) & (t < end_ms)
    if not rows.any():
        raise ValueError(f"no candles in [{start_ms}, {end_ms})")
    frames = {name: getattr(wide, name).loc[rows] for name in
              ("open", "high", "low", "close", "volume")}
    cut_wide = Wide(**frames, funding=wide.funding, timeframe=wide.timeframe)
    names = ("long_entries", "long_exits", "short_entries", "short_exits", "stop_loss",
             "take_profit", "states")
    cut = replace(signals, **{n: getattr(signals, n).loc[rows] for n in names})
    return cut_wide, cut
