"""Helpers for tests against the fake (no test framework imported).

`follow_fake_clock` makes an in-process ccxt client sign with the fake clock's time; the rest is
for asserting on exact WebSocket frames. (A rerouted Binance client keeps its error classes
through `meridian_common.ccxt_urls.reroute_urls`.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType

from meridian_common.marketdata import RawCandle
from meridian_fake_exchange.clock import FakeClock
from meridian_fake_exchange.server import FakeExchange

#: (ccxt id, the one market type to load, a unified symbol) for every venue the fake serves
CCXT_VENUES: list[tuple[str, str, str]] = [
    ("bybit", "linear", "BTC/USDT:USDT"),
    ("bybit", "spot", "BTC/USDT"),
    ("binance", "spot", "BTC/USDT"),
    ("binance", "linear", "BTC/USDT:USDT"),
]


def follow_fake_clock(exchange: Any, clock: FakeClock) -> None:
    """Make a ccxt client sign requests with the fake clock's time (its nonce), so signed
    timestamps stay inside Bybit's recv window however the clock is paused, jumped or sped up.

    In-process only. A client in another process uses ccxt's own mechanism instead: option
    `adjustForTimeDifference` or `await exchange.load_time_difference()` (reads
    /v5/market/time), again after the fake clock jumps; or the server is started with
    `check_timestamp=False`.
    """
    exchange.nonce = clock.now_ms


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
