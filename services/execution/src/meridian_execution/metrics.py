"""The executor's own Prometheus series (docs/observability.md, "execution"), paper and live.

Order transitions and fills are counted from what the executor emits (an order.event.v1 per
transition of the shared state machine, a fill.v1 per fill), so the series count exactly what is
published; never while the host rebuilds or restores the state from the inputs
(`Handler.replaying`): a restart does not count them twice. The open orders gauge is set from the
state, so it is right at once after a rebuild. The exchange error and reconciliation series are
the live executor's, but exist (at 0) in paper mode too: dashboards and alerts always have data.
Fees are Decimal in the fills; the counter holds a float copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter, Gauge

from meridian.v1 import common_pb2, fill_pb2, order_event_pb2
from meridian_common import orders, topics

RETRYABLE, FATAL = "retryable", "fatal"
# Every state an order event can carry (the contract's six, and the two steps between).
STATES = {s: orders.name(s).lower() for s in (
    orders.PENDING_SUBMIT, orders.OPEN, orders.PARTIALLY_FILLED, orders.FILLED, orders.CANCELED,
    orders.REJECTED, orders.EXPIRED, orders.UNKNOWN)}
SIDES = {common_pb2.SIDE_BUY: "buy", common_pb2.SIDE_SELL: "sell"}


class ExecutionMetrics:
    """The series, registered once in the registry the host exposes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.orders = Counter("meridian_execution_orders_total",
                              "Order transitions published, per state reached.", ["state"],
                              registry=registry)
        self.open_orders = Gauge("meridian_execution_open_orders",
                                 "Orders not in a terminal state.", registry=registry)
        self.fills = Counter("meridian_execution_fills_total", "Fills published, per side.",
                             ["side"], registry=registry)
        self.fees = Counter("meridian_execution_fees_quote_total",
                            "Fees of the fills published (in the fills' fee currency).",
                            registry=registry)
        self.exchange_errors = Counter(
            "meridian_execution_exchange_errors_total", "Exchange calls that failed (live), "
            "per kind: retryable (rate limit, clock, no answer) or fatal (credentials).",
            ["kind"], registry=registry)
        self.reconciliation_failures = Counter(
            "meridian_execution_reconciliation_failures_total",
            "Reconciliations with the exchange that found a mismatch (live).",
            registry=registry)
        for state in STATES.values():
            self.orders.labels(state)
        for side in SIDES.values():
            self.fills.labels(side)
        for kind in (RETRYABLE, FATAL):
            self.exchange_errors.labels(kind)

    def published(self, items: Iterable[tuple[str, str, Message]]) -> None:
        """Count the order events and fills among outputs (Watermarks and the rest skipped)."""
        for topic, _, message in items:
            if topic == topics.ORDER_EVENT and isinstance(message, order_event_pb2.OrderEvent):
                state = STATES.get(message.status)
                if state is not None:
                    self.orders.labels(state).inc()
            elif topic == topics.FILL and isinstance(message, fill_pb2.Fill):
                self._fill(message)

    def _fill(self, fill: fill_pb2.Fill) -> None:
        side = SIDES.get(fill.side)
        if side is not None:
            self.fills.labels(side).inc()
        try:
            fee = Decimal(fill.fee or "0")
        except InvalidOperation:
            return  # never emitted by the executors: their fees are Decimals they made
        if fee.is_finite() and fee > 0:
            self.fees.inc(float(fee))
