"""Primary trend-following rules: votes from the feature row, a score, and a position state.

Votes (each +1 long, -1 short, 0 neutral; a vote whose input is NaN abstains):
- ema: the sign of `ema_ratio` (fast EMA above or below the slow one);
- macd: the sign of `macd_hist_pct` (MACD line above or below its signal line);
- rsi: +1 above 50 + `rsi_band`, -1 below 50 - `rsi_band`, else 0 (momentum);
- h4: the sign of `h4_ema_ratio`, the completed 4h candles' trend (optional confirmation).

score = sum(weight x vote) / sum(weight of the votes that did not abstain), in [-1, 1].

Position state per symbol, with hysteresis so a score hovering at a threshold does not churn:
flat -> long when score >= `entry_score` (short when <= -entry_score and shorts are allowed);
long -> flat when score <= `exit_score` (short -> flat when score >= -exit_score). RSI extremes
veto entries: no long at or above `rsi_overbought`, no short at or below `rsi_oversold` (the
move is likely spent); the rule looks again on the next row. A Vote is emitted only when the
state changes: LONG / SHORT entries and FLAT exits, with strength |score| and a reason that
lists every vote, so each decision is explainable.

The same class runs in the signals service (row by row) and in research and labelling
(`trend_events` over a feature matrix), so both see the same entries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meridian.v1 import common_pb2
from meridian_common.features.spec import FeatureSet
from meridian_common.strategy.vote import Vote

LONG, SHORT, FLAT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT, common_pb2.DIRECTION_FLAT
INPUTS = ("ema_ratio", "macd_hist_pct", "rsi", "h4_ema_ratio")


@dataclass(frozen=True, slots=True)
class TrendParams:
    ema_weight: float = 1.0
    macd_weight: float = 1.0
    rsi_weight: float = 1.0
    h4_weight: float = 1.0  # 0 turns the 4h confirmation off
    rsi_band: float = 5.0
    rsi_overbought: float = 70.0
    rsi_oversold: float = 30.0
    entry_score: float = 0.5
    exit_score: float = 0.0
    allow_short: bool = False

    def __post_init__(self) -> None:
        weights = (self.ema_weight, self.macd_weight, self.rsi_weight, self.h4_weight)
        if any(w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(f"weights must be >= 0 and not all 0, got {weights}")
        if not 0.0 <= self.rsi_band < 50.0:
            raise ValueError(f"rsi_band must be in [0, 50), got {self.rsi_band}")
        if not 0.0 <= self.rsi_oversold < 50.0 < self.rsi_overbought <= 100.0:
            raise ValueError(f"need 0 <= rsi_oversold ({self.rsi_oversold}) < 50 < "
                             f"rsi_overbought ({self.rsi_overbought}) <= 100")
        if not 0.0 < self.entry_score <= 1.0:
            raise ValueError(f"entry_score must be in (0, 1], got {self.entry_score}")
        if not -1.0 <= self.exit_score < self.entry_score:
            raise ValueError(f"exit_score must be in [-1, entry_score), got {self.exit_score}")


def _sign(x: float) -> int:
    return 1 if x > 0.0 else -1 if x < 0.0 else 0


@dataclass(slots=True)
class TrendRules:
    """One symbol's rule state: the position the rules hold (LONG, SHORT or FLAT)."""

    params: TrendParams
    state: int = FLAT

    def score(self, ema_ratio: float, macd_hist_pct: float, rsi: float,
              h4_ema_ratio: float) -> tuple[float, str]:
        """The weighted score and the votes as text (NaN inputs abstain)."""
        p = self.params
        band = p.rsi_band
        votes = (
            ("ema", p.ema_weight, ema_ratio, _sign(ema_ratio)),
            ("macd", p.macd_weight, macd_hist_pct, _sign(macd_hist_pct)),
            ("rsi", p.rsi_weight, rsi, 1 if rsi > 50.0 + band else -1 if rsi < 50.0 - band else 0),
            ("h4", p.h4_weight, h4_ema_ratio, _sign(h4_ema_ratio)),
        )
        total = weight = 0.0
        parts = []
        for name, w, x, vote in votes:
            if w == 0.0 or math.isnan(x):
                continue
            total += w * vote
            weight += w
            parts.append(f"{name} {vote:+d}")
        if weight == 0.0:
            return math.nan, "no votes"
        return total / weight, ", ".join(parts)

    def update(self, ema_ratio: float, macd_hist_pct: float, rsi: float,
               h4_ema_ratio: float = math.nan) -> Vote | None:
        score, votes = self.score(ema_ratio, macd_hist_pct, rsi, h4_ema_ratio)
        if math.isnan(score):
            return None
        p = self.params
        target = self.state
        exits = ((self.state == LONG and score <= p.exit_score)
                 or (self.state == SHORT and score >= -p.exit_score))
        if exits:
            target = FLAT
        if target == FLAT:
            if score >= p.entry_score and not rsi >= p.rsi_overbought:
                target = LONG
            elif p.allow_short and score <= -p.entry_score and not rsi <= p.rsi_oversold:
                target = SHORT
        if target == self.state:
            return None
        self.state = target
        name = {LONG: "long", SHORT: "short", FLAT: "flat"}[target]
        return Vote(target, min(1.0, abs(score)),
                    f"{votes} -> score {score:+.2f}: {name}; rsi {rsi:.1f}")


