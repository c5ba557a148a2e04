"""Hot reload over real Kafka: a signals process serves model A; `meridian model promote B`
announces B on control.v1; the running process switches to B without a restart, and across the
switch every features message gives exactly one output (a signal or a watermark): nothing lost,
nothing handled twice."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meridian.v1 import signal_pb2
from meridian_common import codec, testing, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.features import TREND_V2
from meridian_common.fills import PaperFillModel
from meridian_common.host import all_topic_configs, publish
from meridian_common.labels import Barriers
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_common.metrics import NullSensor
from meridian_common.strategy import TrendParams
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ml.dataset import build_events, load_csv
from meridian_ml.model import fit, xgb_json
from meridian_ml.onnx_model import to_onnx
from meridian_ml.registry import ModelRegistry

pytestmark = pytest.mark.integration

NAME = "meta-trend"
START, END = 1_588_291_200_000, 1_640_995_200_000  # 2020-05-01 .. 2022-01-01


def _registry(root: Path) -> tuple[str, str]:
    """Two real models (A promoted) trained on BTC 2020-2021 entries."""
    candles = load_csv(default_data_dir(), ["BTCUSDT"], START, END)
    barriers = Barriers(2.0, 1.0, 48, use_atr=True)
    events = build_events(candles, TREND_V2, TrendParams(), barriers, PaperFillModel())
    registry = ModelRegistry(root)
    versions = []
    for k, seed in enumerate((1, 2)):
        model = fit(events.x, events.y, {"n_estimators": 20 + 10 * k}, seed=seed)
        manifest = registry.register(
            NAME, to_onnx(model, len(events.columns)), xgb_json(model),
            feature_set="trend@2.0.0", feature_fingerprint=TREND_V2.fingerprint(),
            columns=list(events.columns), symbols=["BTCUSDT"], timeframe="1h",
            train_start_ms=START, train_end_ms=END, hyperparameters={}, metrics={},
            threshold=0.5, card={}, card_html="<html></html>", created_ms=START + k * 1000,
            strategy={"primary": {}, "barriers": {"take_profit": 2.0, "stop_loss": 1.0,
                                                  "max_holding": 48, "use_atr": True}})
        versions.append(manifest.version)
    registry.promote(versions[0])
    return versions[0], versions[1]


def _features(hours: int) -> list:
    rows = itertools.islice(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(START),
                            hours)
    candles = [make_candle("binance", "BTCUSDT", "1h", r, "ingest") for r in rows]
    return [m for _, _, m in testing.feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE,
                                          candles)]


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "meridian_signals"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _promote(version: str, root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meridian_cli.main", "model", "promote", version, "--model-dir",
         str(root)], env=env, capture_output=True, text=True, timeout=120, check=False)


async def _outputs(bus: KafkaBus, prefix: str) -> list:
    name = prefix + topics.SIGNAL
    out = []
    for partition, end in enumerate(await bus.topic_ends(name)):
        for record in await bus.read_partition(name, partition, 0, end):
            out.append(codec.decode(topics.SIGNAL, record.value,
                                    record.header(codec.TYPE_HEADER)))
    return out


async def _wait(predicate, what: str, proc: subprocess.Popen[bytes], log: Path,  # type: ignore[no-untyped-def]
                timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, _text(log)[-3000:]
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {_text(log)[-3000:]}")


async def _scenario(bootstrap: str, prefix: str, root: Path, log: Path) -> None:
    version_a, version_b = _registry(root)
    feats = _features(3000)
    first, second = feats[:1500], feats[1500:]
    bus = KafkaBus(bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, 3))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")},
           "MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": bootstrap,
           "MERIDIAN_TOPIC_PREFIX": prefix, "MERIDIAN_METRICS_PORT": "0",
           "MERIDIAN_SIGNALS_MODEL_DIR": str(root), "MERIDIAN_SIGNALS_THRESHOLD": "0.01"}
    proc = _start(env, log)
    producer = bus.producer()
    try:
        key = "binance:BTCUSDT"
        await publish(producer, prefix, [(topics.FEATURES, key, f) for f in first], NullSensor())
        await producer.flush()

        async def handled(n: int) -> bool:
            return len(await _outputs(bus, prefix)) >= n
        await _wait(lambda: handled(len(first)), "the first half", proc, log)
        promote = _promote(version_b, root, env)
        assert promote.returncode == 0, promote.stderr

        async def loaded() -> bool:
            return f"serving model {version_b}" in _text(log)
        await _wait(loaded, f"the service to load {version_b}", proc, log)
        await publish(producer, prefix, [(topics.FEATURES, key, f) for f in second], NullSensor())
        await producer.flush()
        await _wait(lambda: handled(len(feats)), "the second half", proc, log)
        await asyncio.sleep(1)  # a duplicate would show up now
    finally:
        await producer.stop()
        proc.terminate()
        proc.wait(timeout=30)
    outputs = await _outputs(bus, prefix)
    assert len(outputs) == len(feats)  # one output per input: none lost, none twice
    causes = [o.meta.cause_id for o in outputs if isinstance(o, signal_pb2.Signal)]
    assert len(causes) == len(set(causes))
    split = second[0].meta.event_time_ms
    entries = [o for o in outputs if isinstance(o, signal_pb2.Signal) and o.confidence < 1.0]
    before = {o.model_version for o in entries if o.meta.event_time_ms < split}
    after = {o.model_version for o in entries if o.meta.event_time_ms >= split}
    assert before == {version_a}
    assert after == {version_b}


def test_promotion_switches_the_running_service_without_loss(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    asyncio.run(_scenario(kafka_bootstrap, topic_prefix, tmp_path / "models",
                          tmp_path / "signals.log"))
