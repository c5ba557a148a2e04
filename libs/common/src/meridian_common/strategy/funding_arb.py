"""Funding-rate arbitrage rules: when to hold a delta-neutral spot/perpetual pair, and how big.

The pair:
- CARRY (+1): long spot, short perpetual. Earns the funding when the rate is positive (longs pay
  shorts); the spot and perp price moves cancel except for the basis (perp - spot).
- REVERSE (-1): short spot (borrowed), long perpetual. Earns when the rate is negative; only when
  `allow_reverse` (shorting spot needs a borrow, which costs).

Honesty (what a decision at time t may know): only settlements with time <= t, fed in time
order through `observe`, and the predicted rate for the NEXT settlement. On Binance that
prediction is published during the interval; the shared data holds settled rates only, so the
honest proxy used by research is the last settled rate (`step(t, rate)` passes the settled rate
at t as the prediction). A live service passes the exchange's published prediction instead.
The rules hold no reference to any later value, so changing a future rate can never change an
earlier decision (tested).

Baseline (`improved=False`, kept exactly): flat -> CARRY when predicted >= `entry_rate`
(REVERSE when predicted <= -entry_rate and allowed); exit when direction * predicted <
`exit_rate` (hysteresis: exit_rate < entry_rate, so a rate hovering at the threshold does not
churn, every round trip paying fees on two legs). Fixed size `notional`.

Improved (`improved=True`), per direction d (the one being considered or held):
- level = clip(d * predicted / level_full, 0, 1): how far the rate is into carry territory;
- trend = 0.5 + 0.5 * clip(d * (EMA_fast - EMA_slow) / trend_scale, -1, 1) over the settled
  rates (`meridian_common.indicators.Ema`): a rising rate is worth more than a fading one;
- persistence = (settlements among the last `persistence_window` with d * rate >=
  entry_rate) / window (a short history counts over the full window, so it starts low): a rate
  that stayed elevated tends to stay (funding is autocorrelated), a one-off spike does not pay
  back the four fees of a round trip;
- score = weighted mean of the components that are ready (an EMA still warming up abstains).
Entry when the baseline would enter (d * predicted >= entry_rate) AND score >= `entry_score`:
the score only filters. Exit when d * EMA_fast < `exit_rate` (the predicted rate until the EMA
is ready) or score < `exit_score`: one print below the exit threshold that reverts at the next
settlement does not force a round trip (the baseline's main cost), a sustained fall does.
Conviction-scaled size: notional * (min_scale + (max_scale - min_scale) * conviction),
conviction = (score - entry_score) / (1 - entry_score) clipped to [0, 1], scaled down by the
drawdown steps (portfolio drawdown from its running peak).

Both variants: the target notional is capped so that the portfolio's open notional (one leg,
all symbols, at entry prices) never exceeds `exposure_cap` -- a risk limit, not a strategy
feature -- and the size is Decimal, quantized to the cash quantum. Sizes are fixed at entry (no
rebalancing); the pair is delta-neutral, so a price move changes the marked notional but not
the risk the cap is about (capital committed to the trade).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from meridian_common.indicators import Ema
from meridian_common.money import ZERO, cash

CARRY, REVERSE, FLAT = 1, -1, 0
ENTER, EXIT, HOLD, STAY_FLAT = "enter", "exit", "hold", "flat"
_ONE = Decimal(1)
_SCORE_QUANTUM = Decimal("0.000001")


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


@dataclass(frozen=True, slots=True)
class FundingArbParams:
    """Rates are per 8h funding interval as fractions (0.0001 = 0.01 %); money in quote."""

    entry_rate: float = 0.0001
    exit_rate: float = 0.00003
    allow_reverse: bool = False
    improved: bool = False
    # 2 days, 7 days, 7 days of settlements: a round trip's four fees (~0.3 %) take one to
    # three weeks of typical funding to earn back, so the rules look at that horizon
    fast_span: int = 6
    slow_span: int = 21
    persistence_window: int = 21
    level_full: float = 0.0003
    trend_scale: float = 0.00005
    weight_level: float = 0.4
    weight_trend: float = 0.2
    weight_persistence: float = 0.4
    entry_score: float = 0.6
    exit_score: float = 0.1
    notional: Decimal = Decimal(10_000)
    min_scale: Decimal = Decimal("0.5")
    max_scale: Decimal = Decimal("1.5")
    exposure_cap: Decimal = Decimal(20_000)
    # (portfolio drawdown at or above, size multiplier), thresholds ascending
    drawdown_steps: tuple[tuple[Decimal, Decimal], ...] = (
        (Decimal("0.01"), Decimal("0.5")), (Decimal("0.02"), Decimal(0)))

    def __post_init__(self) -> None:
        self._check_rates()
        self._check_score()
        self._check_money()

    def _check_rates(self) -> None:
        if not 0.0 <= self.exit_rate < self.entry_rate < 0.01:
            raise ValueError(f"need 0 <= exit_rate ({self.exit_rate}) < entry_rate "
                             f"({self.entry_rate}) < 0.01 per interval")
        if not 1 <= self.fast_span < self.slow_span:
            raise ValueError(f"need 1 <= fast_span ({self.fast_span}) < slow_span "
                             f"({self.slow_span})")
        if self.persistence_window < 1:
            raise ValueError(f"persistence_window must be >= 1, got {self.persistence_window}")
        if self.level_full <= 0.0 or self.trend_scale <= 0.0:
            raise ValueError("level_full and trend_scale must be > 0")

    def _check_score(self) -> None:
        weights = (self.weight_level, self.weight_trend, self.weight_persistence)
        if any(w < 0 for w in weights) or self.weight_level + self.weight_persistence == 0:
            raise ValueError(f"weights must be >= 0 with level or persistence > 0, got {weights}")
        if not 0.0 <= self.exit_score < self.entry_score < 1.0:
            raise ValueError(f"need 0 <= exit_score ({self.exit_score}) < entry_score "
                             f"({self.entry_score}) < 1")

    def _check_money(self) -> None:
        if self.notional <= 0 or self.exposure_cap <= 0:
            raise ValueError("notional and exposure_cap must be > 0")
        if not ZERO < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale ({self.min_scale}) <= max_scale "
                             f"({self.max_scale})")
        previous_dd, previous_mult = ZERO, _ONE
        for dd, mult in self.drawdown_steps:
            if not (previous_dd < dd < _ONE and ZERO <= mult <= previous_mult):
                raise ValueError("drawdown_steps: thresholds ascending in (0, 1), multipliers "
                                 f"non-increasing in [0, 1], got {self.drawdown_steps}")
            previous_dd, previous_mult = dd, mult


@dataclass(frozen=True, slots=True)
class Features:
    """What the improved score is built from, at one settlement; None while warming up."""

    fast: float | None
    slow: float | None
    elevated_carry: int  # settlements in the persistence window with rate >= entry_rate
    elevated_reverse: int  # ... with -rate >= entry_rate


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision: `action` ENTER/EXIT/HOLD/STAY_FLAT, the direction held after it (or, for
    EXIT, the one left), the score (1.0/0.0 for the baseline's pass/fail), and why."""

    time_ms: int
    action: str
    direction: int
    predicted: float
    score: float
    reason: str


