"""The ledger's own Prometheus series (docs/observability.md, "ledger").

Counters count what is booked (fills, fees), never while the host replays inputs
(`Handler.replaying`). The gauges are the account's state at the last marked candle, set from
the books (and, after a restart, from the stored rows), so they equal what the ledger writes:
equity = initial capital + the sum over symbols of each one's last equity row `net_pnl`, the
account curve the control plane serves. Funding can be received (negative), which a Prometheus
counter cannot hold, so `meridian_ledger_funding_quote_total` is a gauge of the running total.
Money is Decimal in the ledger; a series holds a float copy.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge


class LedgerMetrics:
    """The series, registered once in the registry the host exposes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.fills = Counter("meridian_ledger_fills_total", "Fills booked, per symbol.",
                             ["symbol"], registry=registry)
        self.fees = Counter("meridian_ledger_fees_quote_total", "Fees of the fills booked.",
                            registry=registry)
        self.funding = Gauge("meridian_ledger_funding_quote_total", "Funding paid since the "
                             "start of the account (negative: received).", registry=registry)
        self.equity = Gauge("meridian_ledger_equity_quote",
                            "Account equity at the last marked candle.", registry=registry)
        self.realized = Gauge("meridian_ledger_realized_pnl_quote", "Realized net PnL since the "
                              "start of the account (realized - fees - funding).",
                              registry=registry)
        self.drawdown = Gauge("meridian_ledger_drawdown_ratio",
                              "Drawdown of equity from its peak, 0..1.", registry=registry)
        self.open_positions = Gauge("meridian_ledger_open_positions",
                                    "Symbols with a non-zero position.", registry=registry)

    def booked(self, symbol: str, fee: Decimal) -> None:
        self.fills.labels(symbol).inc()
        if fee > 0:  # a rebate (negative fee) is in the equity, not in this counter
            self.fees.inc(float(fee))

    def account(self, *, equity: Decimal, peak: Decimal, realized: Decimal, funding: Decimal,
                open_positions: int) -> None:
        self.equity.set(float(equity))
        fall = (peak - equity) / peak if peak > 0 and equity < peak else Decimal(0)
        self.drawdown.set(float(min(fall, Decimal(1))))
        self.realized.set(float(realized))
        self.funding.set(float(funding))
        self.open_positions.set(open_positions)


class AccountCurve:
    """The peak of the account curve in event time, as the control plane draws it from the
    equity rows: at each marked time, capital + every symbol's latest net PnL at or before it.

    Symbols are marked in arrival order, each in its own time (one can be many candles ahead
    of another), so a time's point is final only once every known symbol has been marked up to
    it: marks wait here until then, and the peak takes each final point once, exactly as the
    stored curve (so a restarted ledger, which reads the peak from the rows, agrees)."""

    def __init__(self, capital: Decimal) -> None:
        self.capital = capital
        self.peak = capital
        self._final: dict[str, Decimal] = {}  # each symbol's net at the final time
        self._waiting: dict[str, deque[tuple[int, Decimal]]] = {}  # later marks, in time order
        self._last: dict[str, int] = {}  # each symbol's last marked time (-1: none yet)
        self._done = -1  # points up to here are in the peak

    def track(self, key: str) -> None:
        """A symbol the curve waits for: its marks complete the points from now on."""
        self._last.setdefault(key, -1)
        self._waiting.setdefault(key, deque())
        self._final.setdefault(key, Decimal(0))

    def restore(self, key: str, last_ms: int, net: Decimal) -> None:
        """A symbol marked up to `last_ms` before a restart, at `net`."""
        self.track(key)
        self._last[key], self._final[key] = last_ms, net

    def restored(self, peak_net: Decimal) -> None:
        """Every stored symbol restored; `peak_net`: the stored curve's highest net PnL."""
        self.peak = max(self.peak, self.capital + peak_net)
        self._done = min(self._last.values(), default=-1)

    def mark(self, key: str, time_ms: int, net: Decimal) -> None:
        self.track(key)
        self._waiting[key].append((time_ms, net))
        self._last[key] = max(self._last[key], time_ms)
        frontier = min(self._last.values())
        if frontier <= self._done:
            return
        # Each symbol's marks are in time order: the next point is the earliest head, and a
        # point moves only the symbols marked at its time (O(symbols) per point, never a scan
        # of everything waiting: a symbol far ahead of another leaves long queues).
        total = self._take(self._done, sum(self._final.values(), Decimal(0)))  # no new point
        while True:
            t = min((marks[0][0] for marks in self._waiting.values() if marks),
                    default=frontier + 1)
            if t > frontier:
                break
            total = self._take(t, total)
            self.peak = max(self.peak, self.capital + total)
        self._done = frontier

    def _take(self, upto: int, total: Decimal) -> Decimal:
        """Make every mark at or before `upto` final; the new sum of the final nets."""
        for k, marks in self._waiting.items():
            while marks and marks[0][0] <= upto:
                net = marks.popleft()[1]
                total += net - self._final[k]
                self._final[k] = net
        return total
