"""The latest state of recent orders, read back from order.event.v1.

Why the topic and not a table: no service stores orders (the ledger stores fills; execution
rebuilds its orders from its topics on start), and order.event.v1 already carries every
transition, keyed by exchange:symbol so that all of one order's events sit in one partition, in
order. Reading the last MERIDIAN_CONTROL_ORDERS_SCAN records of each partition and keeping each
client order id's highest sequence gives the latest state of every order that moved recently,
at a bounded cost per request. An order whose last transition is older than that window is not
listed; its fills still are (GET /v1/fills).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from meridian.v1 import order_event_pb2
from meridian_common import codec, topics
from meridian_common.bus.base import Bus, Record
from meridian_control.schemas import Order, Orders

STATUS_NAMES = {number: name.removeprefix("ORDER_STATUS_").lower()
                for name, number in order_event_pb2.OrderStatus.items()}
SIDES = {1: "buy", 2: "sell"}


async def recent_orders(bus: Bus, prefix: str, scan: int, limit: int,
                        symbol: str | None) -> Orders:
    topic = prefix + topics.ORDER_EVENT
    try:
        ends = await bus.topic_ends(topic)
    except KeyError:  # no execution service ever ran on this prefix
        return Orders(topic=topic, scanned=0, orders=[])
    latest: dict[str, order_event_pb2.OrderEvent] = {}
    scanned = 0
    for partition, end in enumerate(ends):
        for record in await bus.read_partition(topic, partition, max(0, end - scan), end):
            scanned += 1
            event = _event(record)
            if event is None or (symbol is not None and event.symbol != symbol):
                continue
            seen = latest.get(event.client_order_id)
            if seen is None or event.sequence >= seen.sequence:
                latest[event.client_order_id] = event
    newest = sorted(latest.values(), key=lambda e: (e.meta.event_time_ms, e.sequence),
                    reverse=True)
    return Orders(topic=topic, scanned=scanned, orders=[_order(e) for e in newest[:limit]])


def _event(record: Record) -> order_event_pb2.OrderEvent | None:
    """The record's OrderEvent; None for watermarks and records that do not decode (every
    consumer skips those too)."""
    try:
        message = codec.decode(topics.ORDER_EVENT, record.value,
                               record.header(codec.TYPE_HEADER))
    except codec.MalformedMessage:
        return None
    return message if isinstance(message, order_event_pb2.OrderEvent) else None


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text) if text else None
    except InvalidOperation:
        return None


def _order(event: order_event_pb2.OrderEvent) -> Order:
    return Order(client_order_id=event.client_order_id,
                 exchange_order_id=event.exchange_order_id, exchange=event.exchange,
                 symbol=event.symbol, status=STATUS_NAMES.get(event.status, "unspecified"),
                 side=SIDES.get(event.side, "unspecified"), quantity=_decimal(event.quantity),
                 filled_quantity=_decimal(event.filled_quantity),
                 average_price=_decimal(event.average_price), reason=event.reason,
                 sequence=event.sequence,
                 time=datetime.fromtimestamp(event.meta.event_time_ms / 1000, UTC))
