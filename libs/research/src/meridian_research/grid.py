"""The hyperparameter grid of the trend strategy: every value a scalar or a list, the Cartesian
product of the lists, each combination checked by the library's own validation.

Defaults come from the released definitions, never from copies of their numbers: the indicator
windows from the feature set `TREND_V2` (what the features service computes), the rule
parameters from `TrendParams`, the barriers from `labels.Barriers` (what the signals service
attaches to entries). So a sweep with no arguments is the released strategy.

A combination the library refuses (an exit score at or above the entry score, a fast average
that is not faster than the slow one, ...) is skipped with the reason, not raised: in a product
of lists some corners are invalid by construction, and the rest of the sweep is still wanted.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from meridian_common.features.spec import TREND_V2
from meridian_common.labels import Barriers
from meridian_common.strategy import TrendParams

_P = TREND_V2.params
WINDOW_DEFAULTS: dict[str, int] = {
    "ema_fast": _P["ema_fast"], "ema_slow": _P["ema_slow"], "rsi_window": _P["rsi"],
    "macd_fast": _P["macd"][0], "macd_slow": _P["macd"][1], "macd_signal": _P["macd"][2],
    "h4_fast": _P["h4_ema"][0], "h4_slow": _P["h4_ema"][1], "atr_window": _P["atr"],
}
RULE_DEFAULTS: dict[str, Any] = asdict(TrendParams())
_B = Barriers()
BARRIER_DEFAULTS: dict[str, Any] = {"stop_loss": _B.stop_loss, "take_profit": _B.take_profit,
                                    "use_atr": _B.use_atr}
DEFAULTS: dict[str, Any] = {**WINDOW_DEFAULTS, **RULE_DEFAULTS, **BARRIER_DEFAULTS}
NAMES: tuple[str, ...] = tuple(DEFAULTS)
_BOOLS = {f.name for f in fields(TrendParams) if f.type in ("bool", bool)} | {"use_atr"}
_MIN_WINDOW = {"rsi_window": 2}  # Wilder's RSI needs 2 (check_period in the indicator)


@dataclass(frozen=True, slots=True)
class Windows:
    """The indicator windows of one combination (what the indicator cache is keyed by)."""

    ema_fast: int
    ema_slow: int
    rsi_window: int
    macd_fast: int
    macd_slow: int
    macd_signal: int
    h4_fast: int
    h4_slow: int
    atr_window: int


@dataclass(frozen=True, slots=True)
class Combo:
    """One point of the grid: its windows, rule parameters and barriers, and all values."""

    windows: Windows
    rules: TrendParams
    barriers: Barriers
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Grid:
    combos: list[Combo]
    swept: tuple[str, ...]  # hyperparameters given as lists: the column levels, in NAMES order
    skipped: list[tuple[dict[str, Any], str]]  # refused combinations and why


def _values(name: str, value: Any) -> tuple[list[Any], bool]:
    """The distinct values of one hyperparameter (order kept) and whether it was a list."""
    listed = isinstance(value, (list, tuple, np.ndarray, pd.Index))
    items = list(value) if listed else [value]
    if not items:
        raise ValueError(f"{name}: an empty list sweeps nothing")
    out: list[Any] = []
    for v in items:
        v = _coerce(name, v)
        if v not in out:
            out.append(v)
    return out, listed


def _coerce(name: str, v: Any) -> Any:
    if name in _BOOLS:
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name} takes booleans, got {v!r}")
        return bool(v)
    if name in WINDOW_DEFAULTS:
        if isinstance(v, (bool, np.bool_)) or int(v) != v:
            raise TypeError(f"{name} takes whole numbers of candles, got {v!r}")
        return int(v)
    return float(v)


def _check_windows(w: Windows) -> None:
    for name in WINDOW_DEFAULTS:
        least = _MIN_WINDOW.get(name, 1)
        if getattr(w, name) < least:
            raise ValueError(f"{name} must be >= {least}, got {getattr(w, name)}")
    for fast, slow in (("ema_fast", "ema_slow"), ("macd_fast", "macd_slow"),
                       ("h4_fast", "h4_slow")):
        if getattr(w, fast) >= getattr(w, slow):
            raise ValueError(f"{fast} ({getattr(w, fast)}) must be below {slow} "
                             f"({getattr(w, slow)})")
    if w.macd_fast < 2:
        raise ValueError(f"macd_fast must be >= 2, got {w.macd_fast}")


def _combo(values: dict[str, Any]) -> Combo:
    windows = Windows(**{k: values[k] for k in WINDOW_DEFAULTS})
    _check_windows(windows)
    rules = TrendParams(**{k: values[k] for k in RULE_DEFAULTS})
    barriers = Barriers(take_profit=values["take_profit"], stop_loss=values["stop_loss"],
                        use_atr=values["use_atr"])
    return Combo(windows, rules, barriers, values)


def build_grid(**hyperparams: Any) -> Grid:
    """The valid combinations of the Cartesian product of the hyperparameters (NAMES order;
    each a scalar or a list, defaults for the ones not given)."""
    unknown = sorted(set(hyperparams) - set(NAMES))
    if unknown:
        raise TypeError(f"unknown hyperparameters {unknown}; known: {list(NAMES)}")
    axes, swept = [], []
    for name in NAMES:
        values, listed = _values(name, hyperparams.get(name, DEFAULTS[name]))
        axes.append(values)
        if listed:
            swept.append(name)
    combos, skipped = [], []
    for point in itertools.product(*axes):
        values = dict(zip(NAMES, point, strict=True))
        try:
            combos.append(_combo(values))
        except ValueError as exc:
            skipped.append((values, str(exc)))
    if not combos:
        reasons = sorted({reason for _, reason in skipped})
        raise ValueError(f"no valid combination in the grid: {reasons}")
    return Grid(combos, tuple(swept), skipped)


def columns(grid: Grid, symbols: Sequence[str]) -> pd.MultiIndex:
    """Combination-major columns: (swept hyperparameters..., symbol), each combination's
    symbols side by side (what a cross-margin wallet groups)."""
    tuples = [(*(c.values[n] for n in grid.swept), s) for c in grid.combos for s in symbols]
    return pd.MultiIndex.from_tuples(tuples, names=[*grid.swept, "symbol"])
