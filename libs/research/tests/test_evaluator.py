"""The trend rules as an Optuna evaluator: its space obeys the study's rules, a window is
simulated on the window's rows only, and leverage shows up as liquidation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import optuna
import pytest

from meridian_research.data import load_wide, to_ms
from meridian_research.evaluator import TrendEvaluator, window_slice
from meridian_research.study import check_leverage
from meridian_research.walkforward import rolling_windows

BASE = {"entry_score": 0.5, "exit_score": 0.0, "rsi_band": 5.0, "stop_loss": 0.015,
        "take_profit": 0.03, "allow_short": True, "margin_mode": "isolated"}


@pytest.fixture(scope="module")
def evaluator() -> TrendEvaluator:
    return TrendEvaluator(load_wide(("BTCUSDT",), start="2021-01-01", end="2022-01-01"))


@pytest.fixture(scope="module")
def windows() -> list:
    return rolling_windows(datetime(2021, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC),
                           train=timedelta(days=120), test=timedelta(days=60))


def test_space_searches_leverage_and_keeps_the_exit_below_the_entry(
        evaluator: TrendEvaluator) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(30):
        trial = study.ask()
        params = evaluator.space(trial)
        check_leverage(params, trial.distributions)
        assert 1 <= params["leverage"] <= 10
        assert params["exit_score"] < params["entry_score"]
        assert trial.user_attrs["fixed"]["exit_score"] == params["exit_score"]
        assert "ema_slow" not in params  # feature windows only on request
        study.tell(trial, 0.0)


def test_a_window_is_simulated_on_its_rows_only(evaluator: TrendEvaluator,
                                               windows: list) -> None:
    window = windows[0]
    wide, cut = window_slice(evaluator.wide, evaluator.signals({**BASE, "leverage": 1}),
                             window.test_start, window.test_end)
    times = to_ms(wide.index)
    assert times[0] >= window.test_start
    assert times[-1] < window.test_end
    assert cut.long_entries.index.equals(wide.index)
    assert evaluator.signals({**BASE, "leverage": 3}) is \
        evaluator.signals({**BASE, "leverage": 1})  # leverage does not change the signals


def test_leverage_scales_the_result_and_liquidates(evaluator: TrendEvaluator,
                                                  windows: list) -> None:
    window = windows[0]
    one = evaluator.evaluate({**BASE, "leverage": 1}, window)
    three = evaluator.evaluate({**BASE, "leverage": 3}, window)
    assert one.trades == three.trades > 0
    assert abs(three.total_return) > abs(one.total_return)
    # no stop inside the liquidation distance and rules that hold through a fall: a 10x long
    # is liquidated in 2021, the same trades at 1x never are
    wide_stop = {**BASE, "exit_score": -0.9, "allow_short": False, "stop_loss": 0.2,
                 "take_profit": 0.5, "leverage": 10}
    results = [evaluator.evaluate(wide_stop, w) for w in windows]
    assert any(r.liquidated for r in results)
    assert not any(evaluator.evaluate({**wide_stop, "leverage": 1}, w).liquidated
                   for w in windows)
