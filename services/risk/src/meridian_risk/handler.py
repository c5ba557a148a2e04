"""Risk gate: signals in, a decision for each (with every rule's result) and approved orders out.

order.approved.v1 is sparse: whenever a signal or a signal watermark leads to no order, a
Watermark is forwarded so execution can act in event time.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from meridian.v1 import common_pb2, control_pb2, order_approved_pb2, risk_decision_pb2, signal_pb2
from meridian_common import ids, topics
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox
from meridian_common.money import ZERO, dec, to_str
from meridian_risk.book import Book
from meridian_risk.ledger import Ledger
from meridian_risk.rules import Context, evaluate, parse_stop, propose
from meridian_risk.settings import RiskSettings

log = logging.getLogger(__name__)


class RiskHandler(Handler):
    name = "risk"
    inputs = (topics.SIGNAL, topics.CONTROL)
    outputs = (topics.RISK_DECISION, topics.ORDER_APPROVED)
    # The kill switch (control.v1 is compacted: its latest command per subject) and the book of
    # approved orders (this service's own record of its decisions) survive a restart. A signal
    # handled again after a crash then finds its position already at target: no second order.
    # risk.decision.v1 (read before the orders) gives the book its prices: each approved
    # order's entry and the last reference price per symbol. The same orders rebuild each
    # strategy's ledger (its entries per day and closed trades), so a restart changes no decision.
    restore_from = (topics.CONTROL, topics.RISK_DECISION, topics.ORDER_APPROVED)

    def __init__(self, settings: RiskSettings) -> None:
        self.settings = settings
        self.market_rules = settings.market_rules()
        self.book = Book()
        # Each strategy's trades (entries, closes, realized PnL) for the strategy-layer rules,
        # rebuilt by restore() from the same approved orders as the book.
        self.ledger = Ledger(settings.initial_capital)
        # client_order_id -> reference price of its approved decision, while restoring.
        self._restored_prices: dict[str, Decimal] = {}
        self.kill_switch = False
        self.approved = 0
        self.rejected = 0

    def handle(self, msg: Inbound, out: Outbox) -> None:
        if msg.topic == topics.CONTROL:
            if not msg.is_watermark:
                self._control(msg.message)  # type: ignore[arg-type]
        elif msg.is_watermark:
            out.watermark(topics.ORDER_APPROVED, msg.key, msg.event_time_ms)
        else:
            self._signal(msg.key, msg.message, out)  # type: ignore[arg-type]

    def restore(self, msg: Inbound) -> None:
        if msg.is_watermark:
            return
        if msg.topic == topics.CONTROL:
            self._control(msg.message)  # type: ignore[arg-type]
            return
        if msg.topic == topics.RISK_DECISION:
            decision: risk_decision_pb2.RiskDecision = msg.message  # type: ignore[assignment]
            price = dec(decision.reference_price, "RiskDecision.reference_price")
            self.book.marks[msg.key] = price
            if decision.approved:
                self._restored_prices[decision.client_order_id] = price
            return
        order: order_approved_pb2.ApprovedOrder = msg.message  # type: ignore[assignment]
        quantity = dec(order.quantity, "ApprovedOrder.quantity")
        signed = quantity if order.side == common_pb2.SIDE_BUY else -quantity
        # Without its decision (never expected: both are published together) the entry is the
        # symbol's last known price, else 0 until the next signal marks it.
        price = self._restored_prices.pop(order.client_order_id,
                                          self.book.marks.get(msg.key, ZERO))
        self._book(msg.key, order.strategy, signed, price, order.meta.event_time_ms,
                   order.client_order_id, order.reduce_only)

    def _book(self, key: str, strategy: str, delta: Decimal, price: Decimal, time_ms: int,
              order_id: str, reduce_only: bool) -> None:
        """Book an approved order: in the strategy ledger (from the position before it), then
        in the book. Live approvals and restore() go through here alike."""
        self.ledger.record(key, strategy, self.book.positions.get(key), delta, price, time_ms,
                           order_id, reduce_only)
        self.book.apply(key, delta, price)

    @property
    def positions(self) -> dict[str, Decimal]:
        """Signed position per key (a view of the book)."""
        return {k: p.quantity for k, p in self.book.positions.items()}

    def _control(self, command: control_pb2.Control) -> None:
        if command.WhichOneof("command") == "kill_switch":
            self.kill_switch = command.kill_switch.engaged
            log.warning("kill switch %s", "ENGAGED" if self.kill_switch else "cleared",
                        extra={"reason": command.kill_switch.reason,
                               "actor": command.kill_switch.actor})

    def _signal(self, key: str, signal: signal_pb2.Signal, out: Outbox) -> None:
        price = dec(signal.reference_price, "Signal.reference_price")
        if price <= 0:
            raise InvalidMessage(f"Signal.reference_price: {signal.reference_price!r} is not "
                                 "positive")
        stop, stop_error = parse_stop(signal)
        proposal = propose(signal.direction, key, price, stop, signal.confidence, self.book,
                           self.settings, self.market_rules)
        ctx = Context(key=key, direction=signal.direction, price=price, stop=stop,
                      stop_error=stop_error, confidence=signal.confidence, proposal=proposal,
                      book=self.book, settings=self.settings, rules=self.market_rules,
                      kill_switch=self.kill_switch, strategy=signal.strategy,
                      event_time_ms=signal.meta.event_time_ms, ledger=self.ledger)
        rules = evaluate(ctx)
        # The signal's price marks the symbol whatever the decision: exposure is valued at it.
        self.book.marks[key] = price
        approved = all(r.passed for r in rules)
        t = signal.meta.event_time_ms
        decision = risk_decision_pb2.RiskDecision(
            meta=common_pb2.Meta(id="dec:" + signal.meta.id, cause_id=signal.meta.id,
                                 event_time_ms=t, producer=self.name),
            exchange=signal.exchange, symbol=signal.symbol, approved=approved, rules=rules,
            side=proposal.side, quantity=to_str(proposal.quantity),
            reference_price=signal.reference_price, reduce_only=proposal.reduce_only,
        )
        if not approved:
            self.rejected += 1
            out.emit(topics.RISK_DECISION, key, decision)
            out.watermark(topics.ORDER_APPROVED, key, t)
            return
        self.approved += 1
        coid = ids.client_order_id(signal.meta.id)
        decision.client_order_id = coid
        self._book(key, signal.strategy, proposal.target - self.book.quantity(key), price, t,
                   coid, proposal.reduce_only)
        out.emit(topics.RISK_DECISION, key, decision)
        out.emit(topics.ORDER_APPROVED, key, order_approved_pb2.ApprovedOrder(
            meta=common_pb2.Meta(id=coid, cause_id=decision.meta.id, event_time_ms=t,
                                 producer=self.name),
            client_order_id=coid, signal_id=signal.meta.id, exchange=signal.exchange,
            symbol=signal.symbol, side=proposal.side,
            order_type=order_approved_pb2.ORDER_TYPE_MARKET,
            quantity=to_str(proposal.quantity), reduce_only=proposal.reduce_only,
            stop_loss=signal.stop_loss, take_profit=signal.take_profit, strategy=signal.strategy,
        ))
