"""The gate's series agree with what it emitted and with its state: decisions and rejections
counted from the decisions published (real candles and signals), the kill switch and breaker
gauges through an escalation and an operator's clear, nothing counted while the host replays, and
the gauges right after a restore."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from functools import cache
from pathlib import Path

from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from meridian.v1 import candle_pb2, common_pb2, control_pb2, risk_decision_pb2, signal_pb2
from meridian_common import config, testing, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.testing import bound_registry, exported
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings
from meridian_risk.breakers import BREAKERS
from meridian_risk.handler import RiskHandler
from meridian_risk.rules import RULE_NAMES
from meridian_risk.settings import RiskSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

Routed = tuple[str, str, Message]
HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (24 * HOUR)  # a UTC midnight
A, B = "bybit:AAAUSDT", "bybit:BBBUSDT"


@cache
def _inputs(model_dir: str) -> tuple[Routed, ...]:
    """Real BTC+ETH candles (2021-01..04) and the signals the trend rules make of them, candles
    first: the merge puts them in event time."""
    common = config.load(config.CommonSettings, environ={})
    ingest = config.load(IngestSettings, environ={}, symbols="BTCUSDT,ETHUSDT",
                         start="2021-01-01", end="2021-04-01")
    stream = list(commands.candle_stream(common, ingest))
    features = testing.feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE, stream)
    signals = SignalsHandler(SignalsSettings(model_dir=model_dir))
    asyncio.run(signals.start())  # no model: the trend rules alone
    candles = [(topics.CANDLE, topics.market_key(m.exchange, m.symbol), m)
               if isinstance(m, candle_pb2.Candle) else (m.topic, m.key, m.message)
               for m in stream]
    return tuple(candles) + tuple(testing.feed(signals, topics.FEATURES, features))



def _decisions(out: list[Routed]) -> list[risk_decision_pb2.RiskDecision]:
    return [m for t, _, m in out if t == topics.RISK_DECISION]  # type: ignore[misc]


def _reduced(d: risk_decision_pb2.RiskDecision) -> bool:
    """An entry approved at the breakers' reduced size, as the decision itself reports it."""
    breaker = next(r for r in d.rules if r.rule == "system.breaker")
    return d.approved and not d.reduce_only and breaker.detail.startswith("entries sized x")


def test_every_label_exists_at_zero_before_the_first_decision() -> None:
    registry = bound_registry(RiskHandler(RiskSettings()))
    for outcome in ("approved", "reduced", "rejected"):
        assert exported(registry, "meridian_risk_decisions_total", outcome=outcome) == 0
    for rule in RULE_NAMES:
        assert exported(registry, "meridian_risk_rejections_total", rule=rule) == 0
    for breaker in BREAKERS:
        assert exported(registry, "meridian_risk_breaker_active", breaker=breaker) == 0
    assert exported(registry, "meridian_risk_kill_switch") == 0
    assert exported(registry, "meridian_risk_equity_quote") == 10_000


def test_decisions_and_rejections_count_what_the_gate_published(tmp_path: Path) -> None:
    # a tight drawdown limit: the breakers pause, reduce and close during the replay (no entry
    # gets through while reducing on this slice: 'reduced' has its own scenario below)
    gate = RiskHandler(RiskSettings(max_drawdown=Decimal("0.02"), daily_loss_limit=Decimal(1),
                                    price_spike_pct_per_min=Decimal(0)))
    registry = bound_registry(gate)
    out = testing.feed(gate, topics.CANDLE, _inputs(str(tmp_path / "models")))
    asyncio.run(gate.flush())
    decisions = _decisions(out)
    rejected = [d for d in decisions if not d.approved]
    reduced = [d for d in decisions if _reduced(d)]
    assert rejected
    assert len(rejected) < len(decisions)

    def counted(outcome: str) -> float:
        return exported(registry, "meridian_risk_decisions_total", outcome=outcome)

    assert counted("rejected") == len(rejected)
    assert counted("reduced") == len(reduced)
    assert counted("approved") == len(decisions) - len(rejected) - len(reduced)
    # the deciding rule: the first one that failed, in the order the decision lists them
    deciding = Counter(next(r.rule for r in d.rules if not r.passed) for d in rejected)
    assert len(deciding) > 1
    for rule in RULE_NAMES:
        assert exported(registry, "meridian_risk_rejections_total", rule=rule) == deciding[rule]
    # the gauges describe the book at the end: each symbol's |quantity| x last price
    for key in ("binance:BTCUSDT", "binance:ETHUSDT"):
        position = gate.positions.get(key, Decimal(0))
        expected = float(abs(position) * gate.book.marks[key])
        symbol = key.split(":")[1]
        assert exported(registry, "meridian_risk_exposure_quote", symbol=symbol) == expected
    equity = gate.equity()
    assert exported(registry, "meridian_risk_equity_quote") == float(equity)
    gross = sum((gate.book.value(k) for k in gate.book.positions), Decimal(0))
    assert exported(registry, "meridian_risk_gross_exposure_ratio") == float(gross / equity)
    kills = [m.kill_switch.engaged for t, _, m in out if t == topics.CONTROL
             and m.WhichOneof("command") == "kill_switch"]  # type: ignore[attr-defined]
    assert exported(registry, "meridian_risk_kill_switch") == (1 if kills and kills[-1] else 0)


