"""Properties of the intrabar trigger rules over random candles and exits: where an exit can
be, that a stop never fills better than its level, that a decision reads only its own candle
(and the trailing state of the ones before), that a long's stop decision never uses the
candle's high, that floats and Decimals decide alike, and that limit orders never fill past
their limit."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import assume, given
from hypothesis import strategies as st

from meridian.v1 import common_pb2, fill_pb2
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.money import MONEY_CONTEXT
from meridian_common.triggers import (
    LIQUIDATION,
    TAKE_PROFIT,
    TRAILING_STOP,
    Exits,
    Hit,
    RestingLimit,
    Trail,
    check,
    step,
)

D = Decimal
PRICE = st.decimals(min_value=D("1"), max_value=D("1000"), places=2)
MOVE = st.decimals(min_value=D("0"), max_value=D("80"), places=2)


@dataclass(frozen=True)
class Bar:
    open: Decimal
    high: Decimal
    low: Decimal


@st.composite
def bars(draw: st.DrawFn, around: Decimal | None = None) -> Bar:
    o = draw(PRICE) if around is None else max(D("0.01"), around + draw(
        st.decimals(min_value=D("-60"), max_value=D("60"), places=2)))
    up, down = draw(MOVE), draw(MOVE)
    return Bar(o, o + up, max(D("0.01"), o - down))


@st.composite
def positions(draw: st.DrawFn) -> tuple[Exits[Decimal], Decimal]:
    """Exits of a position entered at `entry`, each exit optional, on its proper side."""
    entry = draw(st.decimals(min_value=D("50"), max_value=D("500"), places=2))
    long = draw(st.booleans())
    s = 1 if long else -1
    dist = st.decimals(min_value=D("0.01"), max_value=D("40"), places=2)
    stop = entry - s * draw(dist) if draw(st.booleans()) else None
    tp = entry + s * draw(dist) if draw(st.booleans()) else None
    trailing = draw(st.decimals(min_value=D("0.001"), max_value=D("0.3"), places=3)) \
        if draw(st.booleans()) else None
    liq = entry - s * draw(dist) if draw(st.booleans()) else None  # before or after the stop
    return Exits("long" if long else "short", stop_loss=stop, take_profit=tp, trailing=trailing,
                 liquidation=liq), entry


def beyond(long: bool, price: Decimal, level: Decimal) -> bool:
    """The price is at or past a stop-type level, seen from the position."""
    return price <= level if long else price >= level


def stop_level(exits: Exits[Decimal], trail: Trail[Decimal], reason: str) -> Decimal:
    if reason == TRAILING_STOP:
        assert exits.trailing is not None
        return trail.level(exits.long, exits.trailing)
    level = exits.liquidation if reason == LIQUIDATION else exits.stop_loss
    assert level is not None
    return level


@given(positions(), bars(), st.decimals(min_value=D("0"), max_value=D("100"), places=2))
def test_where_an_exit_can_be(position: tuple[Exits[Decimal], Decimal], b: Bar,
                              run: Decimal) -> None:
    exits, entry = position
    long = exits.long
    best = entry + run if long else max(D("0.01"), entry - run)
    trail = Trail(best)
    hit = check(exits, b.open, b.high, b.low, trail)
    if hit is None:
        return
    if hit.reason == TAKE_PROFIT:
        # at its own price, a maker, and only when the candle traded through it
        assert hit.price == exits.take_profit
        assert hit.liquidity == fill_pb2.LIQUIDITY_MAKER
        assert (b.high > hit.price) if long else (b.low < hit.price)
        return
    assert hit.liquidity == fill_pb2.LIQUIDITY_TAKER
    level = stop_level(exits, trail, hit.reason)
    if hit.at_open:
        # a gap: the open, which is beyond the level (never better than the stop)
        assert hit.price == b.open
        assert beyond(long, b.open, level)
    elif hit.reason == LIQUIDATION and beyond(long, b.open, level):
        assert hit.price == level  # a gap through the liquidation: recorded at its price
    else:
        assert b.low <= hit.price <= b.high
        assert hit.price == level
    # a stop never fills better than its level
    assert (hit.price <= level) if long else (hit.price >= level)


@given(positions(), bars(), st.decimals(min_value=D("0"), max_value=D("80"), places=2))
def test_a_stop_decision_never_reads_the_favourable_extreme(
        position: tuple[Exits[Decimal], Decimal], b: Bar, more: Decimal) -> None:
    """Without a take-profit, a long's exit does not depend on the candle's high (nor a short's
    on its low): the trailing level comes from earlier candles, never from this one's high."""
    exits, entry = position
    assume(exits.take_profit is None)
    trail = Trail(entry)
    if exits.long:
        other = Bar(b.open, b.high + more, b.low)
    else:
        other = Bar(b.open, b.high, max(D("0.01"), b.low - more))
    assert check(exits, b.open, b.high, b.low, trail) == \
        check(exits, other.open, other.high, other.low, trail)


