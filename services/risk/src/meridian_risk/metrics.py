"""The risk gate's own Prometheus series (docs/observability.md, "risk").

Counters count decisions as they are made, never while the host replays or restores inputs
(`Handler.replaying`), so a restart does not count a decision twice. Gauges describe the gate's
state (book, equity, kill switch, breakers) and are set from that state, not from counted
events, so they are right at once after a restore. Every label value from a fixed set (outcome,
rule, breaker) exists at 0 from the start; a symbol from when the gate first sees it.
Money is Decimal in the gate; a gauge holds a float copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge

APPROVED, REDUCED, REJECTED = "approved", "reduced", "rejected"
OUTCOMES = (APPROVED, REDUCED, REJECTED)


class RiskMetrics:
    """The series, registered once in the registry the host exposes."""

    def __init__(self, registry: CollectorRegistry, rules: Iterable[str],
                 breakers: Iterable[str]) -> None:
        self.decisions = Counter(
            "meridian_risk_decisions_total", "Decisions made, per outcome (reduced: an entry "
            "approved at the breakers' reduced size).", ["outcome"], registry=registry)
        self.rejections = Counter(
            "meridian_risk_rejections_total", "Rejected decisions, per deciding rule (the first "
            "rule that failed, in the order every decision lists them).", ["rule"],
            registry=registry)
        self.exposure = Gauge("meridian_risk_exposure_quote", "Absolute notional of the gate's "
                              "book per symbol, at the last price seen.", ["symbol"],
                              registry=registry)
        self.gross = Gauge("meridian_risk_gross_exposure_ratio",
                           "Gross notional of the book / the gate's equity estimate.",
                           registry=registry)
        self.equity = Gauge("meridian_risk_equity_quote", "The gate's equity estimate: capital "
                            "+ realized PnL of its approvals + open positions at marks.",
                            registry=registry)
        self.drawdown = Gauge("meridian_risk_drawdown_ratio",
                              "Drawdown of the gate's equity from its peak, 0..1.",
                              registry=registry)
        self.kill_switch = Gauge("meridian_risk_kill_switch", "1 while the kill switch is set.",
                                 registry=registry)
        self.breaker = Gauge("meridian_risk_breaker_active", "1 while a circuit breaker is "
                             "tripped or holds the level it set.", ["breaker"],
                             registry=registry)
        for outcome in OUTCOMES:
            self.decisions.labels(outcome)
        for rule in rules:
            self.rejections.labels(rule)
        self.breakers = tuple(breakers)
        for name in self.breakers:
            self.breaker.labels(name).set(0)

    def decided(self, outcome: str, deciding_rule: str | None) -> None:
        self.decisions.labels(outcome).inc()
        if deciding_rule is not None:
            self.rejections.labels(deciding_rule).inc()

    def state(self, *, exposure: Mapping[str, Decimal], equity: Decimal, drawdown: Decimal,
              kill_switch: bool, active: frozenset[str]) -> None:
        """Every gauge from the gate's state (exposure per symbol; a flat symbol reads 0)."""
        gross = sum(exposure.values(), Decimal(0))
        for symbol, value in exposure.items():
            self.exposure.labels(symbol).set(float(value))
        self.gross.set(float(gross / equity) if equity > 0 else 0.0)
        self.equity.set(float(equity))
        self.drawdown.set(float(min(max(drawdown, Decimal(0)), Decimal(1))))
        self.kill_switch.set(1 if kill_switch else 0)
        for name in self.breakers:
            self.breaker.labels(name).set(1 if name in active else 0)
