"""`meridian bench` latency figure: a signal to its fill on the paper path over Kafka, p50/p99.

A local broker (scripts/localinfra.py) and the real risk and execution services as processes
(`python -m meridian_risk`, `python -m meridian_execution`, defaults, a run-unique topic prefix).
Real BTCUSDT 1h candles are published first and the execution has committed them (its buffer
holds the candle each order fills at; the gate holds them until the signals reach their time).
Then one signal at a time (LONG with a protective stop, FLAT, alternating, one per hour of event
time, so the gate approves each and releases it at once): the next is sent only once the previous
one's fill has arrived, and a short gap later, so no signal queues behind another.

Measured, on this process's wall clock: from just before the signal is handed to the producer
(the services' producer settings: acks=all, idempotent, linger 5 ms) to the moment this process
reads its fill from fill.v1, as the ledger would: three Kafka hops (signal -> risk, approved
order -> execution, fill -> consumer) and the two services' batches (decode, handle, publish,
flush, commit). The record CreateTimes of the decision and the fill (set by the services'
producers, milliseconds; one machine, one clock) split it into stages.

Baseline in the same run, sampled alternately with the signals so both see the same machine: one
hop, the same bytes produced with the same producer settings and read back by the same consumer.
The figure counts only if the Kafka run's decisions and fills (count, quantities, prices, fees)
equal an in-process run of the same two handlers over the same inputs.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.message import Message

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, signal_pb2
from meridian_cli.kafka_run import KafkaPipeline, RunFailed
from meridian_cli.scripts import load_script
from meridian_common import codec, config, ids, topics
from meridian_common.bus.base import TopicConfig
from meridian_common.bus.kafka import KafkaBus, KafkaProducer
from meridian_common.handler import Inbound, Outbox
from meridian_common.host import all_topic_configs, publish
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_common.metrics import NullSensor
from meridian_common.testing import protective_stop
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

SYMBOL = "BTCUSDT"
KEY = f"binance:{SYMBOL}"
START_MS = 1_654_041_600_000  # 2022-06-01 00:00 UTC
WARMUP = 20  # signals sent first and not counted (connections, metadata, first batches)
MEASURED = 400
GAP_S = 0.025  # idle time after each arrival before the next send
TIMEOUT_S = 15.0  # one signal's fill (or one hop) not seen by then: the run fails
PARTITIONS = 3
HOP = "bench.hop"  # physical suffix of the baseline topic (not a pipeline topic)
SERVICES = ("risk", "execution")

Fingerprint = tuple[int, int, int, str, str, str]


class LatencyBenchFailed(RuntimeError):
    pass


def inputs(signals: int = WARMUP + MEASURED) -> tuple[list[candle_pb2.Candle],
                                                      list[signal_pb2.Signal]]:
    """Candles (two beyond the last signal: its fill candle opens at its time) and the signals,
    one at each candle's close, LONG and FLAT alternating, at the close price."""
    rows = []
    for row in CsvCandleSource(default_data_dir(), SYMBOL, "1h").rows(START_MS):
        rows.append(row)
        if len(rows) == signals + 2:
            break
    candles = [make_candle("binance", SYMBOL, "1h", r, "bench") for r in rows]
    out = []
    for i, c in enumerate(candles[:signals]):
        direction = common_pb2.DIRECTION_LONG if i % 2 == 0 else common_pb2.DIRECTION_FLAT
        t = c.close_time_ms
        out.append(signal_pb2.Signal(
            meta=common_pb2.Meta(id=f"bench-latency:{SYMBOL}:{t}", event_time_ms=t,
                                 producer="bench"),
            exchange="binance", symbol=SYMBOL, strategy="bench", direction=direction,
            strength=1.0, confidence=1.0, reference_price=c.close,
            stop_loss=protective_stop(direction, c.close), reason="bench latency"))
    return candles, out


def fingerprint(decisions: list[Message], fills: list[fill_pb2.Fill]) -> Fingerprint:
    """(approved, rejected, fills, sum of quantities, sum of prices, sum of fees)."""
    approved = sum(1 for d in decisions if d.approved)  # type: ignore[attr-defined]
    return (approved, len(decisions) - approved, len(fills),
            str(sum((Decimal(f.quantity) for f in fills), Decimal(0))),
            str(sum((Decimal(f.price) for f in fills), Decimal(0))),
            str(sum((Decimal(f.fee) for f in fills), Decimal(0))))


def reference(candles: list[candle_pb2.Candle], signals: list[signal_pb2.Signal]) -> Fingerprint:
    """The same inputs through the two handlers in one process, in the order Kafka gives them
    (every candle first, then the signals), with the services' default settings."""
    risk = RiskHandler(config.load(RiskSettings, environ={}))
    execution = ExecutionHandler(config.load(ExecutionSettings, environ={}))
    gate = Outbox("risk")
    for c in candles:
        risk.handle(Inbound(topics.CANDLE, KEY, c), gate)
    for s in signals:
        risk.handle(Inbound(topics.SIGNAL, KEY, s), gate)
    decided = gate.drain()
    paper = Outbox("execution")
    for c in candles:
        execution.handle(Inbound(topics.CANDLE, KEY, c), paper)
    for topic, key, m in decided:
        if topic == topics.ORDER_APPROVED:
            execution.handle(Inbound(topic, key, m), paper)
    fills = [m for _, _, m in paper.drain() if isinstance(m, fill_pb2.Fill)]
    return fingerprint([m for t, _, m in decided if t == topics.RISK_DECISION], fills)


