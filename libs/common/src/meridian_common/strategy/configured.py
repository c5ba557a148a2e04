"""A strategy's promoted parameters (active_configs.parameters) as the rules and barriers the
signals service runs, checked in one place.

Research searches some of these names (`meridian_research`), `meridian promote` refuses a trial
this function refuses, and the signals service applies what it accepts: so a promoted config
never reaches a service that cannot run it. The keys are the fields of `TrendParams` and
`Barriers`; feature windows are not among them, because the features service computes one
released feature set (trend@2.0.0's windows) for every consumer: a study that searched windows
needs a new feature-set version before its result can go live.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from meridian_common.features.spec import TREND_V2
from meridian_common.labels import Barriers
from meridian_common.strategy.trend import TrendParams

RULE_KEYS = tuple(f.name for f in dataclasses.fields(TrendParams))
BARRIER_KEYS = tuple(f.name for f in dataclasses.fields(Barriers))
# Fields of the promoted row itself (the risk gate reads them from its columns), tolerated in
# the parameters so a trial's whole parameter set can be stored as it was searched.
RISK_KEYS = ("leverage", "margin_mode", "max_position_notional")
# Research names of the feature windows (meridian_research.signals) -> trend@2.0.0's value.
FEATURE_WINDOWS = {
    "ema_fast": TREND_V2.params["ema_fast"], "ema_slow": TREND_V2.params["ema_slow"],
    "rsi_window": TREND_V2.params["rsi"], "macd_fast": TREND_V2.params["macd"][0],
    "macd_slow": TREND_V2.params["macd"][1], "macd_signal": TREND_V2.params["macd"][2],
    "h4_fast": TREND_V2.params["h4_ema"][0], "h4_slow": TREND_V2.params["h4_ema"][1],
    "atr_window": TREND_V2.params["atr"],
}


class StrategyConfigError(ValueError):
    pass


def _windows_problems(parameters: Mapping[str, Any]) -> list[str]:
    return [f"{k}={parameters[k]} (the live feature set trend@2.0.0 has {v})"
            for k, v in FEATURE_WINDOWS.items() if k in parameters and parameters[k] != v]


def configured_strategy(parameters: Mapping[str, Any], base_rules: TrendParams,
                        base_barriers: Barriers) -> tuple[TrendParams, Barriers]:
    """The rules and barriers with `parameters` applied over the bases; a clear error naming
    every key that cannot be applied."""
    known = set(RULE_KEYS) | set(BARRIER_KEYS) | set(RISK_KEYS) | set(FEATURE_WINDOWS)
    unknown = sorted(k for k in parameters if k not in known)
    if unknown:
        raise StrategyConfigError(
            f"unknown parameter(s) {', '.join(unknown)}; a trend config has "
            f"{', '.join(RULE_KEYS + BARRIER_KEYS)} (and {', '.join(RISK_KEYS)})")
    windows = _windows_problems(parameters)
    if windows:
        raise StrategyConfigError(
            "feature windows differ from the live feature set: " + "; ".join(windows)
            + ". Release a feature set with these windows first")
    try:
        rules = dataclasses.replace(
            base_rules, **{k: parameters[k] for k in RULE_KEYS if k in parameters})
        barriers = dataclasses.replace(
            base_barriers, **{k: parameters[k] for k in BARRIER_KEYS if k in parameters})
    except (TypeError, ValueError) as exc:
        raise StrategyConfigError(str(exc)) from None
    return rules, barriers
