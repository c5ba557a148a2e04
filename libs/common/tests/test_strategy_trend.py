"""TrendRules: weighted votes, hysteresis between entry and exit, RSI-extreme vetoes, NaN inputs
abstaining, and the same entries row by row as over a whole matrix of real features."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from meridian.v1 import common_pb2
from meridian_common.features import TREND_V2, feature_matrix
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_common.strategy import TrendParams, TrendRules, row_inputs, trend_events

LONG, SHORT, FLAT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT, common_pb2.DIRECTION_FLAT
NAN = math.nan


def test_score_is_the_weighted_mean_of_the_votes_that_have_inputs() -> None:
    rules = TrendRules(TrendParams(ema_weight=2.0, h4_weight=0.0))
    score, votes = rules.score(0.01, -0.001, 60.0, 0.5)
    assert score == pytest.approx((2 * 1 + 1 * -1 + 1 * 1) / 4)
    assert votes == "ema +1, macd -1, rsi +1"  # h4 has weight 0: not a vote
    score, votes = rules.score(0.01, NAN, 50.0, NAN)
    assert score == pytest.approx(2 / 3)  # macd abstains; rsi inside the band votes 0
    assert votes == "ema +1, rsi +0"
    assert math.isnan(TrendRules(TrendParams()).score(NAN, NAN, NAN, NAN)[0])


def test_entry_needs_the_entry_score_and_exit_waits_for_the_exit_score() -> None:
    rules = TrendRules(TrendParams(entry_score=0.5, exit_score=0.0))
    assert rules.update(0.01, -0.001, 50.0, 0.01) is None  # score 1/4: below entry
    vote = rules.update(0.01, 0.001, 50.0, 0.01)  # 3/4
    assert vote is not None
    assert vote.direction == LONG
    assert vote.strength == pytest.approx(0.75)
    assert "ema +1, macd +1, rsi +0, h4 +1" in vote.reason
    assert rules.update(0.01, -0.001, 50.0, 0.01) is None  # 1/4: weaker, but above exit
    vote = rules.update(-0.01, -0.001, 50.0, 0.01)  # -1/4: exit
    assert vote is not None
    assert vote.direction == FLAT
    assert rules.state == FLAT


def test_shorts_only_when_allowed_and_an_exit_can_flip_straight_to_short() -> None:
    assert TrendRules(TrendParams()).update(-0.01, -0.001, 40.0, -0.01) is None
    rules = TrendRules(TrendParams(allow_short=True))
    assert rules.update(0.01, 0.001, 60.0, 0.01).direction == LONG  # type: ignore[union-attr]
    vote = rules.update(-0.01, -0.001, 40.0, -0.01)
    assert vote is not None
    assert vote.direction == SHORT


@pytest.mark.parametrize(("rsi", "allowed"), [(69.9, True), (70.0, False), (85.0, False)])
def test_overbought_vetoes_a_long_entry_until_it_cools(rsi: float, allowed: bool) -> None:
    rules = TrendRules(TrendParams())
    vote = rules.update(0.01, 0.001, rsi, 0.01)
    assert (vote is not None) == allowed
    if not allowed:
        assert rules.update(0.01, 0.001, 65.0, 0.01).direction == LONG  # type: ignore[union-attr]


def test_oversold_vetoes_a_short_entry() -> None:
    rules = TrendRules(TrendParams(allow_short=True))
    assert rules.update(-0.01, -0.001, 30.0, -0.01) is None
    assert rules.update(-0.01, -0.001, 35.0, -0.01).direction == SHORT  # type: ignore[union-attr]


@pytest.mark.parametrize("kw", [{"entry_score": 0.0}, {"exit_score": 0.6}, {"rsi_band": 50.0},
                                {"rsi_overbought": 50.0}, {"ema_weight": -1.0},
                                {"ema_weight": 0.0, "macd_weight": 0.0, "rsi_weight": 0.0,
                                 "h4_weight": 0.0}])
def test_bad_params_name_the_field(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw)).split("_")[-1]):
        TrendParams(**kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def btc_matrix() -> np.ndarray:
    rows = list(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(1_609_459_200_000,
                                                                          1_640_995_200_000))
    cols = list(zip(*[(r.open_time_ms, float(r.high), float(r.low), float(r.close),
                       float(r.volume)) for r in rows], strict=True))
    return feature_matrix(*cols)


def test_events_over_a_matrix_equal_the_rules_row_by_row(btc_matrix: np.ndarray) -> None:
    params = TrendParams(allow_short=True)
    rows, directions, strengths = trend_events(btc_matrix, TREND_V2, params)
    assert rows.size > 50  # a year of BTC changes its mind often enough
    rules = TrendRules(params)
    technical = [TREND_V2.index(c) for c in TREND_V2.columns if c not in TREND_V2.context]
    expected = []
    for i, row in enumerate(btc_matrix.tolist()):
        if any(math.isnan(row[j]) for j in technical):
            continue
        vote = rules.update(*row_inputs(row, TREND_V2))
        if vote is not None:
            expected.append((i, vote.direction, vote.strength))
    assert list(zip(rows.tolist(), directions.tolist(), strengths.tolist(), strict=True)) == \
        expected
    # a state machine: never the same direction twice in a row
    assert all(a != b for a, b in itertools.pairwise(directions.tolist()))
    assert set(directions.tolist()) == {LONG, SHORT, FLAT}
