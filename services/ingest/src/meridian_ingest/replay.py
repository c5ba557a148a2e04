"""Publish a replay onto md.candle.v1, with progress: as fast as the consumers allow, or paced
at a multiple of the event-time clock (`speed`), e.g. to drive a live-like demo or a soak test.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from google.protobuf.message import Message

from meridian.v1 import candle_pb2
from meridian_common import topics
from meridian_common.bus.base import Producer
from meridian_common.host import publish
from meridian_common.metrics import NullSensor, Sensor
from meridian_ingest.ingest_metrics import IngestMetrics
from meridian_ingest.sources import Routed

log = logging.getLogger(__name__)

FLUSH_EVERY = 1000


async def replay(candles: Iterable[candle_pb2.Candle | Routed], producer: Producer, prefix: str,
                 *,
                 total: int | None = None,
                 throttle: Callable[[], Awaitable[None]] | None = None,
                 progress: Callable[[int, int | None, float], None] | None = None,
                 sensor: Sensor | None = None, speed: float = 0.0,
                 metrics: IngestMetrics | None = None) -> int:
    """Publish candles (and the watermarks and funding a replay stream routes with them) in
    order; returns how many candles. `throttle` is awaited between chunks.

    With speed > 0 a candle is sent when the wall clock has advanced (close time - first close
    time) / speed since the start; candles closing together go out together.

    `metrics` counts each candle (mode `replay`) once its chunk is flushed to the bus.
    """
    sensor = sensor or NullSensor()
    metrics = metrics or IngestMetrics()
    started = time.perf_counter()
    chunk: list[tuple[str, str, Message]] = []
    sent = 0
    first_close: int | None = None
    for candle in candles:
        if isinstance(candle, Routed):
            chunk.append((candle.topic, candle.key, candle.message))
            continue
        if speed > 0:
            first_close = candle.close_time_ms if first_close is None else first_close
            due = started + (candle.close_time_ms - first_close) / 1000 / speed
            if due > time.perf_counter() and chunk:
                await _send(producer, prefix, chunk, sensor, metrics)
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk.append((topics.CANDLE, topics.market_key(candle.exchange, candle.symbol), candle))
        sent += 1
        if len(chunk) >= FLUSH_EVERY:
            await _send(producer, prefix, chunk, sensor, metrics)
            if progress:
                progress(sent, total, time.perf_counter() - started)
            if throttle:
                await throttle()
    await _send(producer, prefix, chunk, sensor, metrics)
    if progress:
        progress(sent, total, time.perf_counter() - started)
    return sent


async def _send(producer: Producer, prefix: str, chunk: list[tuple[str, str, Message]],
                sensor: Sensor, metrics: IngestMetrics) -> None:
    if chunk:
        await publish(producer, prefix, chunk, sensor)
        await producer.flush()
        for _, _, message in chunk:
            if isinstance(message, candle_pb2.Candle):
                metrics.candle(message.symbol, "replay", message.close_time_ms)
        chunk.clear()