@dataclass
class _Seen:
    """What the bench's consumer has read: (wall time read, record CreateTime ms, message)."""

    prefix: str
    fills: dict[str, tuple[float, int, fill_pb2.Fill]] = field(default_factory=dict)
    decisions: dict[str, tuple[float, int, Message]] = field(default_factory=dict)
    hops: dict[bytes, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, topic: str, value: bytes, headers: list[tuple[str, bytes]], create_ms: int,
             now: float) -> None:
        logical = topic[len(self.prefix):]
        if logical == HOP:
            self.hops[value] = now
            return
        mtype = next((v for k, v in headers if k == codec.TYPE_HEADER), None)
        message = codec.decode(logical, value, mtype)
        if isinstance(message, common_pb2.Watermark):
            return
        if isinstance(message, fill_pb2.Fill):
            self.fills[message.client_order_id] = (now, create_ms, message)
        else:
            self.decisions[message.meta.cause_id] = (now, create_ms, message)  # type: ignore[attr-defined]


async def _receive(consumer: AIOKafkaConsumer, seen: _Seen) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=200)
        now = time.time()
        for records in batches.values():
            for r in records:
                seen.take(r.topic, r.value, list(r.headers or ()), r.timestamp, now)
        if batches:
            seen.changed.set()


async def _until(seen: _Seen, done: Callable[[], bool], pipeline: KafkaPipeline,
                 what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not done():
        seen.changed.clear()
        left = deadline - time.monotonic()
        if left <= 0:
            raise LatencyBenchFailed(f"timed out after {TIMEOUT_S:.0f}s waiting for {what}")
        try:
            await asyncio.wait_for(seen.changed.wait(), min(left, 1.0))
        except TimeoutError:
            pipeline.check_alive()


async def _execution_has(bootstrap: str, group: str, topic: str, count: int,
                         pipeline: KafkaPipeline) -> None:
    """Wait until the execution service has committed `count` records of `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            done = sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset > 0)
            if done >= count:
                return
            if time.monotonic() > deadline:
                raise LatencyBenchFailed(f"execution consumed {done}/{count} candles in 60 s")
            pipeline.check_alive()
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


@dataclass
class _Samples:
    fill: list[float] = field(default_factory=list)  # signal sent -> fill read (s)
    decided: list[float] = field(default_factory=list)  # -> decision's CreateTime (s)
    produced: list[float] = field(default_factory=list)  # -> fill's CreateTime (s)
    hop: list[float] = field(default_factory=list)  # baseline: produce -> read (s)
    rejected: int = 0


async def _one(producer: KafkaProducer, seen: _Seen, pipeline: KafkaPipeline,
               sig: signal_pb2.Signal, samples: _Samples, counted: bool) -> None:
    """One baseline hop, then one signal to its fill (or its rejection)."""
    value, mtype = codec.encode(sig)
    sent = time.time()
    await producer.send(seen.prefix + HOP, KEY.encode(), value, ((codec.TYPE_HEADER, mtype),))
    await producer.flush()
    await _until(seen, lambda: value in seen.hops, pipeline, "a baseline record")
    hop = seen.hops[value] - sent
    await asyncio.sleep(GAP_S)
    coid = ids.client_order_id(sig.meta.id)
    sid = sig.meta.id
    sent = time.time()
    await publish(producer, seen.prefix, [(topics.SIGNAL, KEY, sig)], NullSensor())
    await producer.flush()
    await _until(seen, lambda: coid in seen.fills or (
        sid in seen.decisions and not seen.decisions[sid][2].approved),  # type: ignore[attr-defined]
        pipeline, f"the fill of {sid}")
    if counted:
        samples.hop.append(hop)
        if coid in seen.fills:
            read, created, _ = seen.fills[coid]
            samples.fill.append(read - sent)
            samples.produced.append(created / 1000 - sent)
            samples.decided.append(seen.decisions[sid][1] / 1000 - sent)
        else:
            samples.rejected += 1
    await asyncio.sleep(GAP_S)


async def _measure(bootstrap: str, prefix: str, pipeline: KafkaPipeline,
                   candles: list[candle_pb2.Candle],
                   signals: list[signal_pb2.Signal]) -> tuple[_Samples, Fingerprint]:
    bus = KafkaBus(bootstrap, client_id="meridian-bench-latency")
    await bus.ensure_topics([TopicConfig(prefix + HOP, PARTITIONS)])
    producer = bus.producer()  # what the services publish with (acks=all, linger 5 ms)
    seen = _Seen(prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, client_id="meridian-bench-latency")
    await consumer.start()
    reader: asyncio.Task[None] | None = None
    try:
        consumer.assign([TopicPartition(prefix + t, p) for t in (topics.FILL,
                                                                 topics.RISK_DECISION, HOP)
                         for p in range(PARTITIONS)])
        reader = asyncio.create_task(_receive(consumer, seen))
        print(f"latency: publishing {len(candles)} candles ...", file=sys.stderr, flush=True)
        await publish(producer, prefix, [(topics.CANDLE, KEY, c) for c in candles], NullSensor())
        await producer.flush()
        await _execution_has(bootstrap, f"{prefix}meridian-execution", prefix + topics.CANDLE,
                             len(candles), pipeline)
        samples = _Samples()
        print(f"latency: {WARMUP} warm-up and {len(signals) - WARMUP} measured signals, one at a "
              "time ...", file=sys.stderr, flush=True)
        for i, sig in enumerate(signals):
            await _one(producer, seen, pipeline, sig, samples, counted=i >= WARMUP)
            if (i + 1) % 100 == 0:
                print(f"latency: {i + 1}/{len(signals)} signals", file=sys.stderr, flush=True)
        fills = [f for _, _, f in seen.fills.values()]
        got = fingerprint([m for _, _, m in seen.decisions.values()], fills)
        return samples, got
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()


def _log_problems(log_dir: Path) -> list[str]:
    """Lines of the services' logs that would make the figure wrong although the fills match: a
    dead-lettered record, a signal taken out of event-time order."""
    return [line for s in SERVICES
            for line in (log_dir / f"{s}.log").read_text(errors="replace").splitlines()
            if "dead-lettered" in line or "behind the merge" in line]


def _ms(values: list[float]) -> tuple[float, float, float]:
    a = np.array(values) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def _report(samples: _Samples, got: Fingerprint) -> None:
    p50, p99, worst = _ms(samples.fill)
    h50, h99, hmax = _ms(samples.hop)
    d50 = _ms(samples.decided)[0]
    f50 = _ms(samples.produced)[0]
    print(f"\nsignal -> fill over Kafka (risk and execution as processes, one broker; {SYMBOL} 1h,"
          f" {len(samples.fill)} signals one at a time after {WARMUP} warm-up; LONG/FLAT "
          f"alternating); fingerprint (approved, rejected, fills, quantity, prices, fees) = {got},"
          " equal to the in-process run")
    print(f"{'':<44}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print(f"{'signal sent -> its fill read from fill.v1':<44}{p50:>9.1f}{p99:>9.1f}{worst:>9.1f}")
    print(f"{'one hop, produce -> read (baseline)':<44}{h50:>9.1f}{h99:>9.1f}{hmax:>9.1f}")
    print(f"signal -> fill = {p50 / h50:.1f} hops at p50, {p99 / h99:.1f} at p99; p50 stages "
          f"(record CreateTimes, ms): decision produced {d50:.0f}, fill produced {f50:.0f}, "
          f"fill read {p50:.0f}")


def main() -> int:
    candles, signals = inputs()
    expected = reference(candles, signals)
    if expected[:3] != (len(signals), 0, len(signals)):
        print(f"LATENCY BENCH: in-process (approved, rejected, fills) = {expected[:3]}, not every "
              f"one of the {len(signals)} signals approved and filled", file=sys.stderr)
        return 1
    infra = load_script("localinfra")
    state = Path(tempfile.mkdtemp(prefix="meridian-bench-latency-"))
    prefix = f"benchlat{uuid.uuid4().hex[:8]}."
    print("latency: starting Kafka ...", file=sys.stderr, flush=True)
    kafka = infra.start_kafka(state)
    ok = False
    try:
        asyncio.run(KafkaBus(kafka.bootstrap).ensure_topics(all_topic_configs(prefix,
                                                                               PARTITIONS)))
        env = {"MERIDIAN_KAFKA_BOOTSTRAP": kafka.bootstrap, "MERIDIAN_TOPIC_PREFIX": prefix,
               "MERIDIAN_PARTITIONS": str(PARTITIONS), "MERIDIAN_METRICS_PORT": "0"}
        with KafkaPipeline(env, state / "logs") as pipeline:
            print("latency: starting risk and execution ...", file=sys.stderr, flush=True)
            pipeline.start(SERVICES)
            pipeline.wait_started()
            samples, got = asyncio.run(_measure(kafka.bootstrap, prefix, pipeline, candles,
                                                signals))
        problems = _log_problems(state / "logs")
        if problems:
            print(f"LATENCY BENCH: the services logged {len(problems)} dead letters or late "
                  f"records, e.g. {problems[0]}; the figure does not count", file=sys.stderr)
            return 1
        if got != expected:
            print(f"LATENCY FINGERPRINT MISMATCH: kafka {got} != in-process {expected}; the "
                  "figure does not count", file=sys.stderr)
            return 1
        _report(samples, got)
        ok = True
        return 0
    except (LatencyBenchFailed, RunFailed) as exc:
        print(f"LATENCY BENCH FAILED: {exc}; logs in {state / 'logs'}", file=sys.stderr)
        return 1
    finally:
        infra.stop_kafka(kafka)
        if ok:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