def _candle(key: str, hour: int, close: str) -> candle_pb2.Candle:
    exchange, symbol = key.split(":")
    t = T0 + hour * HOUR
    return candle_pb2.Candle(
        meta=common_pb2.Meta(id=f"c:{key}:{t}", event_time_ms=t, producer="ingest"),
        exchange=exchange, symbol=symbol, timeframe="1h", open_time_ms=t - HOUR,
        close_time_ms=t, open=close, high=close, low=close, close=close, volume="1")


def _signal(key: str, hour: int, price: str) -> signal_pb2.Signal:
    exchange, symbol = key.split(":")
    t = T0 + hour * HOUR
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:{key}:{t}", event_time_ms=t, producer="signals"),
        exchange=exchange, symbol=symbol, strategy="trend", direction=common_pb2.DIRECTION_LONG,
        confidence=1.0, reference_price=price,
        stop_loss=testing.protective_stop(common_pb2.DIRECTION_LONG, price, "0.3"))


def _hour(gate: RiskHandler, hour: int, closes: dict[str, str],
          signal: tuple[str, str] | None = None) -> list[Routed]:
    """Candles for both keys, then the hour's signal or signal Watermarks."""
    out = Outbox("risk")
    for key in (A, B):
        gate.handle(Inbound(topics.CANDLE, key, _candle(key, hour, closes[key])), out)
    for key in (A, B):
        msg: Message = _signal(key, hour, signal[1]) if signal and signal[0] == key else \
            common_pb2.Watermark(key=key, event_time_ms=T0 + hour * HOUR)
        gate.handle(Inbound(topics.SIGNAL, key, msg), out)
    asyncio.run(gate.flush())  # the gauges follow each batch, as the host flushes it
    return out.items


def _breakers(registry: CollectorRegistry) -> dict[str, float]:
    return {b: exported(registry, "meridian_risk_breaker_active", breaker=b) for b in BREAKERS}


def test_breaker_and_kill_switch_gauges_through_an_escalation_and_a_clear() -> None:
    gate = RiskHandler(RiskSettings(
        daily_loss_limit=Decimal(1), price_spike_pct_per_min=Decimal(0),
        max_drawdown=Decimal("0.05"), pause_hours=Decimal(1), reduce_hours=Decimal(1),
        order_notional=Decimal(5000), max_position_notional=Decimal(5000)))
    registry = bound_registry(gate)
    _hour(gate, 1, {A: "100", B: "10"}, (A, "100"))  # 50 A bought at 100
    assert exported(registry, "meridian_risk_exposure_quote", symbol="AAAUSDT") == 5000
    assert exported(registry, "meridian_risk_gross_exposure_ratio") == 0.5
    assert _breakers(registry)["portfolio.max_drawdown"] == 0
    _hour(gate, 2, {A: "89", B: "10"})  # equity 9,450: 5.5 % below the peak, paused
    assert exported(registry, "meridian_risk_equity_quote") == 9450
    assert exported(registry, "meridian_risk_drawdown_ratio") == 0.055
    assert _breakers(registry) == {"portfolio.max_drawdown": 1, "system.daily_loss": 0,
                                   "system.price_spike": 0, "system.error_rate": 0}
    assert exported(registry, "meridian_risk_kill_switch") == 0
    _hour(gate, 3, {A: "89", B: "10"})  # reduce
    out = _hour(gate, 4, {A: "89", B: "10"})  # still tripped: close all, kill switch engaged
    assert any(t == topics.CONTROL and m.WhichOneof("command") == "kill_switch"  # type: ignore[attr-defined]
               for t, _, m in out)
    assert exported(registry, "meridian_risk_kill_switch") == 1
    assert exported(registry, "meridian_risk_exposure_quote", symbol="AAAUSDT") == 0
    clear = control_pb2.Control(meta=common_pb2.Meta(id="ops-1", event_time_ms=T0 + 5 * HOUR),
                                kill_switch=control_pb2.KillSwitch(engaged=False, reason="ok",
                                                                   actor="ops"))
    gate.handle(Inbound(topics.CONTROL, "kill_switch", clear), Outbox("risk"))
    asyncio.run(gate.flush())
    assert exported(registry, "meridian_risk_kill_switch") == 0
    # the clear re-bases the peak at the equity of the moment: no breaker acts any more
    assert set(_breakers(registry).values()) == {0}
    assert exported(registry, "meridian_risk_drawdown_ratio") == 0


