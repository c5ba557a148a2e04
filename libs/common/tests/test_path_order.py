"""`triggers.path_order`: the one order of limit fills inside a candle, for the paper executor
and the bots' simulation alike."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian.v1 import common_pb2
from meridian_common import triggers
from meridian_common.strategy import bot_sim
from meridian_common.triggers import MAKER, RestingLimit, path_order

BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL


def _fills(num: type, placed: list[tuple[str, int, str]], candle: tuple[str, str, str]
           ) -> list[str]:
    """Names of the limits that fill on one candle (open, high, low), in path order."""
    o, h, low = (num(x) for x in candle)
    hits = []
    for name, side, limit in placed:
        hit, _ = RestingLimit(side, num(limit), 0).on_candle(0, o, h, low)
        if hit is not None:
            hits.append((name, side, num(limit), hit))
    return [name for name, side, limit, hit in
            sorted(hits, key=lambda x: path_order(x[1], x[2], x[3]))]


@pytest.mark.parametrize("num", [Decimal, float])
def test_open_first_then_buys_down_then_sells_up(num: type) -> None:
    placed = [("sell-30200", SELL, "30200"), ("buy-29500", BUY, "29500"),
              ("sell-30100", SELL, "30100"), ("buy-30100", BUY, "30100"),  # marketable
              ("buy-29800", BUY, "29800"), ("sell-29900", SELL, "29900"),  # marketable
              ("buy-29000", BUY, "29000")]  # not reached
    got = _fills(num, placed, ("30000", "30300", "29400"))
    # the two fills at the open keep their placement order
    assert got == ["buy-30100", "sell-29900", "buy-29800", "buy-29500", "sell-30100",
                   "sell-30200"]


def test_equal_limits_keep_the_placement_order() -> None:
    placed = [("b", BUY, "100"), ("a", BUY, "100"), ("d", SELL, "120"), ("c", SELL, "120")]
    assert _fills(Decimal, placed, ("110", "130", "90")) == ["b", "a", "d", "c"]


def test_keys_by_hand() -> None:
    maker = triggers.Hit(Decimal(100), triggers.LIMIT, MAKER, limit=Decimal(100))
    at_open = triggers.Hit(Decimal(101), triggers.LIMIT, MAKER, at_open=True,
                           limit=Decimal(100))
    assert path_order(BUY, Decimal(100), maker) == (1, Decimal(-100))
    assert path_order(SELL, Decimal(100), maker) == (2, Decimal(100))
    assert path_order(SELL, Decimal(100), at_open) == path_order(BUY, Decimal(7), at_open)


def test_the_simulation_sorts_by_the_shared_function() -> None:
    assert bot_sim.path_order is triggers.path_order
