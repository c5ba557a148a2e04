"""The gate's view of each strategy's trades: what the strategy-layer rules judge from.

A trade opens with an approved entry (its approved quantity at the signal's reference price,
averaged in as the book does) and closes with the approved order that takes the position flat
(a reduce-only exit) or flips it, at that order's reference price. This approximates fills: the
gate does not consume fill or portfolio data yet, so fees, slippage and partial fills are not
seen. A trade belongs to the strategy whose entry opened it, whichever strategy closes it.

Everything here is a function of the approved orders (and the reference prices of their
decisions) only, so `RiskHandler.restore()` rebuilds it from the same topics. Closed trades are
kept in (event time, exit order id) order and the per-strategy figures are computed from that
order, so a restore that reads keys (partitions) interleaved differently yields the same state.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from meridian_common.money import MONEY_CONTEXT, ZERO
from meridian_risk.book import Position

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def utc(ms: int) -> str:
    """Event time as an ISO-8601 UTC timestamp (seconds)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp((ms // DAY_MS) * DAY_MS / 1000, UTC).strftime("%Y-%m-%d")


@dataclass(slots=True)
class OpenTrade:
    strategy: str
    realized: Decimal = ZERO  # PnL of partial reductions so far (the gate emits none today)


@dataclass(frozen=True, slots=True)
class Stats:
    """A strategy's realized figures over its closed trades, in event-time order."""

    trades: int
    losses: int  # consecutive losing trades at the end (a trade with PnL >= 0 resets it)
    last_loss_ms: int | None  # close time of the last of those losses
    equity: Decimal  # initial capital + realized PnL
    peak: Decimal  # highest equity reached (initial capital included)

    @property
    def drawdown(self) -> Decimal:
        """(peak - equity) / peak, a fraction (> 1 once equity is negative)."""
        return MONEY_CONTEXT.divide(MONEY_CONTEXT.subtract(self.peak, self.equity), self.peak)


@dataclass(slots=True)
class Ledger:
    initial_capital: Decimal
    # key -> the trade its open position belongs to
    open: dict[str, OpenTrade] = field(default_factory=dict)
    # (strategy, UTC day number) -> entries approved
    entries: dict[tuple[str, int], int] = field(default_factory=dict)
    # strategy -> closed trades (close time ms, exit client_order_id, PnL), sorted
    closed: dict[str, list[tuple[int, str, Decimal]]] = field(default_factory=dict)
    # PnL of every reduction so far, all strategies (the realized part of the gate's equity)
    realized: Decimal = ZERO
    _stats: dict[str, Stats] = field(default_factory=dict, compare=False, repr=False)

    def entries_on(self, strategy: str, time_ms: int) -> int:
        """Entries approved for `strategy` on the UTC day of `time_ms`."""
        return self.entries.get((strategy, time_ms // DAY_MS), 0)

    def record(self, key: str, strategy: str, position: Position | None, delta: Decimal,
               price: Decimal, time_ms: int, order_id: str, reduce_only: bool) -> None:
        """Book one approved order of signed `delta` at `price` on `key`, whose position before
        the order is `position` (call before the book applies it)."""
        if delta == 0:
            return
        current = position.quantity if position else ZERO
        target = current + delta
        closes = position is not None and (target == 0 or (target > 0) != (current > 0))
        reduced = current if closes else (-delta if abs(target) < abs(current) else ZERO)
        if position is not None and reduced != 0:
            pnl = MONEY_CONTEXT.multiply(reduced, MONEY_CONTEXT.subtract(price, position.entry))
            self.realized = MONEY_CONTEXT.add(self.realized, pnl)
            trade = self.open.pop(key, None) or OpenTrade(strategy)
            trade.realized = MONEY_CONTEXT.add(trade.realized, pnl)
            if closes:
                bisect.insort(self.closed.setdefault(trade.strategy, []),
                              (time_ms, order_id, trade.realized))
                self._stats.pop(trade.strategy, None)
            else:
                self.open[key] = trade
        if not reduce_only:
            day = (strategy, time_ms // DAY_MS)
            self.entries[day] = self.entries.get(day, 0) + 1
            if key not in self.open and target != 0:
                self.open[key] = OpenTrade(strategy)

    def stats(self, strategy: str) -> Stats:
        cached = self._stats.get(strategy)
        if cached is not None:
            return cached
        equity = peak = self.initial_capital
        losses, last_loss = 0, None
        trades = self.closed.get(strategy, [])
        for time_ms, _, pnl in trades:
            equity = MONEY_CONTEXT.add(equity, pnl)
            peak = max(peak, equity)
            if pnl < 0:
                losses, last_loss = losses + 1, time_ms
            else:
                losses, last_loss = 0, None
        result = Stats(len(trades), losses, last_loss, equity, peak)
        self._stats[strategy] = result
        return result
