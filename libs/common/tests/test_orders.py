"""The order state machine: the allowed paths work and say so in numbered events; anything else
is refused with a clear error and changes nothing, whatever sequence of reports arrives."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import common_pb2, order_event_pb2
from meridian_common import orders
from meridian_common.orders import InvalidTransition, Order

S = order_event_pb2
STATUSES = [S.ORDER_STATUS_PENDING_SUBMIT, S.ORDER_STATUS_OPEN, S.ORDER_STATUS_PARTIALLY_FILLED,
            S.ORDER_STATUS_FILLED, S.ORDER_STATUS_CANCELED, S.ORDER_STATUS_REJECTED,
            S.ORDER_STATUS_EXPIRED, S.ORDER_STATUS_UNKNOWN]


def order(quantity: str = "10") -> Order:
    return Order("mer-abc", "bybit", "BTCUSDT", common_pb2.SIDE_BUY, Decimal(quantity),
                 cause_id="mer-abc", producer="execution")


def test_a_partly_filled_order_then_filled() -> None:
    o = order()
    events = [o.created(1), o.to(orders.OPEN, 2, exchange_order_id="x-1"),
              o.to(orders.PARTIALLY_FILLED, 3, filled=Decimal(4), average_price=Decimal(100)),
              o.to(orders.PARTIALLY_FILLED, 4, filled=Decimal(7), average_price=Decimal(101)),
              o.to(orders.FILLED, 5, filled=Decimal(10), average_price=Decimal("101.5"))]
    assert [e.meta.id for e in events] == [f"mer-abc:{i}" for i in range(1, 6)]
    assert [(e.previous_status, e.status) for e in events] == [
        (S.ORDER_STATUS_UNSPECIFIED, orders.PENDING_SUBMIT), (orders.PENDING_SUBMIT, orders.OPEN),
        (orders.OPEN, orders.PARTIALLY_FILLED),
        (orders.PARTIALLY_FILLED, orders.PARTIALLY_FILLED),
        (orders.PARTIALLY_FILLED, orders.FILLED)]
    assert events[-1].filled_quantity == "10"
    assert events[-1].average_price == "101.5"
    assert events[-1].exchange_order_id == "x-1"
    assert o.terminal


def test_unknown_is_left_only_for_what_a_query_finds() -> None:
    o = order()
    o.created(1)
    o.to(orders.UNKNOWN, 2, reason="submit timed out")
    with pytest.raises(InvalidTransition, match="UNKNOWN -> PENDING_SUBMIT is not a transition"):
        o.to(orders.PENDING_SUBMIT, 3)  # never resent: no way back to submitting
    o.to(orders.OPEN, 3, reason="found by client order id")
    assert o.history == [orders.PENDING_SUBMIT, orders.UNKNOWN, orders.OPEN]


@pytest.mark.parametrize(("steps", "error"), [
    ([(orders.FILLED, "10"), (orders.CANCELED, None)], "FILLED -> CANCELED is not a transition"),
    ([(orders.FILLED, "9")], "FILLED with 9 of 10"),
    ([(orders.PARTIALLY_FILLED, "10")], r"PARTIALLY_FILLED needs 0 < filled < 10, got 10"),
    ([(orders.PARTIALLY_FILLED, "5"), (orders.PARTIALLY_FILLED, "4")],
     "filled quantity 4 below the 5 already filled"),
    ([(orders.PARTIALLY_FILLED, "11")], "filled quantity 11 exceeds the order's 10"),
    ([(orders.OPEN, None), (orders.PENDING_SUBMIT, None)], "OPEN -> PENDING_SUBMIT"),
])
def test_forbidden_reports_are_refused_and_change_nothing(steps: list[tuple[int, str | None]],
                                                          error: str) -> None:
    o = order()
    o.created(1)
    *ok, (status, filled) = steps
    for st_, f in ok:
        o.to(st_, 2, filled=Decimal(f) if f else None)
    before = (o.status, o.filled, o.sequence)
    with pytest.raises(InvalidTransition, match=error):
        o.to(status, 3, filled=Decimal(filled) if filled else None)
    assert (o.status, o.filled, o.sequence) == before


def test_created_comes_first_and_once() -> None:
    o = order()
    with pytest.raises(InvalidTransition, match="created\\(\\) comes first"):
        o.to(orders.OPEN, 1)
    o.created(1)
    with pytest.raises(InvalidTransition, match="already created"):
        o.created(2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STATUSES), st.integers(0, 12)), max_size=25))
def test_any_sequence_of_reports_keeps_the_invariants(reports: list[tuple[int, int]]) -> None:
    o = order("10")
    o.created(0)
    seen = 1
    for i, (status, filled) in enumerate(reports, start=1):
        was_terminal, before = o.terminal, o.filled
        try:
            event = o.to(status, i, filled=Decimal(filled))
        except InvalidTransition:
            continue
        seen += 1
        assert not was_terminal  # a terminal order never moves
        assert event.sequence == seen
        assert before <= o.filled <= o.quantity
        if o.status == orders.FILLED:
            assert o.filled == o.quantity
        assert event.meta.id == f"mer-abc:{seen}"