def row_inputs(values: Sequence[float], spec: FeatureSet) -> tuple[float, float, float, float]:
    """The rule inputs from a feature row of `spec` (by column name, never by position)."""
    return tuple(values[spec.index(c)] for c in INPUTS)  # type: ignore[return-value]


def trend_events(matrix: npt.NDArray[np.float64], spec: FeatureSet, params: TrendParams,
                 ready: npt.NDArray[np.bool_] | None = None,
                 ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Every state change over one symbol's feature rows: (row index, direction, strength).

    Rows not `ready` (default: any non-context column NaN) are skipped, as the service skips
    features messages that are not ready."""
    if ready is None:
        technical = [spec.index(c) for c in spec.columns if c not in spec.context]
        ready = ~np.isnan(matrix[:, technical]).any(axis=1)
    cols = [spec.index(c) for c in INPUTS]
    rules = TrendRules(params)
    rows, directions, strengths = [], [], []
    for i in np.flatnonzero(ready).tolist():
        e, m, r, h = (float(matrix[i, c]) for c in cols)
        vote = rules.update(e, m, r, h)
        if vote is not None:
            rows.append(i)
            directions.append(vote.direction)
            strengths.append(vote.strength)
    return (np.asarray(rows, dtype=np.int64), np.asarray(directions, dtype=np.int64),
            np.asarray(strengths, dtype=np.float64))


# --------------------------------------------------------------------------- batch form
#
# The same rules over whole arrays, for parameter sweeps: rows are candles in time order,
# columns are independent rule instances (one per symbol x parameter combination). Everything
# that does not depend on the state (votes, score, the entry and exit conditions) is computed
# for all rows at once; the hysteresis is then one loop over the rows with numpy operations
# across all columns, because a state depends on the one before it. Arithmetic is done in the
# same order as `TrendRules.score` (weights summed vote by vote, an abstaining vote adding 0.0),
# so the scores, and hence every decision, are bit-identical to the row-by-row rules
# (test_trend_batch.py proves it on real data and on random inputs with NaNs).
#
# States are signed positions, int8: +1 long, -1 short, 0 flat (not Direction enum values), so
# that a state column is directly the position's sign.

STATE_LONG, STATE_FLAT, STATE_SHORT = np.int8(1), np.int8(0), np.int8(-1)
_FIELDS = ("ema_weight", "macd_weight", "rsi_weight", "h4_weight", "rsi_band", "rsi_overbought",
           "rsi_oversold", "entry_score", "exit_score", "allow_short")
FloatArray = npt.NDArray[np.float64]


def _param_arrays(params: TrendParams | Sequence[TrendParams],
                  cols: int | None) -> dict[str, npt.NDArray[np.float64]]:
    """Each TrendParams field as a row vector with one entry per column (a single TrendParams
    serves every column). Validation is TrendParams' own: each element was built as one."""
    if isinstance(params, TrendParams):
        params = [params] * (cols or 1)
    if cols is not None and len(params) not in (1, cols):
        raise ValueError(f"{len(params)} TrendParams for {cols} columns")
    if cols is not None and len(params) == 1:
        params = list(params) * cols
    return {f: np.array([float(getattr(p, f)) for p in params])[None, :] for f in _FIELDS}


def _inputs(arrays: Sequence[npt.ArrayLike]) -> list[FloatArray]:
    """The four inputs as 2-D float arrays broadcast to one (rows, columns) shape; a 1-D input
    is one column shared by all."""
    out = []
    for a in arrays:
        x = np.asarray(a, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise ValueError(f"rule inputs must be 1-D or 2-D, got shape {x.shape}")
        out.append(x)
    return list(np.broadcast_arrays(*out))


def _vote(x: FloatArray, up: FloatArray | float, down: FloatArray | float,
          ) -> tuple[FloatArray, FloatArray]:
    """(+1 above `up`, -1 below `down`, else 0; and 1.0 where the input is there): a NaN input
    votes 0 with count 0, so `w * vote` and `w * count` add exactly the 0.0 that skipping an
    abstaining vote adds in `TrendRules.score`."""
    vote = (x > up).astype(np.float64) - (x < down)
    return vote, (~np.isnan(x)).astype(np.float64)


def trend_scores(ema_ratio: npt.ArrayLike, macd_hist_pct: npt.ArrayLike, rsi: npt.ArrayLike,
                 h4_ema_ratio: npt.ArrayLike,
                 params: TrendParams | Sequence[TrendParams]) -> FloatArray:
    """`TrendRules.score` for every row and column (NaN where no vote has an input).

    Products w x vote are exactly +-w or 0.0 and are summed in the rules' order (ema, macd,
    rsi, h4), so each score is the same float `TrendRules.score` computes."""
    e, m, r, h = _inputs((ema_ratio, macd_hist_pct, rsi, h4_ema_ratio))
    p = _param_arrays(params, None if isinstance(params, TrendParams) else len(params))
    band = p["rsi_band"]
    try:
        shape = np.broadcast_shapes(e.shape, band.shape)
    except ValueError:
        raise ValueError(f"{band.shape[1]} parameter columns for inputs with {e.shape[1]} "
                         "columns") from None
    votes = ((p["ema_weight"], _vote(e, 0.0, 0.0)), (p["macd_weight"], _vote(m, 0.0, 0.0)),
             (p["rsi_weight"], _vote(r, 50.0 + band, 50.0 - band)),
             (p["h4_weight"], _vote(h, 0.0, 0.0)))
    total: FloatArray = np.zeros(shape)
    weight: FloatArray = np.zeros(shape)
    term: FloatArray = np.empty(shape)
    for w, (vote, count) in votes:
        if not w.any():
            continue  # weight 0 everywhere: never a vote
        np.multiply(w, vote, out=term)
        total += term
        np.multiply(w, count, out=term)
        weight += term
    score: FloatArray = np.full(shape, np.nan)
    np.divide(total, weight, out=score, where=weight != 0.0)
    return score


def trend_states(ema_ratio: npt.ArrayLike, macd_hist_pct: npt.ArrayLike, rsi: npt.ArrayLike,
                 h4_ema_ratio: npt.ArrayLike, params: TrendParams | Sequence[TrendParams],
                 ready: npt.ArrayLike | None = None) -> npt.NDArray[np.int8]:
    """The state `TrendRules.update` holds after each row, for every column (int8 +1/0/-1).

    Inputs are (rows, columns) arrays, or 1-D (one column for all); `params` is one TrendParams
    for every column or one per column. Rows where `ready` is False are skipped (the state
    carries over), as `trend_events` skips rows that are not ready; a row whose score is NaN
    (every vote abstains) changes nothing, as `update` returns None for it.
    """
    score = trend_scores(ema_ratio, macd_hist_pct, rsi, h4_ema_ratio, params)
    rows, cols = score.shape
    p = _param_arrays(params, cols)
    r = np.broadcast_to(_inputs((rsi,))[0], score.shape)
    usable = np.ones(score.shape, dtype=bool)
    if ready is not None:
        flags = np.asarray(ready, dtype=bool)
        usable &= flags[:, None] if flags.ndim == 1 else flags
    entry, exit_ = p["entry_score"], p["exit_score"]
    # NaN scores compare False everywhere below, so such rows leave the state unchanged.
    can_long = usable & (score >= entry) & ~(r >= p["rsi_overbought"])
    can_short = usable & ~can_long & (p["allow_short"] != 0.0) & (score <= -entry) \
        & ~(r <= p["rsi_oversold"])
    long_exit = usable & (score <= exit_)
    short_exit = usable & (score >= -exit_)
    out = np.empty((rows, cols), dtype=np.int8)
    state = np.zeros(cols, dtype=np.int8)
    for i in range(rows):
        leave = ((state == STATE_LONG) & long_exit[i]) | ((state == STATE_SHORT) & short_exit[i])
        flat = (state == STATE_FLAT) | leave
        state = np.where(flat & can_long[i], STATE_LONG,
                         np.where(flat & can_short[i], STATE_SHORT,
                                  np.where(leave, STATE_FLAT, state)))
        out[i] = state
    return out