def walk(exits: Exits[Decimal], entry: Decimal,
         candles: list[Bar]) -> tuple[int, Hit[Decimal]] | None:
    trail: Trail[Decimal] | None = Trail(entry)
    for k, b in enumerate(candles):
        hit, trail = step(exits, trail, b.open, b.high, b.low)
        if hit is not None:
            return k, hit
    return None


@given(positions(), st.data())
def test_a_decision_never_reads_later_candles(position: tuple[Exits[Decimal], Decimal],
                                              data: st.DataObject) -> None:
    exits, entry = position
    candles = data.draw(st.lists(bars(around=entry), min_size=1, max_size=12))
    result = walk(exits, entry, candles)
    cut = len(candles) if result is None else result[0] + 1
    other = data.draw(st.lists(bars(around=entry), max_size=6))
    again = walk(exits, entry, candles[:cut] + other)
    if result is None:
        assert again is None or again[0] >= cut  # new candles can only add a later exit
    else:
        assert again == result
        k, hit = result
        # the decision on candle k is a function of the state before it and candle k alone
        trail = Trail.replay(exits.long, entry, [(b.high, b.low) for b in candles[:k]])
        assert check(exits, candles[k].open, candles[k].high, candles[k].low, trail) == hit


@given(positions(), bars(), st.decimals(min_value=D("0"), max_value=D("100"), places=2))
def test_floats_and_decimals_decide_alike(position: tuple[Exits[Decimal], Decimal], b: Bar,
                                          run: Decimal) -> None:
    exits, entry = position
    best = entry + run if exits.long else max(D("0.01"), entry - run)
    trail = Trail(best)
    as_float = Exits(exits.side, *(None if v is None else float(v) for v in (
        exits.stop_loss, exits.take_profit, exits.trailing, exits.liquidation)))
    if exits.trailing is not None:
        # the level is rounded in floats: skip candles that touch it to within the rounding
        level = trail.level(exits.long, exits.trailing)
        for p in (b.open, b.high, b.low):
            assume(abs(p - level) > D("1e-6"))
    exact = check(exits, b.open, b.high, b.low, trail)
    approx = check(as_float, float(b.open), float(b.high), float(b.low), Trail(float(best)))
    assert (exact is None) == (approx is None)
    if exact is not None and approx is not None:
        assert (exact.reason, exact.liquidity, exact.at_open) == \
            (approx.reason, approx.liquidity, approx.at_open)
        assert abs(float(exact.price) - approx.price) <= 1e-9 * approx.price


@given(st.sampled_from([common_pb2.SIDE_BUY, common_pb2.SIDE_SELL]), PRICE,
       st.lists(bars(), min_size=1, max_size=8), st.integers(1, 8),
       st.decimals(min_value=D(0), max_value=D(1000), places=1))
def test_a_limit_order_never_fills_past_its_limit(side: int, limit: Decimal, candles: list[Bar],
                                                  expiry: int, bps: Decimal) -> None:
    buy = side == common_pb2.SIDE_BUY
    order: RestingLimit[Decimal] | None = RestingLimit(side, limit, 0, expires_after=expiry)
    for k, b in enumerate(candles):
        assert order is not None
        hit, order = order.on_candle(k, b.open, b.high, b.low)
        if hit is not None:
            if hit.liquidity == fill_pb2.LIQUIDITY_TAKER:
                assert k == 0  # marketable only on its first candle, at the open
                assert hit.price == b.open
            else:
                assert hit.price == limit
                assert (b.low < limit) if buy else (b.high > limit)  # through, not a touch
            fill = PaperFillModel(FeeSchedule(), bps).fill(side, D(1), hit)
            assert (fill.price <= limit) if buy else (fill.price >= limit)
            assert fill.fee == FeeSchedule().fee(D(1), fill.price, hit.liquidity)
            assert order is None
            return
        if order is None:
            assert k + 1 == expiry  # expired after its last eligible candle
            return
    assert order == RestingLimit(side, limit, 0, expires_after=expiry, seen=len(candles))


@given(positions(), st.lists(bars(around=D(200)), max_size=10))
def test_the_trailing_state_is_the_best_price_so_far(position: tuple[Exits[Decimal], Decimal],
                                                     candles: list[Bar]) -> None:
    exits, entry = position
    trail = Trail.replay(exits.long, entry, [(b.high, b.low) for b in candles])
    extremes = [entry, *(b.high if exits.long else b.low for b in candles)]
    assert trail.best == (max(extremes) if exits.long else min(extremes))
    if exits.trailing is not None:
        f = exits.trailing
        factor = (D(1) - f) if exits.long else (D(1) + f)
        assert trail.level(exits.long, f) == MONEY_CONTEXT.multiply(trail.best, factor)