def drawdown_multiplier(params: FundingArbParams, drawdown: Decimal) -> Decimal:
    """The size multiplier of the deepest drawdown step reached (1 above every step)."""
    mult = _ONE
    for threshold, step_mult in params.drawdown_steps:
        if drawdown >= threshold:
            mult = step_mult
    return mult


def target_notional(params: FundingArbParams, score: float, equity: Decimal,
                    peak_equity: Decimal, open_exposure: Decimal) -> Decimal:
    """Notional (one leg) for a new entry: fixed (baseline) or conviction-scaled and drawdown-
    scaled (improved), then capped so that `open_exposure` (the other positions) plus it stays
    within `exposure_cap`. Decimal throughout; the score enters quantized to 1e-6."""
    if params.improved:
        conviction = Decimal(repr(_clip((score - params.entry_score)
                                        / (1.0 - params.entry_score), 0.0, 1.0)))
        conviction = conviction.quantize(_SCORE_QUANTUM)
        scale = params.min_scale + (params.max_scale - params.min_scale) * conviction
        drawdown = (ZERO if peak_equity <= 0 else
                    max(ZERO, (peak_equity - equity) / peak_equity))
        size = params.notional * scale * drawdown_multiplier(params, drawdown)
    else:
        size = params.notional
    room = max(ZERO, params.exposure_cap - open_exposure)
    return cash(min(size, room))


