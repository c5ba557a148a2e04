"""Triple-barrier labels, hand-checked on small candle arrays: entry at the next open, stop
before target inside one candle, gaps through the stop or the target, a touch of the target is
not a fill, the time barrier, shorts, ATR barriers, costs from the shared fill model (the
target a maker fill), no information from the entry row or before it, and the same exits as
the executor's Decimal decision (`triggers.check`)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meridian.v1 import common_pb2
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.labels import NO_LABEL, Barriers, triple_barrier
from meridian_common.triggers import Exits, check

LONG, SHORT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT
FREE = PaperFillModel(FeeSchedule(Decimal(0), Decimal(0)), Decimal(0))
COSTLY = PaperFillModel(FeeSchedule(Decimal("0.001"), Decimal("0.001")), Decimal(5))


def candles(*rows: tuple[float, float, float, float]) -> tuple[np.ndarray, ...]:
    o, h, lo, c = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    return o, h, lo, c


FLAT_ROW = (100.0, 100.5, 99.5, 100.0)
DEFAULT = Barriers(0.03, 0.015, 4)


def label_one(direction: int, rows: list[tuple[float, float, float, float]],
              barriers: Barriers = DEFAULT, fills: PaperFillModel = FREE,
              atr: np.ndarray | None = None):
    o, h, lo, c = candles(*rows)
    out = triple_barrier(np.array([0]), np.array([direction]), o, h, lo, c, atr, barriers, fills)
    return out.label[0], out.net_return[0], out.exit_row[0], out.barrier[0]


def test_long_take_profit() -> None:
    label, net, row, why = label_one(LONG, [FLAT_ROW, FLAT_ROW, (100.0, 103.5, 99.8, 103.0),
                                            FLAT_ROW, FLAT_ROW])
    assert (label, row, why) == (1, 2, "take_profit")
    assert net == pytest.approx(0.03)  # entry 100 (row 1's open), exit at the target 103


def test_both_barriers_in_one_candle_count_as_the_stop() -> None:
    label, net, row, why = label_one(LONG, [FLAT_ROW, FLAT_ROW, (100.0, 104.0, 98.0, 101.0),
                                            FLAT_ROW, FLAT_ROW])
    assert (label, row, why) == (0, 2, "stop_loss")
    assert net == pytest.approx(-0.015)


def test_a_gap_through_the_stop_exits_at_the_open() -> None:
    label, net, _, why = label_one(LONG, [FLAT_ROW, FLAT_ROW, (97.0, 97.5, 96.0, 97.2),
                                          FLAT_ROW, FLAT_ROW])
    assert (label, why) == (0, "stop_loss")
    assert net == pytest.approx(-0.03)  # worse than the stop: the open was already below it


def test_time_barrier_exits_at_the_last_close() -> None:
    rows = [FLAT_ROW, FLAT_ROW, FLAT_ROW, FLAT_ROW, (100.0, 101.0, 99.5, 100.8)]
    label, net, row, why = label_one(LONG, rows)
    assert (label, row, why) == (1, 4, "time")
    assert net == pytest.approx(0.008)


def test_short_mirrors_long() -> None:
    label, net, _, why = label_one(SHORT, [FLAT_ROW, FLAT_ROW, (100.0, 100.2, 96.5, 97.0),
                                           FLAT_ROW, FLAT_ROW])
    assert (label, why) == (1, "take_profit")
    assert net == pytest.approx(0.03)
    label, _, _, why = label_one(SHORT, [FLAT_ROW, FLAT_ROW, (100.0, 101.6, 99.0, 101.0),
                                         FLAT_ROW, FLAT_ROW])
    assert (label, why) == (0, "stop_loss")


def test_costs_come_from_the_shared_fill_model_and_can_flip_a_label() -> None:
    rows = [FLAT_ROW, FLAT_ROW, FLAT_ROW, FLAT_ROW, (100.0, 100.3, 99.9, 100.1)]
    assert label_one(LONG, rows)[0] == 1  # +0.1 % gross
    label, net, _, _ = label_one(LONG, rows, fills=COSTLY)
    assert label == 0
    entry, exit_ = 100.0 * 1.0005, 100.1 * 0.9995  # 5 bps slippage each way
    assert net == pytest.approx(exit_ / entry - 1 - 0.001 * (entry + exit_) / entry)


def test_atr_barriers_scale_with_the_atr_at_the_entry_row() -> None:
    atr = np.full(5, 2.0)
    b = Barriers(take_profit=1.5, stop_loss=1.0, max_holding=4, use_atr=True)
    label, net, _, why = label_one(LONG, [FLAT_ROW, FLAT_ROW, (100.0, 103.1, 99.5, 103.0),
                                          FLAT_ROW, FLAT_ROW], b, atr=atr)
    assert (label, why) == (1, "take_profit")
    assert net == pytest.approx(0.03)  # 1.5 x ATR 2 = 3 points on 100
    with pytest.raises(ValueError, match="ATR"):
        label_one(LONG, [FLAT_ROW] * 5, b)


def test_entries_whose_time_barrier_is_beyond_the_data_get_no_label() -> None:
    o, h, lo, c = candles(*([FLAT_ROW] * 6))
    out = triple_barrier(np.array([0, 1, 2]), np.array([LONG, LONG, LONG]), o, h, lo, c, None,
                         Barriers(0.03, 0.015, 4), FREE)
    assert out.label.tolist() == [0, 0, NO_LABEL]  # flat prices: 0 net is not a win
    assert out.exit_row.tolist() == [4, 5, -1]
    assert np.isnan(out.net_return[2])


def test_a_label_reads_nothing_at_or_before_its_entry_row() -> None:
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    o = np.r_[close[0], close[:-1]]
    h, lo = np.maximum(o, close) * 1.004, np.minimum(o, close) * 0.996
    rows = np.arange(10, 350, 7)
    dirs = np.where(rows % 2 == 0, LONG, SHORT)
    base = triple_barrier(rows, dirs, o, h, lo, close, None, Barriers(0.02, 0.01, 24), COSTLY)
    for k, i in enumerate(rows.tolist()):
        past = [a.copy() for a in (o, h, lo, close)]
        for a in past:
            a[: i + 1] *= 1.5  # every candle up to and including the entry row
        # row i+1's open is the entry price: keep it, it is the first thing after the decision
        mutated = triple_barrier(rows[k:k + 1], dirs[k:k + 1], *past, None,
                                 Barriers(0.02, 0.01, 24), COSTLY)
        assert mutated.label[0] == base.label[k]
        assert mutated.net_return[0] == base.net_return[k] or np.isnan(base.net_return[k])
    future = [a.copy() for a in (o, h, lo, close)]
    for a in future:
        a[rows[0] + 2:] *= 0.8  # control: changing the future does change labels
    moved = triple_barrier(rows[:1], dirs[:1], *future, None, Barriers(0.02, 0.01, 24), COSTLY)
    assert moved.net_return[0] != base.net_return[0]


def test_a_touch_of_the_target_is_not_a_fill() -> None:
    # the take-profit is a resting limit: the high at exactly 103 does not prove it filled
    rows = [FLAT_ROW, FLAT_ROW, (100.0, 103.0, 99.8, 102.0), FLAT_ROW, FLAT_ROW]
    label, net, row, why = label_one(LONG, rows)
    assert (label, row, why) == (0, 4, "time")
    assert net == pytest.approx(0.0)


def test_an_open_beyond_the_target_takes_profit_even_if_the_candle_reaches_the_stop() -> None:
    # the open is the one known point of the candle's path: the target (103) was gone through
    # before it, so the later dip to the stop (98.5) comes too late (it used to count as the stop)
    label, net, row, why = label_one(LONG, [FLAT_ROW, FLAT_ROW, (104.0, 104.5, 98.0, 99.0),
                                            FLAT_ROW, FLAT_ROW])
    assert (label, row, why) == (1, 2, "take_profit")
    assert net == pytest.approx(0.03)  # at the target, not the better open


def test_the_target_is_a_maker_fill_and_the_stop_a_slipped_taker() -> None:
    fills = PaperFillModel(FeeSchedule(Decimal("0.0002"), Decimal("0.001")), Decimal(5))
    _, net, _, why = label_one(LONG, [FLAT_ROW, FLAT_ROW, (100.0, 103.5, 99.8, 103.0),
                                      FLAT_ROW, FLAT_ROW], fills=fills)
    entry = 100.0 * 1.0005
    assert why == "take_profit"
    assert net == pytest.approx(103.0 / entry - 1 - (0.001 * entry + 0.0002 * 103.0) / entry)
    _, net, _, why = label_one(LONG, [FLAT_ROW, FLAT_ROW, (100.0, 100.5, 98.0, 99.0),
                                      FLAT_ROW, FLAT_ROW], fills=fills)
    exit_ = 98.5 * 0.9995
    assert why == "stop_loss"
    assert net == pytest.approx(exit_ / entry - 1 - 0.001 * (entry + exit_) / entry)


CANDLE = st.tuples(st.floats(-0.03, 0.03), st.floats(0, 0.03), st.floats(0, 0.03))


@given(st.lists(CANDLE, min_size=6, max_size=6), st.sampled_from([LONG, SHORT]))
def test_labels_exit_where_the_executor_would(moves: list[tuple[float, float, float]],
                                              direction: int) -> None:
    """The label's exit is the executor's Decimal decision on the same numbers, candle by
    candle: one implementation of the rules, two number types."""
    rows = [FLAT_ROW]
    for gap, up, down in moves:
        o = rows[-1][3] * (1 + gap)
        rows.append((o, o * (1 + up), o * (1 - down), o * (1 + up - down)))
    barriers = Barriers(0.02, 0.01, 6)
    _, _, row, why = label_one(direction, rows, barriers)
    entry = rows[1][0]
    sl, tp = 0.01 * entry, 0.02 * entry  # as Barriers.distances computes them
    long = direction == LONG
    exits = Exits(direction, stop_loss=Decimal(entry - sl if long else entry + sl),
                  take_profit=Decimal(entry + tp if long else entry - tp))  # exact conversions
    expected = (6, "time")
    for j in range(1, 7):
        o, h, lo, _ = (Decimal(x) for x in rows[j])
        hit = check(exits, o, h, lo)
        if hit is not None:
            expected = (j, hit.reason)
            break
    assert (row, why) == expected


def test_a_target_beyond_zero_never_triggers() -> None:
    # ATR barriers wider than the price: the short's target is below zero and simply never fills
    b = Barriers(take_profit=60.0, stop_loss=1.0, max_holding=4, use_atr=True)
    label, _, row, why = label_one(SHORT, [FLAT_ROW] * 5, b, atr=np.full(5, 2.0))
    assert (label, row, why) == (0, 4, "time")
