"""A malformed record on a topic lands in dlq.<topic> with a reason, and the service keeps going."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from meridian.v1 import features_pb2
from meridian_cli.kafka_run import KafkaPipeline
from meridian_common import codec, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import all_topic_configs
from meridian_common.marketdata import RawCandle, make_candle

pytestmark = pytest.mark.integration


async def _consume_one(bootstrap: str, topic: str, timeout_s: float = 60) -> object:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None)
    await consumer.start()
    try:
        return await asyncio.wait_for(consumer.getone(), timeout_s)
    finally:
        await consumer.stop()


async def _scenario(bootstrap: str, prefix: str) -> tuple[object, object]:
    await KafkaBus(bootstrap).ensure_topics(all_topic_configs(prefix, 3))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        key = b"binance:BTCUSDT"
        await producer.send_and_wait(prefix + topics.CANDLE, b"\x08\x96\x01garbage", key=key)
        good = make_candle("binance", "BTCUSDT", "1h",
                           RawCandle(1609459200000, "1", "2", "0.5", "1.5", "10"), "test")
        value, mtype = codec.encode(good)
        await producer.send_and_wait(prefix + topics.CANDLE, value, key=key,
                                     headers=[(codec.TYPE_HEADER, mtype)])
    finally:
        await producer.stop()
    dead = await _consume_one(bootstrap, prefix + topics.dlq(topics.CANDLE))
    feature = await _consume_one(bootstrap, prefix + topics.FEATURES)
    return dead, feature


def test_malformed_candle_goes_to_dlq_and_service_continues(kafka_bootstrap: str,
                                                            topic_prefix: str,
                                                            tmp_path: Path) -> None:
    env = {"MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap, "MERIDIAN_TOPIC_PREFIX": topic_prefix}
    with KafkaPipeline(env, tmp_path / "logs") as pipeline:
        pipeline.start(("features",))
        dead, feature = asyncio.run(_scenario(kafka_bootstrap, topic_prefix))
        pipeline.check_alive()

    headers = dict(dead.headers)  # type: ignore[attr-defined]
    assert dead.value == b"\x08\x96\x01garbage"  # type: ignore[attr-defined]
    assert b"cannot parse as meridian.v1.Candle" in headers["dlq-reason"]
    assert headers["dlq-topic"] == (topic_prefix + topics.CANDLE).encode()
    assert headers["dlq-service"] == b"features"
    parsed = features_pb2.Features.FromString(feature.value)  # type: ignore[attr-defined]
    assert parsed.meta.cause_id == "binance:BTCUSDT:1h:1609459200000:r0"


def test_bad_config_fails_fast_naming_the_variable(tmp_path: Path) -> None:
    env = {"MERIDIAN_RISK_MAX_POSITION_NOTIONAL": "-5", "MERIDIAN_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "-m", "meridian_risk"], capture_output=True,
                          env={**KafkaPipeline(env, tmp_path)._environ()}, timeout=60, check=False)
    assert proc.returncode == 2
    assert b"MERIDIAN_RISK_MAX_POSITION_NOTIONAL" in proc.stderr
