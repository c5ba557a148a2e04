"""Replay source: the candles of an event-time range read back from a candle topic.

Reads every partition of `<source prefix>md.candle.v1` outside any consumer group, keeps the
candles whose open time is in [start, end) and the requested symbols, and merges them in the
same (open time, symbol) order as the CSV and table sources, so a replay from Kafka publishes
exactly what a replay from the files would. Corrections (revision > 0) replace the first
publication: a backtest sees each candle's final values once.

The range is by event time (the candle's open time), not by Kafka's record timestamp, which
is the time the record was written and says nothing about the market.
"""

from __future__ import annotations

from collections.abc import Iterable

from meridian.v1 import candle_pb2
from meridian_common import codec, topics
from meridian_common.bus.base import Bus

CHUNK = 20_000


async def read_candles(bus: Bus, source_prefix: str, symbols: Iterable[str], timeframe: str,
                       start_ms: int | None, end_ms: int | None) -> list[candle_pb2.Candle]:
    topic = source_prefix + topics.CANDLE
    wanted = set(symbols)
    latest: dict[tuple[str, str, int], candle_pb2.Candle] = {}
    ends = await bus.topic_ends(topic)
    for partition, end in enumerate(ends):
        offset = 0
        while offset < end:
            records = await bus.read_partition(topic, partition, offset, min(offset + CHUNK, end))
            if not records:
                break
            for record in records:
                message = codec.decode(topics.CANDLE, record.value,
                                       record.header(codec.TYPE_HEADER))
                if not isinstance(message, candle_pb2.Candle):
                    continue
                if message.symbol not in wanted or message.timeframe != timeframe:
                    continue
                if start_ms is not None and message.open_time_ms < start_ms:
                    continue
                if end_ms is not None and message.open_time_ms >= end_ms:
                    continue
                slot = (message.exchange, message.symbol, message.open_time_ms)
                kept = latest.get(slot)
                if kept is None or message.revision >= kept.revision:
                    latest[slot] = message
            offset = records[-1].offset + 1
    return sorted(latest.values(), key=lambda c: (c.open_time_ms, c.symbol))