@dataclass(slots=True)
class FundingArbRules:
    """One symbol's streaming rule state. Feed settled rates in time order with `observe`, then
    `decide` with the predicted next rate; `step` does both with the honest proxy."""

    params: FundingArbParams
    direction: int = FLAT
    last_time_ms: int | None = None
    fast: Ema = field(init=False)
    slow: Ema = field(init=False)
    recent: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.fast = Ema(self.params.fast_span)
        self.slow = Ema(self.params.slow_span)
        self.recent = deque(maxlen=self.params.persistence_window)

    def observe(self, time_ms: int, settled_rate: float) -> None:
        """Take the settlement at `time_ms` (strictly after the previous one)."""
        if self.last_time_ms is not None and time_ms <= self.last_time_ms:
            raise ValueError(f"settlement at {time_ms} is not after {self.last_time_ms}")
        self.last_time_ms = time_ms
        self.fast.update(settled_rate)
        self.slow.update(settled_rate)
        self.recent.append(settled_rate)

    def features(self) -> Features:
        entry = self.params.entry_rate
        return Features(self.fast.value, self.slow.value,
                        sum(1 for r in self.recent if r >= entry),
                        sum(1 for r in self.recent if -r >= entry))

    def score(self, direction: int, predicted: float) -> tuple[float, str]:
        """The improved composite score for `direction` and its explanation."""
        p = self.params
        feats = self.features()
        parts = [(p.weight_level, _clip(direction * predicted / p.level_full, 0.0, 1.0),
                  "level")]
        if feats.fast is not None and feats.slow is not None:
            slope = direction * (feats.fast - feats.slow) / p.trend_scale
            parts.append((p.weight_trend, 0.5 + 0.5 * _clip(slope, -1.0, 1.0), "trend"))
        elevated = feats.elevated_carry if direction == CARRY else feats.elevated_reverse
        parts.append((p.weight_persistence, elevated / p.persistence_window, "persistence"))
        total = sum(w for w, _, _ in parts if w > 0)
        value = sum(w * c for w, c, _ in parts if w > 0) / total
        reason = " ".join(f"{name}={c:.3f}" for _, c, name in parts)
        return value, f"score={value:.3f} ({reason})"

    def _entry(self, predicted: float) -> tuple[int, float, str]:
        """The direction to enter (FLAT for none), its score and the reason."""
        p = self.params
        candidates = (CARRY, REVERSE) if p.allow_reverse else (CARRY,)
        for d in candidates:
            if d * predicted < p.entry_rate:
                continue
            if not p.improved:
                return d, 1.0, f"predicted {predicted:.6g} beyond entry {d * p.entry_rate:g}"
            value, why = self.score(d, predicted)
            if value >= p.entry_score:
                return d, value, f"{why} >= entry_score {p.entry_score:g}"
            return FLAT, value, f"{why} < entry_score {p.entry_score:g}: no entry"
        return FLAT, 0.0, f"predicted {predicted:.6g} within +-entry {p.entry_rate:g}: no entry"

    def _exit(self, predicted: float) -> tuple[bool, float, str]:
        """Whether the held position should go, its score and the reason."""
        p, d = self.params, self.direction
        if not p.improved:
            if d * predicted < p.exit_rate:
                return True, 0.0, f"predicted {predicted:.6g} past exit {d * p.exit_rate:g}"
            return False, 1.0, f"predicted {predicted:.6g} still beyond exit {d * p.exit_rate:g}"
        fast = self.fast.value
        gauge, name = (predicted, "predicted") if fast is None else (fast, "EMA_fast")
        value, why = self.score(d, predicted)
        if d * gauge < p.exit_rate:
            return True, value, f"{name} {gauge:.6g} past exit {d * p.exit_rate:g}; {why}"
        if value < p.exit_score:
            return True, value, f"{why} < exit_score {p.exit_score:g}"
        return False, value, why

    def decide(self, time_ms: int, predicted: float) -> Decision:
        """The decision at `time_ms` (no earlier than the last observed settlement)."""
        if self.last_time_ms is not None and time_ms < self.last_time_ms:
            raise ValueError(f"decision at {time_ms} is before settlement {self.last_time_ms}")
        if self.direction == FLAT:
            d, value, why = self._entry(predicted)
            self.direction = d
            return Decision(time_ms, ENTER if d else STAY_FLAT, d, predicted, value, why)
        leave, value, why = self._exit(predicted)
        held = self.direction
        if leave:
            self.direction = FLAT
            return Decision(time_ms, EXIT, held, predicted, value, why)
        return Decision(time_ms, HOLD, held, predicted, value, why)

    def step(self, time_ms: int, settled_rate: float) -> Decision:
        """Observe the settlement at `time_ms` and decide with it as the predicted next rate
        (the honest proxy when only settled rates are known)."""
        self.observe(time_ms, settled_rate)
        return self.decide(time_ms, settled_rate)

    def force_flat(self) -> None:
        """The position was closed outside the rules (end of a backtest window)."""
        self.direction = FLAT
