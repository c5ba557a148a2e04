"""The order state machine, one for the paper and the live executors.

    PENDING_SUBMIT --> OPEN --> PARTIALLY_FILLED --> FILLED
          |              |             |
          |              +-------------+--> CANCELED / EXPIRED
          +--> REJECTED (or after OPEN: an exchange may refuse an accepted order, e.g. post-only)
          +--> UNKNOWN (submit timed out or failed ambiguously) --> any state a query finds

An order is created PENDING_SUBMIT (recorded before anything is sent, so a crash between the two
leaves a trace to query) and every transition is one order.event.v1 message, numbered: the
message id is "<client order id>:<sequence>". Fill quantities only grow and never pass the
order's quantity; FILLED means all of it, PARTIALLY_FILLED some of it. A terminal state (FILLED,
CANCELED, REJECTED, EXPIRED) never changes again; UNKNOWN is left only by what a query by client
order id finds, never by resending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from meridian.v1 import common_pb2, order_approved_pb2, order_event_pb2
from meridian_common.money import ZERO, to_str

S = order_event_pb2
PENDING_SUBMIT = S.ORDER_STATUS_PENDING_SUBMIT
OPEN = S.ORDER_STATUS_OPEN
PARTIALLY_FILLED = S.ORDER_STATUS_PARTIALLY_FILLED
FILLED = S.ORDER_STATUS_FILLED
CANCELED = S.ORDER_STATUS_CANCELED
REJECTED = S.ORDER_STATUS_REJECTED
EXPIRED = S.ORDER_STATUS_EXPIRED
UNKNOWN = S.ORDER_STATUS_UNKNOWN

TERMINAL = frozenset({FILLED, CANCELED, REJECTED, EXPIRED})
# ApprovedOrder.action values that place an order: every order before bots existed has none
PLACE_ACTIONS = frozenset({order_approved_pb2.ORDER_ACTION_UNSPECIFIED,
                           order_approved_pb2.ORDER_ACTION_PLACE})
_AFTER_SUBMIT = frozenset({OPEN, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED, EXPIRED})
ALLOWED: dict[int, frozenset[int]] = {
    PENDING_SUBMIT: _AFTER_SUBMIT | {UNKNOWN},
    OPEN: frozenset({PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, REJECTED, UNKNOWN}),
    PARTIALLY_FILLED: frozenset({PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, UNKNOWN}),
    UNKNOWN: _AFTER_SUBMIT,
}


def name(status: int) -> str:
    return S.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")  # type: ignore[arg-type]


class InvalidTransition(ValueError):
    """A transition the state machine forbids: a bug or an exchange report out of order."""


@dataclass(slots=True)
class Order:
    client_order_id: str
    exchange: str
    symbol: str
    side: int
    quantity: Decimal
    cause_id: str  # the approved order's id
    producer: str
    status: int = PENDING_SUBMIT
    filled: Decimal = ZERO
    average_price: Decimal | None = None
    exchange_order_id: str = ""
    sequence: int = 0
    history: list[int] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def created(self, time_ms: int) -> order_event_pb2.OrderEvent:
        """The first event: the order exists, nothing sent yet."""
        if self.sequence:
            raise InvalidTransition(f"order {self.client_order_id} was already created")
        return self._event(PENDING_SUBMIT, S.ORDER_STATUS_UNSPECIFIED, time_ms, "")

    def to(self, status: int, time_ms: int, *, filled: Decimal | None = None,
           average_price: Decimal | None = None, reason: str = "",
           exchange_order_id: str = "") -> order_event_pb2.OrderEvent:
        """Move to `status` (with the cumulative filled quantity, if it changed) and return the
        event that says so; InvalidTransition names what is wrong, and changes nothing."""
        if not self.sequence:
            raise InvalidTransition(f"order {self.client_order_id}: created() comes first")
        if status not in ALLOWED.get(self.status, frozenset()):
            raise InvalidTransition(f"order {self.client_order_id}: {name(self.status)} -> "
                                    f"{name(status)} is not a transition")
        now = self.filled if filled is None else filled
        self._check_fill(status, now)
        previous = self.status
        self.filled = now
        if average_price is not None:
            self.average_price = average_price
        if exchange_order_id:
            self.exchange_order_id = exchange_order_id
        return self._event(status, previous, time_ms, reason)

    def _check_fill(self, status: int, filled: Decimal) -> None:
        coid = self.client_order_id
        if filled < self.filled:
            raise InvalidTransition(f"order {coid}: filled quantity {to_str(filled)} below the "
                                    f"{to_str(self.filled)} already filled")
        if filled > self.quantity:
            raise InvalidTransition(f"order {coid}: filled quantity {to_str(filled)} exceeds the "
                                    f"order's {to_str(self.quantity)}")
        if status == FILLED and filled != self.quantity:
            raise InvalidTransition(f"order {coid}: FILLED with {to_str(filled)} of "
                                    f"{to_str(self.quantity)}")
        if status == PARTIALLY_FILLED and not ZERO < filled < self.quantity:
            raise InvalidTransition(f"order {coid}: PARTIALLY_FILLED needs 0 < filled < "
                                    f"{to_str(self.quantity)}, got {to_str(filled)}")

    def _event(self, status: int, previous: int, time_ms: int,
               reason: str) -> order_event_pb2.OrderEvent:
        self.sequence += 1
        self.status = status
        self.history.append(status)
        return order_event_pb2.OrderEvent(
            meta=common_pb2.Meta(id=f"{self.client_order_id}:{self.sequence}",
                                 cause_id=self.cause_id, event_time_ms=time_ms,
                                 producer=self.producer),
            client_order_id=self.client_order_id, exchange_order_id=self.exchange_order_id,
            exchange=self.exchange, symbol=self.symbol, status=status,  # type: ignore[arg-type]
            previous_status=previous, side=self.side,  # type: ignore[arg-type]
            quantity=to_str(self.quantity), filled_quantity=to_str(self.filled),
            average_price=to_str(self.average_price) if self.average_price is not None else "",
            reason=reason, sequence=self.sequence)
