"""What the candle topic already holds for one key: the point a live replica resumes from.

The topic, not the database, is the record of what was published (the table is written first,
so after a crash it may be ahead of the topic). Reading the key's own partition backwards in
growing windows finds its latest candles without consuming as any group.
"""

from __future__ import annotations

from meridian.v1 import candle_pb2
from meridian_common import codec, topics
from meridian_common.bus.base import Bus, partition_for


async def published_candles(bus: Bus, prefix: str, key: str, want: int = 500,
                            window: int = 2000) -> list[candle_pb2.Candle]:
    """Up to `want` latest candles published under `key`, in topic order (oldest first)."""
    topic = prefix + topics.CANDLE
    ends = await bus.topic_ends(topic)
    partition = partition_for(key.encode(), len(ends))
    end = ends[partition]
    raw_key = key.encode()
    while True:
        start = max(end - window, 0)
        found: list[candle_pb2.Candle] = []
        for record in await bus.read_partition(topic, partition, start, end):
            if record.key != raw_key:
                continue
            message = codec.decode(topics.CANDLE, record.value, record.header(codec.TYPE_HEADER))
            if isinstance(message, candle_pb2.Candle):
                found.append(message)
        if len(found) >= want or start == 0:
            return found[-want:]
        window *= 4
