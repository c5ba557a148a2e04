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

    def then(self, time_ms: int, pnl: Decimal) -> Stats:
        """The figures after one more closed trade (the last in event time)."""
        equity = MONEY_CONTEXT.add(self.equity, pnl)
        if pnl < 0:
            return Stats(self.trades + 1, self.losses + 1, time_ms, equity, self.peak)
        return Stats(self.trades + 1, 0, None, equity, max(self.peak, equity))

    @property
    def drawdown(self) -> Decimal:
        """(peak - equity) / peak, a fraction (> 1 once equity is negative)."""
        return MONEY_CONTEXT.divide(MONEY_CONTEXT.subtract(self.peak, self.equity), self.peak)


@dataclass(frozen=True, slots=True)
class Record:
    """A strategy's recent closed trades, as fractional Kelly sizing reads them."""

    wins: int
    losses: int
    avg_win: Decimal  # magnitudes, quote currency
    avg_loss: Decimal


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
    # strategy -> Stats after each closed trade (parallel to `closed`): an insertion recomputes
    # from its position only, so the figures cost O(1) per trade in event-time order.
    _stats: dict[str, list[Stats]] = field(default_factory=dict, compare=False, repr=False)

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
                self._close(trade.strategy, (time_ms, order_id, trade.realized))
            else:
                self.open[key] = trade
        if not reduce_only:
            day = (strategy, time_ms // DAY_MS)
            self.entries[day] = self.entries.get(day, 0) + 1
            if key not in self.open and target != 0:
                self.open[key] = OpenTrade(strategy)

    def _close(self, strategy: str, item: tuple[int, str, Decimal]) -> None:
        """Insert a closed trade in (time, exit order id) order, the order every figure is
        computed in (so a restore reading keys interleaved differently agrees); the merge hands
        them in time order, so this is an append but for closes at one time."""
        closed = self.closed.setdefault(strategy, [])
        at = bisect.bisect(closed, item)
        closed.insert(at, item)
        self._refigure(strategy, at)

    def _start(self) -> Stats:
        return Stats(0, 0, None, self.initial_capital, self.initial_capital)

    def _refigure(self, strategy: str, at: int) -> list[Stats]:
        """The figures after each closed trade, recomputed from trade `at` on."""
        prefix = self._stats.setdefault(strategy, [])
        del prefix[at:]
        last = prefix[-1] if prefix else self._start()
        for time_ms, _, pnl in self.closed.get(strategy, [])[at:]:
            last = last.then(time_ms, pnl)
            prefix.append(last)
        return prefix

    def record_of(self, strategy: str, window: int) -> Record:
        """Wins, losses and their average sizes over the strategy's last `window` trades (a
        trade with PnL 0 counts as neither)."""
        pnls = [pnl for _, _, pnl in self.closed.get(strategy, [])[-window:]]
        wins = [p for p in pnls if p > 0]
        losses = [-p for p in pnls if p < 0]

        def mean(xs: list[Decimal]) -> Decimal:
            return MONEY_CONTEXT.divide(sum(xs, ZERO), Decimal(len(xs))) if xs else ZERO
        return Record(len(wins), len(losses), mean(wins), mean(losses))

    def stats(self, strategy: str) -> Stats:
        prefix = self._stats.get(strategy, [])
        if len(prefix) != len(self.closed.get(strategy, [])):  # `closed` edited from outside
            prefix = self._refigure(strategy, 0)
        return prefix[-1] if prefix else self._start()
