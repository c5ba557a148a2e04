"""Candle construction: one function turns raw exchange rows into md.candle.v1 messages."""

from __future__ import annotations

from typing import NamedTuple

from meridian.v1 import candle_pb2, common_pb2
from meridian_common.ids import candle_id

_UNITS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def timeframe_ms(timeframe: str) -> int:
    """'1h' -> 3600000. Raises ValueError naming the timeframe when it is not ccxt notation."""
    unit = timeframe[-1:]
    number = timeframe[:-1]
    if unit not in _UNITS or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"timeframe {timeframe!r} is not of the form <n>m|h|d|w (e.g. '1h')")
    return int(number) * _UNITS[unit]


class RawCandle(NamedTuple):
    """A candle as the exchange sent it: open time in ms, values as decimal strings."""

    open_time_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str


def make_candle(exchange: str, symbol: str, timeframe: str, raw: RawCandle, producer: str,
                revision: int = 0, tf_ms: int | None = None) -> candle_pb2.Candle:
    close_time = raw.open_time_ms + (tf_ms or timeframe_ms(timeframe))
    return candle_pb2.Candle(
        meta=common_pb2.Meta(
            id=candle_id(exchange, symbol, timeframe, raw.open_time_ms, revision),
            event_time_ms=close_time,
            producer=producer,
        ),
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        open_time_ms=raw.open_time_ms,
        close_time_ms=close_time,
        open=raw.open,
        high=raw.high,
        low=raw.low,
        close=raw.close,
        volume=raw.volume,
        revision=revision,
    )
