"""Helpers for tests that talk to the fake over raw WebSockets (no test framework imported).

ccxt-based tests need nothing from here; these are for asserting on the exact frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType

from meridian_common.marketdata import RawCandle
from meridian_fake_exchange.server import FakeExchange

#: (ccxt id, the one market type to load, a unified symbol) for every venue the fake serves
CCXT_VENUES: list[tuple[str, str, str]] = [
    ("bybit", "linear", "BTC/USDT:USDT"),
    ("bybit", "spot", "BTC/USDT"),
    ("binance", "spot", "BTC/USDT"),
    ("binance", "linear", "BTC/USDT:USDT"),
]


def ws_url(server: FakeExchange, path: str) -> str:
    """`path` is '/<original host>/<original path>', e.g. '/stream.bybit.com/v5/public/linear'."""
    return server.base_url.replace("http://", "ws://", 1) + path


async def receive_json(ws: ClientWebSocketResponse, within_s: float = 2.0) -> Any:
    """The next text frame as JSON; ConnectionError if the socket ends first."""
    message = await asyncio.wait_for(ws.receive(), within_s)
    if message.type != WSMsgType.TEXT:
        raise ConnectionError(f"websocket ended: {message.type!r} {message.data!r}")
    return message.json()


async def collect(ws: ClientWebSocketResponse, done: Callable[[list[Any]], bool],
                  within_s: float = 5.0) -> list[Any]:
    """Read JSON frames until `done(frames)` holds (TimeoutError after `within_s` seconds)."""
    frames: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not done(frames):
        frames.append(await receive_json(ws, max(0.01, deadline - loop.time())))
    return frames


def as_ohlcv(row: RawCandle) -> list[float]:
    """A CSV candle the way ccxt returns one: [timestamp, open, high, low, close, volume]."""
    return [row.open_time_ms, float(row.open), float(row.high), float(row.low),
            float(row.close), float(row.volume)]
