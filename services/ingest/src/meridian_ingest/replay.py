"""Publish a replay onto md.candle.v1, with progress, as fast as the consumers allow."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from meridian.v1 import candle_pb2
from meridian_common import topics
from meridian_common.bus.base import Producer
from meridian_common.host import publish
from meridian_common.metrics import NullSensor, Sensor

log = logging.getLogger(__name__)

FLUSH_EVERY = 1000


async def replay(candles: Iterable[candle_pb2.Candle], producer: Producer, prefix: str, *,
                 total: int | None = None,
                 throttle: Callable[[], Awaitable[None]] | None = None,
                 progress: Callable[[int, int | None, float], None] | None = None,
                 sensor: Sensor | None = None) -> int:
    """Publish candles in order; returns how many. `throttle` is awaited between chunks."""
    sensor = sensor or NullSensor()
    started = time.perf_counter()
    chunk: list[tuple[str, str, candle_pb2.Candle]] = []
    sent = 0
    for candle in candles:
        chunk.append((topics.CANDLE, topics.market_key(candle.exchange, candle.symbol), candle))
        if len(chunk) >= FLUSH_EVERY:
            sent += await _send(producer, prefix, chunk, sensor)
            if progress:
                progress(sent, total, time.perf_counter() - started)
            if throttle:
                await throttle()
    sent += await _send(producer, prefix, chunk, sensor)
    if progress:
        progress(sent, total, time.perf_counter() - started)
    return sent


async def _send(producer: Producer, prefix: str, chunk: list[tuple[str, str, candle_pb2.Candle]],
                sensor: Sensor) -> int:
    n = len(chunk)
    if n:
        await publish(producer, prefix, chunk, sensor)
        await producer.flush()
        chunk.clear()
    return n
