"""Live executor and bots' cancels, against the fake exchange through real ccxt (no mocks).

A cancel is never sent as an order: the open order is canceled by client id and its CANCELED
event comes from the poll; an order not sent yet is not sent at all; an unknown or finished id
makes no exchange call. The fake exchange is the truth for what was sent.
"""

from __future__ import annotations

import logging

import pytest

from meridian.v1 import common_pb2, order_approved_pb2, order_event_pb2
from meridian_common import topics
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.testing import sibling_module
from meridian_fake_exchange import FakeExchange

live = sibling_module(__file__, "live_support")
START_MS, Driver, Item, Starter = live.START_MS, live.Driver, live.Item, live.Starter
KEY = "bybit-linear:BTCUSDT"


def place(coid: str, limit: str = "", qty: str = "0.01") -> Item:
    kind = order_approved_pb2.ORDER_TYPE_LIMIT if limit else order_approved_pb2.ORDER_TYPE_MARKET
    return topics.ORDER_APPROVED, KEY, order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=coid, event_time_ms=START_MS, producer="risk"),
        client_order_id=coid, signal_id=f"intent:{coid}", exchange="bybit-linear", symbol="BTCUSDT",
        side=common_pb2.SIDE_BUY, order_type=kind, quantity=qty, limit_price=limit,
        strategy="bot:g1", action=order_approved_pb2.ORDER_ACTION_PLACE)


def cancel(coid: str) -> Item:
    return topics.ORDER_APPROVED, KEY, order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=f"{coid}:cancel", event_time_ms=START_MS + 3_600_000,
                             producer="risk"),
        client_order_id=coid, exchange="bybit-linear", symbol="BTCUSDT", strategy="bot:g1",
        action=order_approved_pb2.ORDER_ACTION_CANCEL)


def cancel_calls(server: FakeExchange) -> int:
    return sum(n for (_, path), n in server.stats.requests.items()
               if path.endswith("order/cancel"))


async def test_a_resting_order_is_canceled_by_client_id_never_sent_again(
        exchange: FakeExchange, make_driver: Starter) -> None:
    d = await make_driver()
    await d.send(place("g1-1-1", limit="1000"))  # far below the price: rests
    assert d.statuses("g1-1-1") == ["PENDING_SUBMIT", "OPEN"]
    await d.send(cancel("g1-1-1"))
    await d.until(lambda: "CANCELED" in d.statuses("g1-1-1"))
    assert d.statuses("g1-1-1") == ["PENDING_SUBMIT", "OPEN", "CANCELED"]
    assert d.events("g1-1-1")[-1].reason == "canceled by bot:g1"
    assert [o["orderStatus"] for o in exchange.orders() if o["orderLinkId"] == "g1-1-1"] == \
        ["Cancelled"]
    assert exchange.create_requests("g1-1-1") == 1  # the cancel was no new order
    assert cancel_calls(exchange) == 1
    for _ in range(3):  # a redelivered cancel: the order is finished, nothing is called
        await d.send(cancel("g1-1-1"))
    assert cancel_calls(exchange) == 1
    assert d.statuses("g1-1-1") == ["PENDING_SUBMIT", "OPEN", "CANCELED"]


async def test_a_cancel_of_an_unknown_or_filled_order_calls_nothing(
        exchange: FakeExchange, make_driver: Starter,
        caplog: pytest.LogCaptureFixture) -> None:
    d = await make_driver()
    await d.send(place("g1-init-1"))
    await d.until(lambda: "FILLED" in d.statuses("g1-init-1"))
    before = len(d.published)
    with caplog.at_level(logging.INFO, logger="meridian_execution.live.handler"):
        items = await d.send(cancel("g1-init-1"), cancel("g1-nope-9"))
    assert not [m for _, _, m in items if isinstance(m, order_event_pb2.OrderEvent)]
    assert not [m for _, _, m in d.published[before:]
                if isinstance(m, order_event_pb2.OrderEvent)]
    assert cancel_calls(exchange) == 0
    assert exchange.create_requests("g1-nope-9") == 0
    raced = [r.client_order_id for r in caplog.records  # type: ignore[attr-defined]
             if "cancel of an order" in r.getMessage()]
    assert raced == ["g1-init-1", "g1-nope-9"]


async def test_an_order_canceled_before_its_send_is_never_sent(
        exchange: FakeExchange, make_driver: Starter) -> None:
    d = await make_driver()
    await d.send(place("g1-1-2", limit="1000"), cancel("g1-1-2"))  # one batch
    assert d.statuses("g1-1-2") == ["PENDING_SUBMIT", "CANCELED"]
    assert d.events("g1-1-2")[-1].reason == "canceled by bot:g1 before it was sent"
    assert exchange.create_requests("g1-1-2") == 0
    assert cancel_calls(exchange) == 0


async def test_a_cancel_consumed_before_a_crash_is_carried_out_after_the_restart(
        exchange: FakeExchange, make_driver: Starter) -> None:
    """The first process sent the order, then took the cancel in and died before acting on it.
    The second restores from the topics (the approved topic holds both records) and cancels;
    the cancel record does not replace the order it names."""
    first = await make_driver()
    order, stop = place("g1-1-3", limit="1000"), cancel("g1-1-3")
    await first.send(order)
    out = Outbox(first.handler.name)
    first.handler.handle(Inbound(*stop), out)  # consumed, never acted on
    await first.handler.stop()
    second = await make_driver()
    for topic, key, message in [order, stop, *first.published]:
        second.handler.restore(Inbound(topic, key, message))
    second.handler.restored()
    await second.send(order, stop)  # redelivered after the committed offsets
    await second.until(lambda: "CANCELED" in second.statuses("g1-1-3"))
    assert exchange.create_requests("g1-1-3") == 1
    assert [o["orderStatus"] for o in exchange.orders() if o["orderLinkId"] == "g1-1-3"] == \
        ["Cancelled"]
    assert second.events("g1-1-3")[-1].sequence == 3  # continues the restored order's events
    assert second.handler.halted is None


async def test_an_unknown_action_is_refused_as_invalid(
        exchange: FakeExchange, make_driver: Starter) -> None:
    d = await make_driver()
    _, key, message = place("g1-1-4", limit="1000")
    message.action = 7  # type: ignore[attr-defined]  # from a newer gate: never placed
    with pytest.raises(InvalidMessage, match="unknown action"):
        d.handler.handle(Inbound(topics.ORDER_APPROVED, key, message), Outbox("execution"))
    assert "g1-1-4" not in d.handler.state.orders
