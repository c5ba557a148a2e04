"""A promoted config becomes a strategy's settings through the same schema as the environment:
valid limits apply as a whole, a bad value names the config and the field."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian_common.config import ConfigError
from meridian_risk.active import ActiveConfig, resolve, strategy_settings
from meridian_risk.settings import RiskSettings


def _config(**values: object) -> ActiveConfig:
    base: dict[str, object] = {"strategy": "trend", "version": "v1", "leverage": Decimal(5),
                               "margin_mode": "cross",
                               "max_position_notional": Decimal(4000)}
    return ActiveConfig(**(base | values))  # type: ignore[arg-type]


def test_a_config_overrides_only_its_limits() -> None:
    base = RiskSettings(order_notional=Decimal(700))
    s = strategy_settings(base, _config())
    assert (s.leverage, s.margin_mode, s.max_position_notional) == (
        Decimal(5), "cross", Decimal(4000))
    assert s.order_notional == Decimal(700)
    assert resolve(base, [_config(), _config(strategy="grid", version="v9")]).keys() == {
        "trend", "grid"}


@pytest.mark.parametrize(("values", "field"), [
    ({"leverage": Decimal(0)}, "leverage"),
    ({"margin_mode": "portfolio"}, "margin_mode"),
    ({"max_position_notional": Decimal(-1)}, "max_position_notional"),
    # cross-field: 5% maintenance x 25x leverage liquidates at entry
    ({"leverage": Decimal(25)}, "maintenance_margin_rate"),
])
def test_a_bad_config_names_itself_and_the_field(values: dict[str, object], field: str) -> None:
    base = RiskSettings(maintenance_margin_rate=Decimal("0.05"))
    with pytest.raises(ConfigError, match=rf"active_configs trend@v1: .*{field}"):
        strategy_settings(base, _config(**values))
