"""Circuit breakers: conditions on the whole account that stop new risk, escalating.

Checked at every candle in event time (so a replay trips them at the same candle every run):

| breaker | trips when |
|---|---|
| portfolio.max_drawdown | equity is more than max_drawdown below its peak |
| system.daily_loss | equity is more than daily_loss_limit below the UTC day's first value |
| system.price_spike | a close moved more than price_spike_pct_per_min %/min from the last |
| system.error_rate | (order.event.v1) the share of rejected or unknown orders among the last ones |

Equity is the gate's own: initial capital + the PnL of the trades it approved at their
reference prices (realized) + open positions marked at the last close. Fees, slippage and
funding are not in it (they are the ledger's; this is the gate's estimate, always available).

Escalation: a trip while normal pauses entries for pause_hours. When a pause ends, a breaker
still tripped moves to reduce (entries sized x reduce_factor, and only while no breaker is
tripped) for reduce_hours; when that ends with a breaker still tripped, every position is closed
and the kill switch engaged (close all and stop); otherwise the level goes back to normal. While
paused or reducing, new trips do not escalate faster: the level is already answering. Clearing
the kill switch (an operator) returns to normal and re-bases the peak and the day's start at the
equity of that moment, or the drawdown would trip again at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum

from meridian_common.money import MONEY_CONTEXT, ZERO, to_str
from meridian_risk.ledger import DAY_MS, HOUR_MS, utc
from meridian_risk.market import Move
from meridian_risk.settings import RiskSettings

# Every breaker by the name its trips carry (a fixed set: the `breaker` label of the metrics).
DRAWDOWN, DAILY_LOSS = "portfolio.max_drawdown", "system.daily_loss"
PRICE_SPIKE, ERROR_RATE = "system.price_spike", "system.error_rate"
BREAKERS = (DRAWDOWN, DAILY_LOSS, PRICE_SPIKE, ERROR_RATE)


class Level(IntEnum):
    NORMAL = 0
    PAUSE = 1
    REDUCE = 2
    CLOSE = 3


@dataclass(frozen=True, slots=True)
class Trip:
    """A breaker that is tripped: its name and the numbers it compared."""

    breaker: str
    detail: str


@dataclass(frozen=True, slots=True)
class Change:
    """A change of level: what the handler announces (and acts on, for CLOSE)."""

    time_ms: int
    level: Level
    until_ms: int  # end of a PAUSE or REDUCE period, 0 otherwise
    trips: tuple[Trip, ...]  # what tripped (empty when returning to normal)

    @property
    def reason(self) -> str:
        if not self.trips:
            return "no breaker tripped"
        return "; ".join(f"{t.breaker}: {t.detail}" for t in self.trips)


@dataclass(slots=True)
class Breakers:
    settings: RiskSettings
    level: Level = Level.NORMAL
    until_ms: int = 0
    cause: str = ""  # the trips that set the current level
    peak: Decimal = ZERO
    day: int = -1
    day_start: Decimal = ZERO
    equity: Decimal = ZERO
    # the last order outcomes (True = rejected or unknown) for the error-rate breaker
    outcomes: deque[bool] = field(default_factory=deque)
    spike: Trip | None = None  # the spike of the current candle time, if any
    _spike_time: int = -1

    # -- inputs ------------------------------------------------------------------------------

    def move(self, time_ms: int, move: Move | None) -> None:
        """A candle's move (before `check` at the same time)."""
        limit = self.settings.price_spike_pct_per_min
        if time_ms != self._spike_time:
            self.spike, self._spike_time = None, time_ms
        if move is None or limit <= 0:
            return
        rate = move.pct_per_min
        if rate > float(limit):
            self.spike = Trip(PRICE_SPIKE,
                              f"{move.key} {to_str(move.previous)} -> {to_str(move.close)} in "
                              f"{move.minutes:g} min = {rate:.4f} %/min vs max "
                              f"{to_str(limit)} %/min")

    def order_outcome(self, failed: bool) -> None:
        window = self.settings.error_rate_window
        self.outcomes.append(failed)
        while len(self.outcomes) > window:
            self.outcomes.popleft()

    # -- conditions --------------------------------------------------------------------------

    def drawdown(self) -> Decimal:
        if self.peak <= 0:
            return ZERO
        return MONEY_CONTEXT.divide(MONEY_CONTEXT.subtract(self.peak, self.equity), self.peak)

    def day_loss(self) -> Decimal:
        if self.day_start <= 0:
            return ZERO
        return MONEY_CONTEXT.divide(MONEY_CONTEXT.subtract(self.day_start, self.equity),
                                    self.day_start)

    # One predicate per breaker, read by the level machine (`tripped`, `trips`) and by the
    # rules that report the same conditions in every decision.

    def drawdown_tripped(self) -> bool:
        high = self.settings.max_drawdown
        return high < 1 and self.drawdown() > high

    def day_loss_tripped(self) -> bool:
        high = self.settings.daily_loss_limit
        return high < 1 and self.day_loss() > high

    def error_rate_tripped(self) -> bool:
        s, n = self.settings, len(self.outcomes)
        return s.error_rate_max < 1 and n >= s.error_rate_window and (
            sum(self.outcomes) / n > s.error_rate_max)

    def tripped(self) -> bool:
        """Whether any breaker is tripped (what every candle asks; `trips` says why)."""
        return (self.spike is not None or self.drawdown_tripped() or self.day_loss_tripped()
                or self.error_rate_tripped())

    def trips(self) -> list[Trip]:
        s, out = self.settings, []
        if self.drawdown_tripped():
            out.append(Trip(DRAWDOWN,
                            f"equity {to_str(_q(self.equity))} is {to_str(_q4(self.drawdown()))} "
                            f"below peak {to_str(_q(self.peak))} vs max "
                            f"{to_str(s.max_drawdown)}"))
        if self.day_loss_tripped():
            out.append(Trip(DAILY_LOSS,
                            f"equity {to_str(_q(self.equity))} is {to_str(_q4(self.day_loss()))} "
                            f"below the day's start {to_str(_q(self.day_start))} vs max "
                            f"{to_str(s.daily_loss_limit)}"))
        if self.spike is not None:
            out.append(self.spike)
        if self.error_rate_tripped():
            out.append(Trip(ERROR_RATE,
                            f"{sum(self.outcomes)} of the last {len(self.outcomes)} orders "
                            f"rejected or unknown vs max share {to_str(s.error_rate_max)}"))
        return out

    def active(self) -> frozenset[str]:
        """The breakers that are tripped now, and those whose trip set the current level (a
        spike lasts one candle but pauses entries for hours; a level restored after a restart
        names its causes only in its reason): what an operator sees as "this breaker acts"."""
        now = {t.breaker for t in self.trips()}
        if self.level != Level.NORMAL:
            now |= {b for b in BREAKERS if f"{b}:" in self.cause}
        return frozenset(now)

    # -- the state machine -------------------------------------------------------------------

    def check(self, time_ms: int, equity: Decimal) -> Change | None:
        """Update equity, peak and the day's start at `time_ms`; the change of level, if any."""
        self.equity = equity
        day = time_ms // DAY_MS
        if day != self.day:
            self.day, self.day_start = day, equity
        self.peak = max(self.peak, equity)
        s = self.settings
        if self.level == Level.CLOSE:
            return None  # stopped until an operator clears the kill switch
        if self.level == Level.NORMAL:
            if self.tripped():
                return self._set(time_ms, Level.PAUSE, time_ms + int(s.pause_hours * HOUR_MS),
                                 self.trips())
            return None
        if time_ms < self.until_ms:
            return None
        trips = self.trips()
        if not trips:
            return self._set(time_ms, Level.NORMAL, 0, [])
        if self.level == Level.PAUSE:
            return self._set(time_ms, Level.REDUCE, time_ms + int(s.reduce_hours * HOUR_MS),
                             trips)
        return self._set(time_ms, Level.CLOSE, 0, trips)

    def _set(self, time_ms: int, level: Level, until_ms: int, trips: list[Trip]) -> Change:
        change = Change(time_ms, level, until_ms, tuple(trips))
        self.apply(level, until_ms, change.reason)
        return change

    def apply(self, level: Level, until_ms: int, cause: str) -> None:
        """Take a level (also how a restart restores the last announced one)."""
        self.level, self.until_ms, self.cause = level, until_ms, cause

    def cleared(self) -> bool:
        """The kill switch was cleared by an operator: trade again, from today's equity.
        True when that ends a close-all (the level goes back to normal)."""
        self.outcomes.clear()
        if self.level != Level.CLOSE:
            return False
        self.apply(Level.NORMAL, 0, "")
        self.peak = self.day_start = self.equity
        return True

    # -- what a decision reports ---------------------------------------------------------------

    def size_factor(self) -> Decimal:
        return self.settings.reduce_factor if self.level == Level.REDUCE else Decimal(1)

    def describe(self) -> str:
        if self.level == Level.NORMAL:
            return "normal"
        if self.level == Level.CLOSE:
            return f"closed all and stopped: {self.cause}"
        verb = "entries paused" if self.level == Level.PAUSE else (
            f"entries sized x{to_str(self.settings.reduce_factor)}")
        return f"{verb} until {utc(self.until_ms)}: {self.cause}"


def _q(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), context=MONEY_CONTEXT)


def _q4(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.0001"), context=MONEY_CONTEXT)
