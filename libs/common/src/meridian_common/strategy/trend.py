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
# columns are independent rule instances (one per symbol x parameter combination).
#
# Scores. A row's score depends only on how each of the four votes went (abstained, -1, 0 or
# +1): 4^4 = 256 cases. Each row is reduced to its case (`_cases`, a few comparisons per input),
# and the score of every case is computed once per column (`_case_scores`) with the arithmetic
# of `TrendRules.score` in its order (weights summed vote by vote, an abstaining vote adding
# 0.0), then looked up per row. So the scores, and hence every decision, are bit-identical to
# the row-by-row rules (test_trend_batch.py proves it on real data and on random inputs with
# NaNs), for a fraction of the float work over (rows x columns).
#
# States. The hysteresis makes a state depend on the one before it, but a column's state only
# changes on rows that allow it: from flat, a row whose score allows an entry; from long, a
# row that exits a long; from short, one that exits a short. Every row is reduced to its
# decision bits (`_decisions`: what the row lets a column in each state do), and the states
# are found by jumping from one such row to the next (`_hysteresis`, all columns at once): as
# many steps as the busiest column has state changes, not one per row.
#
# States are signed positions, int8: +1 long, -1 short, 0 flat (not Direction enum values), so
# that a state column is directly the position's sign.

STATE_LONG, STATE_FLAT, STATE_SHORT = np.int8(1), np.int8(0), np.int8(-1)
_FIELDS = ("ema_weight", "macd_weight", "rsi_weight", "h4_weight", "rsi_band", "rsi_overbought",
           "rsi_oversold", "entry_score", "exit_score", "allow_short")
_WEIGHTS = _FIELDS[:4]  # in the order TrendRules.score sums the votes
FloatArray = npt.NDArray[np.float64]
# A row's case: digit k (base 4) is how vote k of _WEIGHTS went: 0 abstained (NaN input),
# 1 voted -1, 2 voted 0, 3 voted +1.
_CASES = 4 ** len(_WEIGHTS)
# A row's key for the decision table: its case, plus these when the RSI vetoes an entry; or
# _NOT_READY for a row that is skipped.
_VETO_LONG, _VETO_SHORT = _CASES, 2 * _CASES
_NOT_READY = 4 * _CASES
# Decision bits of a row: what it lets a column do (given the state before it).
_CAN_LONG, _CAN_SHORT, _LONG_EXIT, _SHORT_EXIT = 1, 2, 4, 8


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


def _shape(inputs: FloatArray, band: FloatArray) -> tuple[int, int]:
    """The (rows, columns) of the result: the inputs' columns against one per TrendParams."""
    try:
        rows, cols = np.broadcast_shapes(inputs.shape, band.shape)
    except ValueError:
        raise ValueError(f"{band.shape[1]} parameter columns for inputs with "
                         f"{inputs.shape[1]} columns") from None
    return rows, cols


def _digit(x: FloatArray, up: FloatArray | float, down: FloatArray | float,
           ) -> npt.NDArray[np.uint8]:
    """How one vote went, as a case digit: (x > up) + (x >= down) + (x is there) is 0 for NaN
    (abstains), 1 below `down` (-1), 2 from `down` to `up` (0), 3 above `up` (+1); up >= down."""
    digit = (x > up).view(np.uint8)
    digit += (x >= down).view(np.uint8)
    digit += (~np.isnan(x)).view(np.uint8)
    return digit


def _cases(e: FloatArray, m: FloatArray, r: FloatArray, h: FloatArray,
           band: FloatArray) -> npt.NDArray[np.uint8]:
    """Each row's case (digits in _WEIGHTS order, ema the lowest), broadcast with `band`."""
    case = _digit(h, 0.0, 0.0)
    for digit in (_digit(r, 50.0 + band, 50.0 - band), _digit(m, 0.0, 0.0), _digit(e, 0.0, 0.0)):
        case = case * np.uint8(4) + digit
    return case


