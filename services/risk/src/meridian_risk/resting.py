"""Bots' limit orders the gate approved and that have not filled yet: its mirror of them.

A resting limit order is not a position: counting it in the book at approval (as a market
order is) would value an unfilled buy at the marks and move the gate's equity, its breakers and
its strategy ledger. So the gate keeps them apart, counts them where a limit must hold whatever
fills (the worst case: every resting buy of the key filled, `pending`), and books one only when
a candle trades through it, by the same `triggers.RestingLimit` rule and on the same candle as
the paper executor (as it books stop-outs: `meridian_common.protection`). Cancels come from the
bot (order.intent.v1, in event time) or from the executor's order events (expired, rejected).

Limits: the gate books a limit fill at the trigger price (no slippage, no fee), as it books
stops; a live exchange may fill a resting order on a path the candle mirror does not see (the
reconciliation compares fills, see README "Live execution").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from meridian.v1 import common_pb2
from meridian_common.money import ZERO
from meridian_common.triggers import Hit, RestingLimit, path_order


@dataclass(slots=True)
class RestingOrder:
    key: str
    strategy: str
    client_order_id: str
    side: int
    quantity: Decimal
    reduce_only: bool
    limit: RestingLimit[Decimal]


@dataclass(slots=True)
class RestingBook:
    orders: dict[str, RestingOrder] = field(default_factory=dict)  # by client order id
    # Every limit order approved from an intent: their order events (canceled, expired,
    # rejected) are the mirror's business, never a release of booked exposure.
    limit_ids: set[str] = field(default_factory=set)

    def add(self, order: RestingOrder) -> None:
        self.orders[order.client_order_id] = order
        self.limit_ids.add(order.client_order_id)

    def remove(self, client_order_id: str) -> RestingOrder | None:
        return self.orders.pop(client_order_id, None)

    def on_key(self, key: str) -> list[RestingOrder]:
        if not self.orders:  # the usual case without bots: every candle and signal asks
            return []
        return [o for o in self.orders.values() if o.key == key]

    def pending(self, key: str, side: int) -> Decimal:
        """Quantity of the key's resting orders on `side` that open or add (not reduce-only)."""
        return sum((o.quantity for o in self.on_key(key) if o.side == side and not o.reduce_only),
                   ZERO)

    def committed(self, key: str) -> Decimal:
        """Quantity of the key's resting reduce-only orders: position already promised."""
        return sum((o.quantity for o in self.on_key(key) if o.reduce_only), ZERO)

    def owner(self, key: str) -> str:
        """The strategy of the key's resting orders ("" when none)."""
        if not self.orders:
            return ""
        return next((o.strategy for o in self.orders.values() if o.key == key), "")

    def exposure(self, key: str) -> Decimal:
        """Signed worst-case change of the key's position if every resting order that opens
        or adds filled (buys positive, sells negative)."""
        buys = self.pending(key, common_pb2.SIDE_BUY)
        return buys - self.pending(key, common_pb2.SIDE_SELL)

    def on_candle(self, key: str, open_ms: int, open_: Decimal, high: Decimal,
                  low: Decimal) -> list[tuple[RestingOrder, Hit[Decimal]]]:
        """The key's orders this candle fills, in the executor's path order; filled and
        expired ones leave the book."""
        hits: list[tuple[RestingOrder, Hit[Decimal]]] = []
        for order in self.on_key(key):
            hit, after = order.limit.on_candle(open_ms, open_, high, low)
            if hit is not None:
                hits.append((order, hit))
                del self.orders[order.client_order_id]
            elif after is None:
                del self.orders[order.client_order_id]
            else:
                order.limit = after
        hits.sort(key=lambda item: path_order(item[0].side, item[0].limit.limit, item[1]))
        return hits
