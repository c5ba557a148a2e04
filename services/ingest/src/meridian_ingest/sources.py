"""Replay sources: candles of several symbols merged into one stream in event-time order.

Merging by (close time, symbol) gives every run the same global order, like the exchange's own
clock, and keeps downstream lag between symbols small.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from pathlib import Path

from meridian.v1 import candle_pb2
from meridian_common.marketdata import (
    CsvCandleSource,
    RawCandle,
    default_data_dir,
    make_candle,
    timeframe_ms,
)

PRODUCER = "ingest"


def csv_rows(data_dir: Path | None, symbol: str, timeframe: str, start_ms: int | None,
             end_ms: int | None) -> Iterator[RawCandle]:
    return CsvCandleSource(data_dir or default_data_dir(), symbol, timeframe).rows(start_ms, end_ms)


def _tagged(symbol: str, rows: Iterable[RawCandle]) -> Iterator[tuple[int, str, RawCandle]]:
    for raw in rows:
        yield raw.open_time_ms, symbol, raw


def merged(exchange: str, timeframe: str,
           per_symbol: dict[str, Iterable[RawCandle]]) -> Iterator[candle_pb2.Candle]:
    """Candles of all symbols, ordered by open time then symbol."""
    tf = timeframe_ms(timeframe)
    streams = [_tagged(symbol, rows) for symbol, rows in per_symbol.items()]
    for _, symbol, raw in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        yield make_candle(exchange, symbol, timeframe, raw, PRODUCER, tf_ms=tf)