def _case_scores(p: dict[str, FloatArray]) -> FloatArray:
    """(columns of p, _CASES): `TrendRules.score` of every case, NaN where every vote abstains.

    Products w x vote are exactly +-w or 0.0 and are summed in the rules' order (ema, macd,
    rsi, h4) from 0.0, as the row-by-row rules sum them."""
    case = np.arange(_CASES)
    cols = p[_WEIGHTS[0]].shape[1]
    total: FloatArray = np.zeros((cols, _CASES))
    weight: FloatArray = np.zeros((cols, _CASES))
    term: FloatArray = np.empty((cols, _CASES))
    for k, name in enumerate(_WEIGHTS):
        w = p[name].T
        if not w.any():
            continue  # weight 0 everywhere: never a vote
        digit = (case >> (2 * k)) & 3
        vote = np.where(digit == 0, 0.0, digit - 2.0)  # an abstaining vote adds 0.0
        np.multiply(w, vote, out=term)
        total += term
        np.multiply(w, (digit != 0).astype(np.float64), out=term)
        weight += term
    score: FloatArray = np.full((cols, _CASES), np.nan)
    np.divide(total, weight, out=score, where=weight != 0.0)
    return score


def trend_scores(ema_ratio: npt.ArrayLike, macd_hist_pct: npt.ArrayLike, rsi: npt.ArrayLike,
                 h4_ema_ratio: npt.ArrayLike,
                 params: TrendParams | Sequence[TrendParams]) -> FloatArray:
    """`TrendRules.score` for every row and column (NaN where no vote has an input): each row's
    case looked up in its column's scores of the 256 cases (bit-identical, see above)."""
    e, m, r, h = _inputs((ema_ratio, macd_hist_pct, rsi, h4_ema_ratio))
    p = _param_arrays(params, None if isinstance(params, TrendParams) else len(params))
    shape = _shape(e, p["rsi_band"])
    case = np.broadcast_to(_cases(e, m, r, h, p["rsi_band"]), shape)
    table = _case_scores(p)
    if table.shape[0] == 1:
        return table[0][case]  # type: ignore[no-any-return]
    offsets = np.arange(shape[1], dtype=np.intp) * _CASES
    return table.ravel()[case + offsets[None, :]]  # type: ignore[no-any-return]


def _decision_table(p: dict[str, FloatArray]) -> npt.NDArray[np.uint8]:
    """(columns, _NOT_READY + 1): the decision bits of each key, as `TrendRules.update` decides
    them from the score and the RSI (a NaN score allows nothing; a skipped row nothing)."""
    score = _case_scores(p)
    entry, exit_ = p["entry_score"].T, p["exit_score"].T
    table = np.zeros((score.shape[0], _NOT_READY + 1), dtype=np.uint8)
    long_exit = np.where(score <= exit_, _LONG_EXIT, 0)
    short_exit = np.where(score >= -exit_, _SHORT_EXIT, 0)
    for veto in range(4):
        can_long = (score >= entry) & (veto & 1 == 0)
        can_short = ~can_long & (p["allow_short"].T != 0.0) & (score <= -entry) & (veto & 2 == 0)
        bits = np.where(can_long, _CAN_LONG, 0) | np.where(can_short, _CAN_SHORT, 0) \
            | long_exit | short_exit
        table[:, veto * _CASES:(veto + 1) * _CASES] = bits
    # `_hysteresis` relies on a side's entry and exit never sharing a row (TrendParams keeps
    # exit_score below entry_score)
    both = (_CAN_LONG | _LONG_EXIT, _CAN_SHORT | _SHORT_EXIT)
    if any(((table & pair) == pair).any() for pair in both):
        raise ValueError("an entry and an exit of one side on the same score: "
                         "exit_score must be below entry_score")
    return table


