"""Replay sources: candles of several markets merged into one stream in event-time order.

Merging by (open time, key) gives every run the same global order, like the exchange's own
clock, and keeps downstream lag between markets small. A market is a venue name and a symbol
(key "venue:symbol"), so one stream can hold several venues: a spot `binance:BTCUSDT` next to a
perpetual `binance-linear:BTCUSDT` (within one venue, key order is symbol order).

`replay_stream` adds what a live ingest would also tell consumers: a Watermark per market at
its first candle's open (no candle of that market closes earlier, so a consumer joining it, like
the features' cross-asset reference, need not wait for it), and for perpetuals the funding
settlements interleaved with a funding Watermark after every candle (all settlements up to its
close are out), which is what lets the features service join funding deterministically.

Modelling: only spot prices are stored, so a replayed perpetual that copies a spot market
(MERIDIAN_INGEST_REPLAY_PERPETUALS) is marked at the same stored candles (basis 0), and its
funding is the stored settlements.
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


class Market(NamedTuple):
    """One replayed market: the venue name its candles carry as `exchange`, and its symbol."""

    venue: str
    symbol: str

    @property
    def key(self) -> str:
        return topics.market_key(self.venue, self.symbol)


Tagged = tuple[int, str, Market, RawCandle]  # (open time, key, market, row): the merge order


def _tagged(market: Market, rows: Iterable[RawCandle]) -> Iterator[Tagged]:
    key = market.key
    for raw in rows:
        yield raw.open_time_ms, key, market, raw


def merged(exchange: str, timeframe: str,
           per_symbol: dict[str, Iterable[RawCandle]]) -> Iterator[candle_pb2.Candle]:
    """Candles of all symbols of one venue, ordered by open time then symbol."""
    return merged_markets(timeframe, {Market(exchange, s): rows for s, rows in per_symbol.items()})


def merged_markets(timeframe: str,
                   per_market: dict[Market, Iterable[RawCandle]]) -> Iterator[candle_pb2.Candle]:
    """Candles of all markets, ordered by open time then key."""
    tf = timeframe_ms(timeframe)
    streams = [_tagged(market, rows) for market, rows in per_market.items()]
    for _, _, market, raw in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        yield make_candle(market.venue, market.symbol, timeframe, raw, PRODUCER, tf_ms=tf)


class Routed(NamedTuple):
    """A replay item that is not a candle: where it goes and what it is."""

    topic: str
    key: str
    message: Message


Funding = Iterable[tuple[int, str]]  # (settlement ms, rate), ascending


def replay_stream(timeframe: str, per_market: dict[Market, Iterable[RawCandle]],
                  funding: dict[Market, Funding] | None = None,
                  ) -> Iterator[candle_pb2.Candle | Routed]:
    """`merged_markets` candles with the start watermarks (in `per_market` order) and, for the
    markets in `funding`, the funding settlements and watermarks; see the module docstring."""
    starts: dict[Market, Iterable[RawCandle]] = {}
    for market, rows in per_market.items():
        it = iter(rows)
        first = next(it, None)
        if first is None:
            continue
        yield Routed(topics.CANDLE, market.key, common_pb2.Watermark(
            key=market.key, event_time_ms=first.open_time_ms, producer=PRODUCER))
        starts[market] = _prepend(first, it)
    pending = {m.key: _Peek(iter(rows)) for m, rows in (funding or {}).items()}
    for candle in merged_markets(timeframe, starts):
        key = topics.market_key(candle.exchange, candle.symbol)
        settlements = pending.get(key)
        if settlements is None:
            yield candle
            continue
        yield from _settled(key, candle, settlements)
        yield candle
        yield Routed(topics.FUNDING, key, common_pb2.Watermark(
            key=key, event_time_ms=candle.close_time_ms, producer=PRODUCER))


def _settled(key: str, candle: candle_pb2.Candle, settlements: _Peek) -> Iterator[Routed]:
    """The settlements up to the candle's close not yet sent: they go before the candle, so a
    consumer marking it already knows every rate settled by then."""
    while settlements.head is not None and settlements.head[0] <= candle.close_time_ms:
        t, rate = settlements.pop()
        yield Routed(topics.FUNDING, key, make_funding(candle.exchange, candle.symbol, t, rate,
                                                       PRODUCER))


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
