"""Replay sources: candles of several symbols merged into one stream in event-time order.

Merging by (close time, symbol) gives every run the same global order, like the exchange's own
clock, and keeps downstream lag between symbols small.

`replay_stream` adds what a live ingest would also tell consumers: a Watermark per symbol at
its first candle's open (no candle of that symbol closes earlier, so a consumer joining it, like
the features' cross-asset reference, need not wait for it), and for perpetuals the funding
settlements interleaved with a funding Watermark after every candle (all settlements up to its
close are out), which is what lets the features service join funding deterministically.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from google.protobuf.message import Message

from meridian.v1 import candle_pb2, common_pb2
from meridian_common import topics
from meridian_common.marketdata import (
    CsvCandleSource,
    RawCandle,
    default_data_dir,
    make_candle,
    make_funding,
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


class Routed(NamedTuple):
    """A replay item that is not a candle: where it goes and what it is."""

    topic: str
    key: str
    message: Message


Funding = Iterable[tuple[int, str]]  # (settlement ms, rate), ascending


def replay_stream(exchange: str, timeframe: str, per_symbol: dict[str, Iterable[RawCandle]],
                  funding: dict[str, Funding] | None = None,
                  ) -> Iterator[candle_pb2.Candle | Routed]:
    """`merged` candles with the start watermarks and (for symbols in `funding`) the funding
    settlements and watermarks; see the module docstring."""
    starts: dict[str, Iterable[RawCandle]] = {}
    for symbol, rows in per_symbol.items():
        it = iter(rows)
        first = next(it, None)
        if first is None:
            continue
        key = topics.market_key(exchange, symbol)
        yield Routed(topics.CANDLE, key, common_pb2.Watermark(
            key=key, event_time_ms=first.open_time_ms, producer=PRODUCER))
        starts[symbol] = _prepend(first, it)
    pending = {s: _Peek(iter(rows)) for s, rows in (funding or {}).items()}
    for candle in merged(exchange, timeframe, starts):
        settlements = pending.get(candle.symbol)
        if settlements is None:
            yield candle
            continue
        key = topics.market_key(exchange, candle.symbol)
        while settlements.head is not None and settlements.head[0] <= candle.close_time_ms:
            t, rate = settlements.pop()
            yield Routed(topics.FUNDING, key, make_funding(exchange, candle.symbol, t, rate,
                                                           PRODUCER))
        yield candle
        yield Routed(topics.FUNDING, key, common_pb2.Watermark(
            key=key, event_time_ms=candle.close_time_ms, producer=PRODUCER))


def with_start_watermarks(candles: list[candle_pb2.Candle]) -> list[candle_pb2.Candle | Routed]:
    """Candles already in replay order (e.g. read back from a topic) led by the same start
    watermarks `replay_stream` publishes."""
    firsts: dict[str, int] = {}
    for c in candles:
        firsts.setdefault(topics.market_key(c.exchange, c.symbol), c.open_time_ms)
    heads: list[candle_pb2.Candle | Routed] = [
        Routed(topics.CANDLE, key, common_pb2.Watermark(key=key, event_time_ms=t,
                                                         producer=PRODUCER))
        for key, t in firsts.items()]
    return heads + list(candles)


def _prepend(first: RawCandle, rest: Iterator[RawCandle]) -> Iterator[RawCandle]:
    yield first
    yield from rest


class _Peek:
    __slots__ = ("head", "it")

    def __init__(self, it: Iterator[tuple[int, str]]) -> None:
        self.it = it
        self.head = next(it, None)

    def pop(self) -> tuple[int, str]:
        item = self.head
        assert item is not None
        self.head = next(self.it, None)
        return item