def _decisions(e: FloatArray, m: FloatArray, r: FloatArray, h: FloatArray,
               p: dict[str, FloatArray], usable: npt.NDArray[np.bool_] | None,
               shape: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """(columns, rows), column-major: each row's decision bits for each column."""
    # in the inputs' own layout: column-major inputs need no transposing copy below
    key = np.broadcast_to(_cases(e, m, r, h, p["rsi_band"]), shape).astype(np.uint16)
    np.add(key, _VETO_LONG, out=key, where=r >= p["rsi_overbought"])
    np.add(key, _VETO_SHORT, out=key, where=r <= p["rsi_oversold"])
    if usable is not None:
        np.copyto(key, _NOT_READY, where=~usable)
    by_column = np.ascontiguousarray(key.T)
    table = _decision_table(p)
    out = np.empty(by_column.shape, dtype=np.uint8)
    for j in range(shape[1]):
        np.take(table[j], by_column[j], out=out[j])
    return out


def _hysteresis(decisions: npt.NDArray[np.uint8]) -> npt.NDArray[np.int8]:
    """(columns, rows) states from (columns, rows) decision bits.

    A state changes only on a row with the bit its state looks for (flat: an entry; long: a
    long exit; short: a short exit), and there becomes +1 if the row allows a long, -1 if it
    allows a short, else 0: what `update` does, as leaving and entering happen on one row. So
    each column jumps from one such row (an event) to the next.

    Only the first row of each run of a bit is ever jumped to: the row a state begins on never
    has the bit that state looks for (an entry needs score >= entry_score, or <= -entry_score
    for a short, and the exit of that side score <= exit_score, or >= -exit_score, with
    exit_score < entry_score), nor does the row before a column's first; so the next row with
    the bit after it starts a run. Those rows are the events, kept as one sorted array of keys
    per state, the three laid end to end (flat index + (state + 1) x size). Where each event
    leads (the next event of its column for the state it leaves the column in) is found for
    all events at once; the columns' paths are then followed from their first event, one
    lookup per step."""
    cols, rows = decisions.shape
    size = cols * rows
    fresh = decisions.copy()
    fresh[:, 1:] &= ~decisions[:, :-1]
    starts = np.flatnonzero(fresh)
    found = fresh.reshape(-1)[starts]
    groups = [starts[found & bit != 0] for bit in (_SHORT_EXIT, _CAN_LONG | _CAN_SHORT,
                                                   _LONG_EXIT)]  # looked for from -1, 0, +1
    at = np.concatenate(groups)  # flat index of each event
    before = np.repeat(np.arange(-1, 2, dtype=np.int8), [g.size for g in groups])
    bits = np.arange(_SHORT_EXIT << 1)
    after = ((bits & _CAN_LONG != 0).astype(np.int8) - (bits & _CAN_SHORT != 0)).astype(np.int8)
    new = after[decisions.reshape(-1)[at]]
    end = at.size  # "no further event"; also the index of the keys' sentinel
    keys = np.append(at + (before.astype(np.int64) + 1) * size, 3 * size)

    def first_after(state: npt.NDArray[np.int8], pos: npt.NDArray[np.int64],
                    stop: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """The event a column in `state` finds from flat index pos (before stop), or end."""
        offset = (state.astype(np.int64) + 1) * size
        i = np.searchsorted(keys, offset + pos)
        return np.where(keys[i] - offset < stop, i, end)

    column_end = (at // rows + 1) * rows
    leads_to = np.append(first_after(new, at + 1, column_end), end)
    first = np.arange(cols, dtype=np.int64) * rows
    step = first_after(np.zeros(cols, dtype=np.int8), first, first + rows)
    path = []
    step = step[step != end]
    while step.size:
        path.append(step)
        step = leads_to[step]
        step = step[step != end]
    delta = np.zeros(size, dtype=np.int8)
    if path:
        taken = np.concatenate(path)
        delta[at[taken]] = new[taken] - before[taken]
    return np.cumsum(delta.reshape(cols, rows), axis=1, dtype=np.int8)


def trend_states(ema_ratio: npt.ArrayLike, macd_hist_pct: npt.ArrayLike, rsi: npt.ArrayLike,
                 h4_ema_ratio: npt.ArrayLike, params: TrendParams | Sequence[TrendParams],
                 ready: npt.ArrayLike | None = None) -> npt.NDArray[np.int8]:
    """The state `TrendRules.update` holds after each row, for every column (int8 +1/0/-1).

    Inputs are (rows, columns) arrays, or 1-D (one column for all); `params` is one TrendParams
    for every column or one per column. Rows where `ready` is False are skipped (the state
    carries over), as `trend_events` skips rows that are not ready; a row whose score is NaN
    (every vote abstains) changes nothing, as `update` returns None for it.
    """
    e, m, r, h = _inputs((ema_ratio, macd_hist_pct, rsi, h4_ema_ratio))
    given = _param_arrays(params, None if isinstance(params, TrendParams) else len(params))
    shape = _shape(e, given["rsi_band"])
    p = _param_arrays(params, shape[1])  # one entry per column
    usable = None
    if ready is not None:
        flags = np.asarray(ready, dtype=bool)
        usable = flags[:, None] if flags.ndim == 1 else flags
    if 0 in shape:
        return np.zeros(shape, dtype=np.int8)
    states = _hysteresis(_decisions(e, m, r, h, p, usable, shape))
    return np.ascontiguousarray(states.T)
