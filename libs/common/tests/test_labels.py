"""Triple-barrier labels, hand-checked on small candle arrays: entry at the next open, stop
before target inside one candle, gaps through the stop, the time barrier, shorts, ATR barriers,
costs from the shared fill model, and no information from the entry row or before it."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from meridian.v1 import common_pb2
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.labels import NO_LABEL, Barriers, triple_barrier

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
