"""Fixtures for the fake-exchange tests: servers on free ports and ccxt.pro clients aimed at them.

Every test runs real ccxt / ccxt.pro code against a running server; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import ccxt.async_support
import ccxt.pro
import pytest
from aiohttp import ClientSession

from meridian_common.ccxt_urls import reroute_urls
from meridian_fake_exchange import TEST_API_KEY, TEST_API_SECRET, FakeClock, FakeExchange
from meridian_fake_exchange.testing import follow_fake_clock

ServerFactory = Callable[..., Awaitable[FakeExchange]]
ClientFactory = Callable[[FakeExchange, str, str], Any]
TraderFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start servers (stopped at teardown); the clock is paused unless speed is given."""
    servers: list[FakeExchange] = []

    async def factory(start_ms: int, *, speed: float | None = None,
                      symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
                      timeframes: tuple[str, ...] = ("1m", "1h"),
                      **kwargs: Any) -> FakeExchange:
        clock = FakeClock(start_ms, speed or 1.0, paused=speed is None)
        server = FakeExchange(symbols, timeframes, clock, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """ccxt.pro exchanges loading only one market type, rerouted to the server."""
    clients: list[Any] = []

    def factory(server: FakeExchange, name: str, kind: str) -> Any:
        exchange = getattr(ccxt.pro, name)({
            "enableRateLimit": False,
            "options": {"fetchMarkets": {"types": [kind]}},
        })
        exchange.timeout_on_exit = 0  # ccxt waits 250 ms in close() for TLS; plain HTTP here
        reroute_urls(exchange, server.base_url)
        clients.append(exchange)
        return exchange

    yield factory
    for exchange in clients:
        await exchange.close()


@pytest.fixture
async def make_trader() -> AsyncIterator[TraderFactory]:
    """Keyed ccxt.async_support.bybit clients rerouted to a server, markets of one type
    ("linear" or "spot") loaded, signing with the fake clock unless follow_clock=False
    (sync_time=True: take the time offset from the server first, as a real client must;
    pro=True: a ccxt.pro client, for the private WebSocket)."""
    clients: list[Any] = []

    async def factory(server: FakeExchange, kind: str = "linear", *,
                      api_key: str = TEST_API_KEY, secret: str = TEST_API_SECRET,
                      follow_clock: bool = True, load: bool = True, sync_time: bool = False,
                      pro: bool = False, options: dict[str, Any] | None = None) -> Any:
        exchange = (ccxt.pro if pro else ccxt.async_support).bybit({
            "apiKey": api_key, "secret": secret, "enableRateLimit": False,
            "options": {"fetchMarkets": {"types": [kind]},
                        "defaultType": "spot" if kind == "spot" else "swap",
                        **(options or {})},
        })
        exchange.timeout_on_exit = 0
        reroute_urls(exchange, server.base_url)
        if follow_clock:
            follow_fake_clock(exchange, server.clock)
        clients.append(exchange)
        if sync_time:  # before load_markets: its first call (currencies) is already signed
            await exchange.load_time_difference()
        if load:
            await exchange.load_markets()
        return exchange

    yield factory
    for exchange in clients:
        await exchange.close()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


def price_by_hand(server: FakeExchange, t: int, symbol: str = "BTCUSDT",
                  timeframe: str = "1m") -> Decimal:
    """The last price at fake time `t`, recomputed from the CSV rows (independently of the
    server's pricing code): the candle containing t, linear from its open to its close,
    rounded to the data's 2 decimals."""
    tf = {"1m": 60_000, "1h": 3_600_000}[timeframe]
    row = server.true_candles(symbol, timeframe, t - tf + 1, t)[-1]
    o, c = Decimal(row.open), Decimal(row.close)
    moved = (c - o) * Decimal(t - row.open_time_ms) / Decimal(tf)
    return (o + moved).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


def on_tick(price: Decimal, tick: str = "0.1") -> Decimal:
    """A price rounded to the nearest tick (how market fills are priced)."""
    step = Decimal(tick)
    return (price / step).to_integral_value(ROUND_HALF_EVEN) * step


@pytest.fixture
def hand() -> Any:
    """The hand-computation helpers, as a fixture (test modules cannot import conftest)."""

    class Hand:
        price = staticmethod(price_by_hand)
        tick = staticmethod(on_tick)

    return Hand