def test_an_entry_sized_down_by_the_reduce_level_counts_as_reduced() -> None:
    gate = RiskHandler(RiskSettings(
        daily_loss_limit=Decimal(1), price_spike_pct_per_min=Decimal(0),
        max_drawdown=Decimal("0.05"), pause_hours=Decimal(1), reduce_hours=Decimal(5),
        order_notional=Decimal(5000), max_position_notional=Decimal(5000),
        reduce_factor=Decimal("0.5"), correlation_min=1.0))
    gate = gate
    registry = bound_registry(gate)
    _hour(gate, 1, {A: "100", B: "10"}, (A, "100"))
    _hour(gate, 2, {A: "89", B: "10"})
    _hour(gate, 3, {A: "89", B: "10"})  # still tripped when the pause ends: reduce
    assert _breakers(registry)["portfolio.max_drawdown"] == 1
    _hour(gate, 4, {A: "100", B: "10"})  # back at the peak: nothing tripped, still reducing
    out = _hour(gate, 5, {A: "100", B: "10"}, (B, "10"))
    [d] = _decisions(out)
    assert _reduced(d)
    assert Decimal(d.quantity) == 250  # 5000 / 10 x 0.5
    assert exported(registry, "meridian_risk_decisions_total", outcome="reduced") == 1
    assert exported(registry, "meridian_risk_decisions_total", outcome="approved") == 1
    assert exported(registry, "meridian_risk_decisions_total", outcome="rejected") == 0
    # the reduce level was set by the drawdown breaker: it still acts, though no longer tripped
    assert _breakers(registry)["portfolio.max_drawdown"] == 1


def test_nothing_is_counted_while_replaying_and_the_gauges_are_right_after_a_restore(
        tmp_path: Path) -> None:
    # in event time (candles before signals at one time), cut where a position is open
    items = sorted(_inputs(str(tmp_path / "models")),
                   key=lambda r: (Inbound(*r).event_time_ms, r[0] != topics.CANDLE))
    first = RiskHandler(RiskSettings())
    out = Outbox("risk")
    cut = len(items) // 2
    for i, (topic, key, m) in enumerate(items):
        if i >= cut and first.positions and not first.merge.held:
            cut = i
            break
        first.handle(Inbound(topic, key, m, (topic, 0, i)), out)
    else:
        raise AssertionError("no position open after the middle: the gauges test nothing")
    engage = control_pb2.Control(
        meta=common_pb2.Meta(id="ops-kill", event_time_ms=T0), kill_switch=control_pb2.KillSwitch(
            engaged=True, reason="maintenance", actor="ops"))
    first.handle(Inbound(topics.CONTROL, "kill_switch", engage), out)
    before = out.items
    published = [*before, (topics.CONTROL, "kill_switch", engage)]

    second = RiskHandler(RiskSettings())
    registry = bound_registry(second)
    second.replaying = True  # type: ignore[attr-defined]  # as the host sets it
    for topic in second.restore_from:  # each topic whole, as the host reads it
        source = published if topic in (topics.CONTROL, topics.RISK_DECISION,
                                         topics.ORDER_APPROVED) else items[:cut]
        for t, key, m in source:
            if t == topic:
                second.restore(Inbound(topic, key, m))
    second.restored()
    for outcome in ("approved", "reduced", "rejected"):
        assert exported(registry, "meridian_risk_decisions_total", outcome=outcome) == 0
    assert exported(registry, "meridian_risk_kill_switch") == 1
    assert second.book.positions == first.book.positions
    for key, position in second.book.positions.items():
        symbol = key.split(":")[1]
        assert exported(registry, "meridian_risk_exposure_quote", symbol=symbol) == float(
            abs(position.quantity) * second.book.marks[key])
    assert exported(registry, "meridian_risk_equity_quote") == float(second.equity())
    # replaying records (as after a rebalance) counts nothing either; live ones count again
    testing.feed(second, topics.CANDLE, items[cut:cut + 200])
    assert sum(exported(registry, "meridian_risk_decisions_total", outcome=o)
               for o in ("approved", "reduced", "rejected")) == 0
    second.replaying = False  # type: ignore[attr-defined]
    later = _decisions(testing.feed(second, topics.CANDLE, items[cut + 200:]))
    assert later
    assert sum(exported(registry, "meridian_risk_decisions_total", outcome=o)
               for o in ("approved", "reduced", "rejected")) == len(later)
