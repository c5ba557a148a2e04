"""Per-strategy limits from PostgreSQL `active_configs`: applied at start-up, a bad row stops the
start naming the strategy, version and field, and a promotion announced on control.v1 is read
after the batch (a bad one refused, the previous limits kept)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb

from meridian.v1 import common_pb2, control_pb2, risk_decision_pb2, signal_pb2
from meridian_common import db, topics
from meridian_common.config import ConfigError
from meridian_common.handler import Inbound, Outbox
from meridian_common.testing import caught_up
from meridian_risk.active import ActiveConfigStore
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

pytestmark = pytest.mark.integration
HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR
KEY = "bybit:BTCUSDT"


def _promote(url: str, strategy: str, version: str, leverage: str, margin_mode: str,
             max_position: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        conn.execute("update active_configs set promoted_at = null where strategy = %s",
                     (strategy,))
        conn.execute(
            "insert into active_configs (strategy, version, parameters, leverage, margin_mode,"
            " max_position_notional, study, trial, created_at, promoted_at)"
            " values (%s, %s, %s, %s, %s, %s, 'wf-2024', 17, %s, %s)",
            (strategy, version, Jsonb({"ema_fast": 12}), Decimal(leverage), margin_mode,
             Decimal(max_position), now, now))


def _decide(gate: RiskHandler, i: int, strategy: str, key: str = KEY
            ) -> risk_decision_pb2.RiskDecision:
    t = T0 + i * HOUR
    exchange, symbol = key.split(":")
    sig = signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:{strategy}:{t}", event_time_ms=t, producer="signals"),
        exchange=exchange, symbol=symbol, strategy=strategy,
        direction=common_pb2.DIRECTION_LONG, confidence=1.0, reference_price="100",
        stop_loss="95")
    out = Outbox("risk")
    gate.handle(Inbound(topics.SIGNAL, key, sig), out)
    caught_up(gate, gate.merge.progress(), (topics.SIGNAL, key), t, out)
    [d] = [m for t_, _, m in out.items if t_ == topics.RISK_DECISION]
    return d  # type: ignore[return-value]


def _detail(d: risk_decision_pb2.RiskDecision, rule: str) -> str:
    return next(r.detail for r in d.rules if r.rule == rule)


async def _announce(gate: RiskHandler, name: str, version: str) -> None:
    """The promotion on control.v1, then the end of its batch (where the gate reads it)."""
    gate.handle(Inbound(topics.CONTROL, f"config:{name}", control_pb2.Control(
        meta=common_pb2.Meta(id=f"promote-{name}-{version}", event_time_ms=T0),
        config_promotion=control_pb2.ConfigPromotion(config_name=name,
                                                     config_version=version))), Outbox("risk"))
    await gate.flush()


async def _scenario(url: str) -> None:
    engine = db.create_engine(url)
    try:
        base = RiskSettings(sizing="fixed_fraction", sizing_fraction=Decimal("0.2"))
        gate = RiskHandler(base, configs=ActiveConfigStore(engine))
        await gate.start()
        d = _decide(gate, 1, "trend")  # promoted: 3x isolated, max position 6000
        assert d.approved
        assert Decimal(d.quantity) == 60  # 0.2 x 10,000 x 3 / 100
        assert _detail(d, "order.max_leverage").endswith("vs max 3x (active config trend@v7)")
        d = _decide(gate, 2, "meanrev", "bybit:ETHUSDT")  # no active config: the settings (1x)
        assert Decimal(d.quantity) == 20
        assert "active config" not in _detail(d, "order.max_leverage")

        # a new promotion is read after the batch that announced it
        _promote(url, "meanrev", "v2", "2", "cross", "4000")
        await _announce(gate, "meanrev", "v2")
        assert gate.config_versions["meanrev"] == "meanrev@v2"
        assert gate.strategy_settings["meanrev"].margin_mode == "cross"

        # a bad promotion is refused live, the previous limits stay
        _promote(url, "meanrev", "v3", "500", "cross", "4000")
        await _announce(gate, "meanrev", "v3")
        assert gate.config_versions["meanrev"] == "meanrev@v2"

        # ... and stops a start-up, naming it and the field
        fresh = RiskHandler(base, configs=ActiveConfigStore(engine))
        with pytest.raises(ConfigError, match=r"active_configs meanrev@v3: leverage: .*125"):
            await fresh.start()
    finally:
        await engine.dispose()


def test_active_configs_set_per_strategy_limits(new_database: Callable[[str], str]) -> None:
    url = new_database("activecfg")
    db.migrate(url)
    _promote(url, "trend", "v7", "3", "isolated", "6000")
    asyncio.run(_scenario(url))
