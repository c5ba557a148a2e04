"""A promoted parameter set becomes rules and barriers, or a clear error naming the key."""

from __future__ import annotations

import pytest

from meridian_common.labels import Barriers
from meridian_common.strategy.configured import StrategyConfigError, configured_strategy
from meridian_common.strategy.trend import TrendParams


def test_applies_rules_and_barriers_over_the_bases() -> None:
    rules, barriers = configured_strategy(
        {"entry_score": 0.7, "allow_short": True, "stop_loss": 0.02, "leverage": 3,
         "margin_mode": "cross", "ema_fast": 20},
        TrendParams(rsi_band=7.0), Barriers(take_profit=0.05))
    assert rules == TrendParams(rsi_band=7.0, entry_score=0.7, allow_short=True)
    assert barriers == Barriers(take_profit=0.05, stop_loss=0.02)


@pytest.mark.parametrize(("parameters", "message"), [
    ({"entry_scor": 0.7}, "unknown parameter.*entry_scor"),
    ({"ema_slow": 100}, r"ema_slow=100 \(the live feature set trend@2.0.0 has 50\)"),
    ({"entry_score": 0.2, "exit_score": 0.4}, "exit_score must be in"),
    ({"stop_loss": 1.5}, "stop_loss 1.5 is a fraction"),
])
def test_refuses_what_the_services_cannot_run(parameters: dict[str, object],
                                              message: str) -> None:
    with pytest.raises(StrategyConfigError, match=message):
        configured_strategy(parameters, TrendParams(), Barriers())
