"""kill -9 of the execution service mid-stream, twice, over real Kafka: on start it rebuilds its
state (the orders waiting for their candle, the candle buffer) from order.approved.v1 and
md.candle.v1 up to its committed offsets, so every fill equals the uninterrupted run's: none
missing, none different (a fill published again after a restart has the same id and bytes, and
the ledger counts a fill id once)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf.message import Message

from meridian.v1 import common_pb2, fill_pb2, order_approved_pb2
from meridian_common import ids, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import all_topic_configs, publish
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_common.metrics import NullSensor
from meridian_common.testing import feed, read_topic
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings

pytestmark = pytest.mark.integration
START, END = 1_609_459_200_000, 1_617_235_200_000  # 2021-01-01 .. 2021-04-01
HOUR = 3_600_000


def _inputs(seed: int) -> list[tuple[str, str, Message]]:
    """Candles of BTC and ETH with an approved order at a random ~1 in 4 of the closes, each
    order published before the candle it fills at (as the risk gate's output would be)."""
    rng = random.Random(seed)
    items: list[tuple[int, int, str, Message]] = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        key = f"binance:{symbol}"
        for r in CsvCandleSource(default_data_dir(), symbol, "1h").rows():
            if not START <= r.open_time_ms < END:
                continue
            items.append((r.open_time_ms, 1, key, make_candle("binance", symbol, "1h", r,
                                                               "ingest")))
            if rng.random() < 0.25:
                t = r.open_time_ms
                coid = ids.client_order_id(f"kill9:{symbol}:{t}")
                items.append((t, 0, key, order_approved_pb2.ApprovedOrder(
                    meta=common_pb2.Meta(id=coid, event_time_ms=t, producer="risk"),
                    client_order_id=coid, signal_id=f"kill9:{t}", exchange="binance",
                    symbol=symbol, side=rng.choice([common_pb2.SIDE_BUY, common_pb2.SIDE_SELL]),
                    order_type=order_approved_pb2.ORDER_TYPE_MARKET,
                    quantity=f"{rng.randint(1, 90) / 1000:.3f}", strategy="kill9")))
    items.sort(key=lambda x: (x[0], x[1], x[2]))
    return [(topics.ORDER_APPROVED if rank == 0 else topics.CANDLE, key, m)
            for _, rank, key, m in items]


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "meridian_execution"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def _fills(bus: KafkaBus, prefix: str) -> list[fill_pb2.Fill]:
    return [m for m in await read_topic(bus, prefix, topics.FILL)
            if isinstance(m, fill_pb2.Fill)]


async def _wait_fills(bus: KafkaBus, prefix: str, n: int, proc: subprocess.Popen[bytes],
                      log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"execution exited {proc.returncode}: {_tail(log)}"
        if len({f.fill_id for f in await _fills(bus, prefix)}) >= n:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"execution did not reach {n} fills: {_tail(log)}")


@pytest.mark.parametrize("seed", [1, 2])
async def test_kill_9_twice_mid_stream_loses_and_changes_no_fill(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, seed: int) -> None:
    prefix = f"{topic_prefix}s{seed}."
    items = _inputs(seed)
    expected = {m.fill_id: m for _, _, m in feed(ExecutionHandler(ExecutionSettings()),
                                                 topics.CANDLE, items)
                if isinstance(m, fill_pb2.Fill)}
    assert len(expected) > 1000
    bus = KafkaBus(kafka_bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, 3))
    producer = bus.producer()
    await publish(producer, prefix, items, NullSensor())
    await producer.flush()
    await producer.stop()

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")},
           "MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": prefix, "MERIDIAN_CONSUMER_BATCH": "200"}
    log = tmp_path / "execution.log"
    rng = random.Random(seed)
    proc = _start(env, log)
    try:
        for low, high in ((0.15, 0.35), (0.5, 0.75)):  # kill at random moments
            await _wait_fills(bus, prefix, int(len(expected) * rng.uniform(low, high)), proc,
                              log)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc = _start(env, log)
        await _wait_fills(bus, prefix, len(expected), proc, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    published = await _fills(bus, prefix)
    for fill in published:  # every copy, redeliveries included, equals the uninterrupted fill
        assert fill.SerializeToString(deterministic=True) == expected[
            fill.fill_id].SerializeToString(deterministic=True)
    assert {f.fill_id for f in published} == set(expected)
    # (a killed process loses its buffered log lines: only the last start surely says so)
    assert "state rebuilt from inputs" in log.read_text(errors="replace")
