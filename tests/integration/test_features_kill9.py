"""kill -9 of the features service mid-stream, twice, over real Kafka: after each restart it
rebuilds its indicator state from md.candle.v1 up to its committed offset, and every candle's
features equal those of an uninterrupted run (redelivered candles may publish a row again, with
identical bytes; nothing is missing and nothing differs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meridian.v1 import candle_pb2, features_pb2
from meridian_common import codec, config, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.testing import features_by_candle, feed, read_topic
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings

pytestmark = pytest.mark.integration


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "meridian_features"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _rebuilds(log: Path) -> list[int]:
    """Records replayed by each start's state rebuild, from the service's JSON log lines."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and "state rebuilt from inputs" in line:
            out.append(int(json.loads(line)["records"]))
    return out


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def _features(bus: KafkaBus, prefix: str) -> list[features_pb2.Features]:
    out = await read_topic(bus, prefix, topics.FEATURES)
    assert all(isinstance(m, features_pb2.Features) for m in out)
    return out  # type: ignore[return-value]


async def _wait_rows(bus: KafkaBus, prefix: str, rows: int, proc: subprocess.Popen[bytes],
                     log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"features exited {proc.returncode}: {_tail(log)}")
        if sum(await bus.topic_ends(prefix + topics.FEATURES)) >= rows:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"features did not reach {rows} rows: {_tail(log)}")


async def test_kill_9_twice_mid_stream_changes_no_feature(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    common = config.load(config.CommonSettings, environ={}, kafka_bootstrap=kafka_bootstrap,
                         topic_prefix=topic_prefix)
    # LTC's history starts before BTC's (2020-05-11): its first ten weeks join the reference
    # only through the replay's start watermark, the rest through BTC's candles
    ingest = config.load(IngestSettings, environ={}, symbols="BTCUSDT,LTCUSDT",
                         start="2020-03-01", end="2021-09-01")
    stream = list(commands.candle_stream(common, ingest))  # candles and start watermarks
    candles = [c for c in stream if isinstance(c, candle_pb2.Candle)]
    assert await commands.run_replay(common, ingest) == len(candles)

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")},
           "MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": topic_prefix, "MERIDIAN_CONSUMER_BATCH": "300"}
    log = tmp_path / "features.log"
    bus = KafkaBus(kafka_bootstrap)
    proc = _start(env, log)
    try:
        for fraction in (0.25, 0.6):
            await _wait_rows(bus, topic_prefix, int(len(candles) * fraction), proc, log)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc = _start(env, log)
        deadline = time.monotonic() + 120
        while len(await _keys(bus, topic_prefix)) < len(candles):
            assert time.monotonic() < deadline, _tail(log)
            assert proc.poll() is None, _tail(log)
            await asyncio.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    expected = features_by_candle(feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE,
                                       stream))
    published = await _features(bus, topic_prefix)
    for msg in published:  # every copy, duplicates included, equals the uninterrupted row
        assert codec.encode(msg)[0] == expected[(msg.symbol, msg.candle_open_time_ms)]
    assert {(m.symbol, m.candle_open_time_ms) for m in published} == set(expected)
    rebuilt = _rebuilds(log)
    assert len(rebuilt) == 3
    assert rebuilt[0] == 0  # the first start had nothing committed
    assert 0 < rebuilt[1] < rebuilt[2] < len(candles)  # each kill came mid-stream


async def _keys(bus: KafkaBus, prefix: str) -> set[tuple[str, int]]:
    return {(m.symbol, m.candle_open_time_ms) for m in await _features(bus, prefix)}
