"""Intrabar trigger rules, hand-checked one rule at a time: stops on a touch, take-profits
through their price, stop first inside one candle, gaps, trailing stops that never use a
candle's own high, shorts, liquidation (isolated and cross), limit orders (marketable, resting,
touch, expiry) and the fills they make."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian.v1 import common_pb2, fill_pb2
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.margin import liquidation_price_cross, unrealized_pnl
from meridian_common.triggers import (
    LIQUIDATION,
    STOP_LOSS,
    TAKE_PROFIT,
    TRAILING_STOP,
    Exits,
    Hit,
    RestingLimit,
    Trail,
    check,
    isolated_liquidation,
    step,
)

D = Decimal
MAKER, TAKER = fill_pb2.LIQUIDITY_MAKER, fill_pb2.LIQUIDITY_TAKER
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL


def bar(o: str, h: str, lo: str) -> tuple[Decimal, Decimal, Decimal]:
    return D(o), D(h), D(lo)


LONG = Exits("long", stop_loss=D(98), take_profit=D(105))
SHORT = Exits("short", stop_loss=D(102), take_profit=D(95))


# -- stop-loss and take-profit ---------------------------------------------------------------

def test_long_stop_triggers_on_a_touch_at_the_stop() -> None:
    stop_only = Exits("long", stop_loss=D(98))
    assert check(stop_only, *bar("100", "101", "97")) == Hit(D(98), STOP_LOSS, TAKER)
    assert check(stop_only, *bar("100", "101", "98")) == Hit(D(98), STOP_LOSS, TAKER)  # touch
    assert check(stop_only, *bar("100", "101", "98.01")) is None


def test_long_take_profit_fills_through_its_price_not_on_a_touch() -> None:
    tp_only = Exits("long", take_profit=D(105))
    assert check(tp_only, *bar("100", "105.5", "99")) == Hit(D(105), TAKE_PROFIT, MAKER)
    # a touch does not prove the resting limit's place in the queue was reached
    assert check(tp_only, *bar("100", "105", "99")) is None


def test_stop_and_take_profit_in_one_candle_count_as_the_stop() -> None:
    assert check(LONG, *bar("100", "106", "97")) == Hit(D(98), STOP_LOSS, TAKER)
    assert check(SHORT, *bar("100", "103", "94")) == Hit(D(102), STOP_LOSS, TAKER)


def test_a_gap_through_the_stop_exits_at_the_open() -> None:
    # opened below the stop: the stop order becomes a market order at the open, worse than 98,
    # even though the candle later reaches the take-profit
    assert check(LONG, *bar("96", "106", "95")) == Hit(D(96), STOP_LOSS, TAKER, at_open=True)
    assert check(SHORT, *bar("104", "105", "94")) == Hit(D(104), STOP_LOSS, TAKER, at_open=True)


def test_a_gap_through_the_take_profit_fills_at_the_take_profit() -> None:
    # the resting limit filled at its own price when the price went through it before the open;
    # the open is the one known point of the path, so the later dip to the stop comes after
    assert check(LONG, *bar("107", "108", "97")) == Hit(D(105), TAKE_PROFIT, MAKER)
    # the whole candle above the take-profit: still the take-profit price, below the low
    assert check(LONG, *bar("107", "108", "106")) == Hit(D(105), TAKE_PROFIT, MAKER)
    assert check(SHORT, *bar("93", "94", "92")) == Hit(D(95), TAKE_PROFIT, MAKER)


def test_short_mirrors_long() -> None:
    assert check(SHORT, *bar("100", "102", "99")) == Hit(D(102), STOP_LOSS, TAKER)  # touch
    assert check(SHORT, *bar("100", "101.99", "95")) is None  # TP touched, stop not
    assert check(SHORT, *bar("100", "101", "94.9")) == Hit(D(95), TAKE_PROFIT, MAKER)
    assert (SHORT.closing_side, LONG.closing_side) == (BUY, SELL)


def test_floats_get_the_same_decisions() -> None:
    exits = Exits("long", stop_loss=98.0, take_profit=105.0)
    assert check(exits, 100.0, 106.0, 97.0) == Hit(98.0, STOP_LOSS, TAKER)
    assert check(exits, 96.0, 106.0, 95.0) == Hit(96.0, STOP_LOSS, TAKER, at_open=True)
    assert check(exits, 100.0, 105.0, 99.0) is None


# -- trailing stop ---------------------------------------------------------------------------

def test_trailing_stop_ratchets_from_the_best_price_before_each_candle() -> None:
    exits = Exits("long", trailing=D("0.05"))
    trail = Trail(D(100))  # entry at 100, the entry candle's open
    # entry candle: level 95 from the entry; its own high 104 would give 98.8 and the low 96
    # would stop out, but nothing says the high came before the low
    hit, trail = step(exits, trail, *bar("100", "104", "96"))
    assert (hit, trail) == (None, Trail(D(104)))
    hit, trail = step(exits, trail, *bar("103", "110", "99"))  # level 104 x 0.95 = 98.8
    assert (hit, trail) == (None, Trail(D(110)))
    hit, trail = step(exits, trail, *bar("109", "109.5", "104"))  # level 110 x 0.95 = 104.5
    assert hit == Hit(D("104.50"), TRAILING_STOP, TAKER)
    assert trail == Trail(D(110))  # a lower high does not move the best price


def test_trailing_stop_gap_exits_at_the_open_and_the_state_replays() -> None:
    exits = Exits("short", trailing=D("0.02"))
    bars = [bar("100", "100.5", "97"), bar("97.5", "98", "96")]
    trail = Trail.replay(False, D(100), [(h, lo) for _, h, lo in bars])
    assert trail == Trail(D(96))  # lowest low since entry
    # level 96 x 1.02 = 97.92; the next candle opens above it
    assert check(exits, *bar("98.5", "99", "98"), trail) == Hit(D("98.5"), TRAILING_STOP, TAKER,
                                                                  at_open=True)
    assert check(exits, *bar("97", "97.92", "96.5"), trail) == Hit(D("97.92"), TRAILING_STOP,
                                                                    TAKER)


def test_the_nearer_of_stop_loss_and_trailing_stop_is_the_exit() -> None:
    exits = Exits("long", stop_loss=D(97), trailing=D("0.05"))
    assert check(exits, *bar("100", "101", "90"), Trail(D(100))) == Hit(D(97), STOP_LOSS, TAKER)
    assert check(exits, *bar("108", "109", "90"), Trail(D(110))) == \
        Hit(D("104.50"), TRAILING_STOP, TAKER)


# -- liquidation -----------------------------------------------------------------------------

def test_isolated_liquidation_behind_the_stop() -> None:
    liq = isolated_liquidation("long", D(100), D(1), D(10), D("0.005"))
    assert liq.price == D("90.5")  # 100 x (1 - 1/10 + 0.005)
    assert liq.margin_left == D("0.5")
    exits = Exits("long", stop_loss=D(95), liquidation=liq.price)
    # the price meets the stop first on its way down, however low the candle goes
    assert check(exits, *bar("100", "101", "92")) == Hit(D(95), STOP_LOSS, TAKER)
    assert check(exits, *bar("100", "101", "80")) == Hit(D(95), STOP_LOSS, TAKER)
    # a gap through the stop only: the open
    assert check(exits, *bar("93", "94", "91")) == Hit(D(93), STOP_LOSS, TAKER, at_open=True)
    # a gap through both: recorded at the liquidation price, not the open
    assert check(exits, *bar("89", "90", "85")) == Hit(D("90.5"), LIQUIDATION, TAKER)


def test_isolated_liquidation_before_the_stop_and_the_margin_lost() -> None:
    liq = isolated_liquidation("long", D(100), D(1), D(10), D("0.005"))
    exits = Exits("long", stop_loss=D(90), liquidation=liq.price)  # the stop is too far
    hit = check(exits, *bar("100", "101", "89"))
    assert hit == Hit(D("90.5"), LIQUIDATION, TAKER)
    assert hit is not None
    model = PaperFillModel(FeeSchedule(), slippage_bps=D(5))
    fill = model.fill(SELL, D(1), hit, liquidation_fee=liq.margin_left)
    assert (fill.price, fill.fee, fill.liquidity) == (D("90.5"), D("0.5"), TAKER)  # no slippage
    loss = unrealized_pnl("long", D(100), D(1), fill.price) - fill.fee
    assert loss == D(-10)  # the whole isolated margin, 100 / 10
    # gapped far below: the loss is still the margin
    gap = check(exits, *bar("70", "72", "65"))
    assert gap == hit


def test_cross_liquidation_price_supplied_by_the_caller() -> None:
    price = liquidation_price_cross("short", D(100), D(2), D(30), D("0.01"))
    assert price == D(114)  # 100 + (30 - 2 x 100 x 0.01) / 2
    exits = Exits("short", stop_loss=D(110), liquidation=price)
    assert check(exits, *bar("100", "115", "99")) == Hit(D(110), STOP_LOSS, TAKER)
    assert check(exits, *bar("112", "113", "111")) == Hit(D(112), STOP_LOSS, TAKER, at_open=True)
    assert check(exits, *bar("116", "118", "115")) == Hit(D(114), LIQUIDATION, TAKER)
    # without a separate fee the liquidation pays the taker fee at the liquidation price
    hit = check(exits, *bar("116", "118", "115"))
    assert hit is not None
    assert PaperFillModel().fill(BUY, D(2), hit).fee == D("0.228")


def test_a_stop_at_the_liquidation_price_counts_as_the_liquidation() -> None:
    exits = Exits("long", stop_loss=D("90.5"), liquidation=D("90.5"))
    assert check(exits, *bar("100", "101", "90")) == Hit(D("90.5"), LIQUIDATION, TAKER)


# -- fills of triggered exits ----------------------------------------------------------------

def test_stop_fills_are_slipped_takers_and_take_profits_are_makers_at_their_price() -> None:
    model = PaperFillModel(FeeSchedule(maker=D("0.0002"), taker=D("0.001")), slippage_bps=D(10))
    stop = model.fill(SELL, D(2), Hit(D(98), STOP_LOSS, TAKER))
    assert (stop.price, stop.fee, stop.liquidity) == (D("97.902"), D("0.195804"), TAKER)
    gap = model.fill(SELL, D(2), Hit(D(96), STOP_LOSS, TAKER, at_open=True))
    assert gap.price == D("95.904")  # the open, slipped like a market order
    tp = model.fill(SELL, D(2), Hit(D(105), TAKE_PROFIT, MAKER))
    assert (tp.price, tp.fee, tp.liquidity) == (D(105), D("0.042"), MAKER)
    short_stop = model.fill(BUY, D(1), Hit(D(102), STOP_LOSS, TAKER))
    assert short_stop.price == D("102.102")


# -- limit orders ----------------------------------------------------------------------------

def test_limit_buy_marketable_at_the_open_is_a_taker_at_the_open() -> None:
    order = RestingLimit(BUY, D(100), placed_ms=1000)
    hit, after = order.on_candle(1000, *bar("99.5", "101", "99"))
    assert hit == Hit(D("99.5"), "limit", TAKER, at_open=True, limit=D(100))
    assert after is None
    assert hit is not None
    slipped = PaperFillModel(slippage_bps=D(10)).fill(BUY, D(1), hit)
    assert (slipped.price, slipped.liquidity) == (D("99.5995"), TAKER)
    capped = PaperFillModel(slippage_bps=D(100)).fill(BUY, D(1), hit)
    assert capped.price == D(100)  # 99.5 x 1.01 would be past the limit


def test_a_candle_that_opened_before_the_order_is_ignored() -> None:
    order = RestingLimit(BUY, D(100), placed_ms=1000)
    assert order.on_candle(999, *bar("99", "99", "98")) == (None, order)


def test_limit_buy_rests_and_fills_as_a_maker_at_its_price() -> None:
    order = RestingLimit(BUY, D(100), placed_ms=1000)
    hit, order2 = order.on_candle(1000, *bar("101", "102", "100.5"))
    assert (hit, order2) == (None, RestingLimit(BUY, D(100), 1000, seen=1))
    assert order2 is not None
    hit, done = order2.on_candle(2000, *bar("100.8", "101", "99.9"))
    assert (hit, done) == (Hit(D(100), "limit", MAKER, limit=D(100)), None)
    assert hit is not None
    fill = PaperFillModel(FeeSchedule(maker=D("0.0002")), slippage_bps=D(10)).fill(BUY, D(3), hit)
    assert (fill.price, fill.fee, fill.liquidity) == (D(100), D("0.06"), MAKER)
    # a resting order the next candle opens through was filled at its price, not the open
    assert order2.on_candle(2000, *bar("99", "99.5", "98"))[0] == Hit(D(100), "limit", MAKER,
                                                                      limit=D(100))
    # crossing on the first eligible candle after a higher open: maker at the limit
    assert order.on_candle(1000, *bar("101", "102", "99"))[0] == Hit(D(100), "limit", MAKER,
                                                                     limit=D(100))


def test_a_touch_of_the_limit_does_not_fill() -> None:
    buy = RestingLimit(BUY, D(100), placed_ms=0)
    hit, after = buy.on_candle(0, *bar("101", "102", "100"))
    assert (hit, after) == (None, RestingLimit(BUY, D(100), 0, seen=1))
    sell = RestingLimit(SELL, D(100), placed_ms=0)
    assert sell.on_candle(0, *bar("99", "100", "98"))[0] is None
    assert sell.on_candle(0, *bar("99", "100.1", "98"))[0] == Hit(D(100), "limit", MAKER,
                                                                  limit=D(100))
    assert sell.on_candle(0, *bar("100", "100", "98"))[0] == Hit(D(100), "limit", TAKER,
                                                                 at_open=True, limit=D(100))


def test_limit_order_expires_after_n_candles() -> None:
    order: RestingLimit[Decimal] | None = RestingLimit(BUY, D(100), placed_ms=0, expires_after=2)
    assert order is not None
    hit, order = order.on_candle(0, *bar("101", "102", "100.5"))
    assert hit is None
    assert order is not None
    hit, order = order.on_candle(1, *bar("101", "102", "100.5"))
    assert (hit, order) == (None, None)  # expired after its second eligible candle
    once = RestingLimit(SELL, D(100), placed_ms=0, expires_after=1)
    assert once.on_candle(0, *bar("99", "99.5", "98")) == (None, None)
    # it still fills on its last candle
    assert RestingLimit(BUY, D(100), placed_ms=0, expires_after=1).on_candle(
        0, *bar("101", "102", "99"))[0] == Hit(D(100), "limit", MAKER, limit=D(100))


# -- validation ------------------------------------------------------------------------------

def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="loss side"):
        Exits("long", stop_loss=D(105), take_profit=D(100))
    with pytest.raises(ValueError, match="loss side"):
        Exits("short", stop_loss=D(95), take_profit=D(100))
    with pytest.raises(ValueError, match="trailing"):
        Exits("long", trailing=D(1))
    with pytest.raises(ValueError, match="side"):
        Exits("flat", stop_loss=D(1))
    with pytest.raises(ValueError, match="Trail"):
        check(Exits("long", trailing=D("0.1")), *bar("1", "1", "1"))
    with pytest.raises(ValueError, match="side"):
        RestingLimit(common_pb2.SIDE_UNSPECIFIED, D(1), 0)
    with pytest.raises(ValueError, match="expires_after"):
        RestingLimit(BUY, D(1), 0, expires_after=0)
