"""The kill switch survives a restart of the risk service over real Kafka: engaged, the service
stopped after committing past the command, started again: a new long is still refused (the
command is read back from control.v1), a closing order still passes."""

from __future__ import annotations

import asyncio
import os
import signal as os_signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meridian.v1 import common_pb2, control_pb2, risk_decision_pb2, signal_pb2
from meridian_common import topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import all_topic_configs, publish
from meridian_common.metrics import NullSensor
from meridian_common.testing import protective_stop, read_topic

pytestmark = pytest.mark.integration
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)


def _signal(symbol: str, i: int, direction: int) -> signal_pb2.Signal:
    t = T0 + i * HOUR
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:{symbol}:{t}", cause_id=f"feat:{symbol}:{t}",
                             event_time_ms=t, producer="signals"),
        exchange="binance", symbol=symbol, strategy="trend", direction=direction, strength=0.5,
        confidence=1.0, reference_price="100.5",
        stop_loss=protective_stop(direction, "100.5"), reason="test")


BTC, ETH = "binance:BTCUSDT", "binance:ETHUSDT"


def _candles(key: str, i: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=key, event_time_ms=T0 + i * HOUR, producer="ingest")


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "meridian_risk"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(os_signal.SIGTERM)
    return proc.wait(timeout=30)


async def _decisions(bus: KafkaBus, prefix: str) -> dict[str, risk_decision_pb2.RiskDecision]:
    return {d.meta.cause_id: d for d in await read_topic(bus, prefix, topics.RISK_DECISION)}  # type: ignore[attr-defined]


async def _until(cond, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, _text(log)[-3000:]
        if await cond():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {_text(log)[-3000:]}")


async def _scenario(bootstrap: str, prefix: str, log: Path) -> None:
    bus = KafkaBus(bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, 3))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")},
           "MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": bootstrap,
           "MERIDIAN_TOPIC_PREFIX": prefix, "MERIDIAN_METRICS_PORT": "0"}
    producer = bus.producer()
    proc = _start(env, log)
    try:
        opened = _signal("ETHUSDT", 0, common_pb2.DIRECTION_LONG)
        # (a candle Watermark stands for the symbol's candles: the gate decides a signal once
        # every symbol's candles and signals have reached its time)
        await publish(producer, prefix, [(topics.CANDLE, "binance:ETHUSDT", _candles(ETH, 0)),
                                         (topics.SIGNAL, "binance:ETHUSDT", opened)],
                      NullSensor())
        await producer.flush()

        async def decided(sig: signal_pb2.Signal) -> bool:
            return sig.meta.id in await _decisions(bus, prefix)
        await _until(lambda: decided(opened), proc, log, "the first decision")
        command = control_pb2.Control(
            meta=common_pb2.Meta(id="kill-1", event_time_ms=T0 + HOUR, producer="ops"),
            kill_switch=control_pb2.KillSwitch(engaged=True, reason="test", actor="ops"))
        await publish(producer, prefix, [(topics.CONTROL, "kill_switch", command)], NullSensor())
        await producer.flush()

        async def engaged() -> bool:
            return "kill switch ENGAGED" in _text(log)
        await _until(engaged, proc, log, "the kill switch")
        await asyncio.sleep(1.5)  # the batch's offsets are committed
        assert _stop(proc) == 0
        proc = _start(env, log)

        async def restored() -> bool:
            return _text(log).count('"state restored"') == 2
        await _until(restored, proc, log, "the restart")
        new_long = _signal("BTCUSDT", 2, common_pb2.DIRECTION_LONG)
        close = _signal("ETHUSDT", 2, common_pb2.DIRECTION_FLAT)
        await publish(producer, prefix, [(topics.CANDLE, "binance:BTCUSDT", _candles(BTC, 2)),
                                         (topics.CANDLE, "binance:ETHUSDT", _candles(ETH, 2)),
                                         (topics.SIGNAL, "binance:BTCUSDT", new_long),
                                         (topics.SIGNAL, "binance:ETHUSDT", close)], NullSensor())
        await producer.flush()
        await _until(lambda: decided(close), proc, log, "the decisions after the restart")
        await _until(lambda: decided(new_long), proc, log, "the decisions after the restart")
    finally:
        await producer.stop()
        if proc.poll() is None:
            _stop(proc)
    decisions = await _decisions(bus, prefix)
    refused = decisions[new_long.meta.id]
    assert not refused.approved
    assert {r.rule: r.passed for r in refused.rules}["system.kill_switch"] is False
    closing = decisions[close.meta.id]
    assert closing.approved  # the book was restored too: there is a position to close
    assert closing.reduce_only


def test_kill_switch_survives_a_risk_restart(kafka_bootstrap: str, topic_prefix: str,
                                             tmp_path: Path) -> None:
    asyncio.run(_scenario(kafka_bootstrap, topic_prefix, tmp_path / "risk.log"))
