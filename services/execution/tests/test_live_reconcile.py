"""The reconciliation verdict: which exchange states halt the live executor, and the words."""

from __future__ import annotations

from decimal import Decimal

from meridian_common import orders
from meridian_common.money import ZERO
from meridian_execution.live.reconcile import Snapshot, mismatches
from meridian_execution.live.venue import VenueFill, VenueOrder

D = Decimal


def _fill(coid: str, side: str, qty: str, exec_id: str = "e1") -> VenueFill:
    return VenueFill(exec_id, coid, "x1", "BTCUSDT", side, D(qty), D("100"), D("0.1"), "USDT",
                     False, 1)


def _snapshot(*, open_orders: list[VenueOrder] | None = None,
              fills: list[VenueFill] | None = None,
              position: Decimal | None = ZERO) -> Snapshot:
    return Snapshot({"BTCUSDT": open_orders or []}, {"BTCUSDT": fills or []},
                    {"BTCUSDT": position})


def test_matching_exchange_has_no_mismatch() -> None:
    snap = _snapshot(open_orders=[VenueOrder("mrd-a", "1", "BTCUSDT", orders.OPEN)],
                     fills=[_fill("mrd-b", "buy", "0.5")], position=D("0.5"))
    assert mismatches(snap, {"mrd-a", "mrd-b"}, {"BTCUSDT": D("0.5")}, set(), "mrd-") == []


def test_foreign_open_order_and_fill_are_named() -> None:
    snap = _snapshot(open_orders=[VenueOrder("manual-1", "77", "BTCUSDT", orders.OPEN)],
                     fills=[_fill("manual-1", "buy", "1", "e9")], position=D(0))
    problems = mismatches(snap, set(), {}, set(), "mrd-")
    assert problems == [
        "BTCUSDT: open order 77 (client id manual-1) was not placed by this executor",
        "BTCUSDT: fill e9 of order manual-1 was not placed by this executor",
    ]


def test_position_difference_is_reported_with_both_numbers() -> None:
    snap = _snapshot(fills=[], position=D("0.3"))
    assert mismatches(snap, set(), {"BTCUSDT": D("0.1")}, set(), "mrd-") == [
        "BTCUSDT: exchange position 0.3 != 0.1 from the published fills"]


def test_fills_of_orders_waiting_for_adoption_count_towards_the_position() -> None:
    # a restart: the exchange filled mrd-c before the previous process published anything
    snap = _snapshot(fills=[_fill("mrd-c", "sell", "0.2")], position=D("-0.2"))
    assert mismatches(snap, set(), {}, {"mrd-c"}, "mrd-") == []
    # an id with our prefix that the exchange does not know as ours is still foreign
    assert mismatches(snap, set(), {}, set(), "mrd-") != []


def test_moving_position_is_not_compared() -> None:
    snap = _snapshot(position=None)
    assert mismatches(snap, set(), {"BTCUSDT": D("5")}, set(), "mrd-") == []
