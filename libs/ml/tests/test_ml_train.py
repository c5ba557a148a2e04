"""The meta-labelling dataset and the walk-forward trainer on real BTC/ETH data: events carry
their label horizon, every fold is tuned and scored out of sample, and a run repeats exactly."""

from __future__ import annotations

import numpy as np
import pytest

from meridian.v1 import common_pb2
from meridian_common.features import TREND_V2
from meridian_common.fills import PaperFillModel
from meridian_common.labels import Barriers
from meridian_common.marketdata import default_data_dir
from meridian_common.strategy import TrendParams
from meridian_ml.dataset import EXTRA_COLUMNS, build_events, csv_funding, load_csv
from meridian_ml.splits import WalkForward
from meridian_ml.train import TrainConfig, final_model, walk_forward

DAY = 86_400_000
START, END = 1_609_459_200_000, 1_672_531_200_000  # 2021-01-01 .. 2023-01-01


@pytest.fixture(scope="module")
def events():
    candles = load_csv(default_data_dir(), ["BTCUSDT", "ETHUSDT"], START, END)
    return build_events(candles, TREND_V2, TrendParams(allow_short=True),
                        Barriers(2.0, 1.0, 48, use_atr=True), PaperFillModel(),
                        csv_funding(default_data_dir()))


def test_events_are_entries_with_their_horizon_in_decision_order(events) -> None:
    assert len(events) > 500
    assert events.columns == (*TREND_V2.columns, *EXTRA_COLUMNS)
    assert events.x.shape == (len(events), len(events.columns))
    assert events.x.dtype == np.float32
    assert np.all(np.diff(events.t0) >= 0)
    assert np.all(events.t1 > events.t0)  # the label ends after the decision
    assert np.all(events.t1 <= events.t0 + 48 * 3_600_000)  # the time barrier
    assert set(events.direction.tolist()) == {common_pb2.DIRECTION_LONG,
                                              common_pb2.DIRECTION_SHORT}
    sign = events.x[:, events.columns.index("direction")]
    assert np.array_equal(sign > 0, events.direction == common_pb2.DIRECTION_LONG)
    assert set(events.y.tolist()) == {0, 1}
    assert np.array_equal(events.y == 1, events.net_return > 0)
    assert set(events.symbol.tolist()) == {"BTCUSDT", "ETHUSDT"}


def test_walk_forward_scores_only_unseen_windows_and_repeats_exactly(events) -> None:
    config = TrainConfig(WalkForward(180 * DAY, 60 * DAY, 2 * DAY), trials=3, seed=3)
    lines: list[str] = []
    first = walk_forward(events, config, lines.append)
    assert len(first.folds) >= 6
    assert any("trial" in line for line in lines)
    assert any("AUC" in line for line in lines)
    for fold in first.folds:
        assert fold.train_events > 0
        assert fold.test_events > 0
        assert fold.strategy["primary.trades"] == fold.test_events
        assert fold.strategy["meta-filtered.trades"] == fold.taken
        assert 0.0 <= fold.strategy["meta-filtered.max_drawdown"] < 1.0
    # every out-of-sample row belongs to exactly one fold's test window
    assert np.unique(first.oos_index).size == first.oos_index.size
    assert np.all((first.oos_proba >= 0) & (first.oos_proba <= 1))
    m = first.metrics
    assert 0.0 <= m["auc"] <= 1.0
    assert m["meta-filtered.trades"] <= m["primary.trades"] == first.oos_index.size
    assert first.curves["primary"][0][1] == 1.0
    again = walk_forward(events, config)
    assert again.metrics == first.metrics
    assert np.array_equal(again.oos_proba, first.oos_proba)


def test_final_model_is_fit_on_the_most_recent_window(events) -> None:
    config = TrainConfig(WalkForward(180 * DAY, 60 * DAY, 2 * DAY), trials=2)
    model, params = final_model(events, config)
    p = model.predict_proba(events.x[-50:])[:, 1]
    assert p.shape == (50,)
    assert isinstance(params, dict)


def test_equity_curve_of_no_trades_is_flat_and_trades_compound_at_their_exit() -> None:
    from meridian_ml.train import equity_curve

    flat = equity_curve(np.empty(0, dtype=np.int64), np.empty(0), 0.25, 0, 2 * DAY)
    assert [v for _, v in flat] == [1.0, 1.0, 1.0]
    curve = equity_curve(np.array([DAY + 5, 5]), np.array([0.1, -0.2]), 0.5, 0, 2 * DAY)
    assert [round(v, 12) for _, v in curve] == [1.0, 0.9, 0.945]
