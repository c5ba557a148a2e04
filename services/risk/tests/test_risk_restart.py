"""A restarted risk gate keeps its kill switch (control.v1) and its book of approved orders (its
own order.approved.v1), so a restart neither reopens the gate nor approves a second order for a
position it already took; a control run without the restore shows both would be lost."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from meridian.v1 import common_pb2, control_pb2, risk_decision_pb2, signal_pb2
from meridian_common import codec, host, topics
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.metrics import NullSensor
from meridian_common.testing import protective_stop
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

host.POLL_TIMEOUT_S = 0.01
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
BTC, ETH = "binance:BTCUSDT", "binance:ETHUSDT"
LONG, FLAT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_FLAT


def signal(key: str, i: int, direction: int) -> signal_pb2.Signal:
    exchange, symbol = key.split(":")
    t = T0 + i * HOUR
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:{key}:{t}", cause_id=f"feat:{key}:{t}", event_time_ms=t,
                             producer="signals"),
        exchange=exchange, symbol=symbol, strategy="trend", direction=direction, strength=0.5,
        confidence=1.0, reference_price="2000.5",
        stop_loss=protective_stop(direction, "2000.5"), reason="test")


def watermark(key: str, i: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=key, event_time_ms=T0 + i * HOUR, producer="signals")


def kill(engaged: bool) -> control_pb2.Control:
    return control_pb2.Control(
        meta=common_pb2.Meta(id=f"ctl-{engaged}", event_time_ms=T0, producer="control-plane"),
        kill_switch=control_pb2.KillSwitch(engaged=engaged, reason="test", actor="ops"))


async def _run(bus: InProcessBus, handler: RiskHandler, items: list, expect: int,
               engaged: bool = False) -> None:
    """Host `handler`, publish `items`, stop once `expect` decisions exist in total (and, with
    `engaged`, once the handler has taken the kill switch)."""
    service = ServiceHost(handler, bus, batch=7)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await asyncio.wait_for(service.ready.wait(), 5)
    await publish(bus.producer(), "", items, NullSensor())
    for _ in range(2500):
        if len(bus.read(topics.RISK_DECISION)) >= expect and handler.kill_switch >= engaged:
            break
        await asyncio.sleep(0.002)
    stop.set()
    await asyncio.wait_for(task, 5)


def _decisions(bus: InProcessBus) -> list[risk_decision_pb2.RiskDecision]:
    return [codec.decode(topics.RISK_DECISION, r.value, r.header(codec.TYPE_HEADER))  # type: ignore[misc]
            for r in bus.read(topics.RISK_DECISION)]


async def _scenario(restore: bool) -> tuple[RiskHandler, list[risk_decision_pb2.RiskDecision]]:
    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs("", 3))
    first = RiskHandler(RiskSettings())
    await _run(bus, first, [(topics.CANDLE, BTC, watermark(BTC, 0)),
                            (topics.CANDLE, ETH, watermark(ETH, 0)),
                            (topics.SIGNAL, BTC, signal(BTC, 0, LONG)),
                            (topics.SIGNAL, ETH, signal(ETH, 0, LONG))], 2)
    await _run(bus, RiskHandler(RiskSettings()), [(topics.CONTROL, "kill_switch", kill(True))],
               2, engaged=True)
    second = RiskHandler(RiskSettings())
    if not restore:
        second.restore_from = ()  # type: ignore[misc]
    xrp = "binance:XRPUSDT"
    # (candle Watermarks stand for the candles: no price moves here)
    await _run(bus, second, [(topics.CANDLE, BTC, watermark(BTC, 2)),
                             (topics.CANDLE, ETH, watermark(ETH, 2)),
                             (topics.CANDLE, xrp, watermark(xrp, 2)),
                             (topics.SIGNAL, ETH, signal(ETH, 1, LONG)),  # already long
                             (topics.SIGNAL, BTC, signal(BTC, 1, FLAT)),
                             (topics.SIGNAL, xrp, signal(xrp, 2, LONG)),
                             # the gate decides XRP at T0+2h once BTC and ETH have reached it
                             (topics.SIGNAL, BTC, watermark(BTC, 2)),
                             (topics.SIGNAL, ETH, watermark(ETH, 2))], 5)
    return second, _decisions(bus)


async def test_kill_switch_and_book_survive_a_restart() -> None:
    second, decisions = await _scenario(restore=True)
    assert second.kill_switch
    assert [d.approved for d in decisions if d.meta.event_time_ms == T0] == [True, True]
    later = {d.symbol + str(d.meta.event_time_ms): d for d in decisions
             if d.meta.event_time_ms > T0}
    eth = later[f"ETHUSDT{T0 + HOUR}"]
    assert not eth.approved  # position already at target: no second order
    assert {r.rule: r.passed for r in eth.rules}["order.nonzero"] is False
    btc = later[f"BTCUSDT{T0 + HOUR}"]
    assert btc.approved  # closing is reduce-only: passes the engaged switch
    assert btc.reduce_only
    assert Decimal(btc.quantity) > 0
    xrp = later[f"XRPUSDT{T0 + 2 * HOUR}"]
    assert not xrp.approved
    assert {r.rule: r.passed for r in xrp.rules}["system.kill_switch"] is False


async def test_without_the_restore_both_would_be_lost() -> None:
    second, decisions = await _scenario(restore=False)
    assert not second.kill_switch
    later = {d.symbol + str(d.meta.event_time_ms): d for d in decisions
             if d.meta.event_time_ms > T0}
    assert later[f"ETHUSDT{T0 + HOUR}"].approved  # a second long order
    assert not later[f"BTCUSDT{T0 + HOUR}"].approved  # nothing to close: book forgotten
    assert later[f"XRPUSDT{T0 + 2 * HOUR}"].approved  # the gate reopened
