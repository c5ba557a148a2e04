"""Fixtures for the fake-exchange tests: servers on free ports and ccxt.pro clients aimed at them.

Every test runs real ccxt / ccxt.pro code against a running server; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import ccxt.pro
import pytest
from aiohttp import ClientSession

from meridian_common.ccxt_urls import reroute_urls
from meridian_fake_exchange import FakeClock, FakeExchange

ServerFactory = Callable[..., Awaitable[FakeExchange]]
ClientFactory = Callable[[FakeExchange, str, str], Any]


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
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session
