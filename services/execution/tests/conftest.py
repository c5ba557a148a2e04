"""Fixtures of the live executor tests: the fake exchange (real HTTP, driven through real
ccxt) and live executors on it, stopped after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from meridian_common.testing import sibling_module
from meridian_fake_exchange import FakeClock, FakeExchange

live = sibling_module(__file__, "live_support")


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    server = FakeExchange(("BTCUSDT", "ETHUSDT"), ("1m", "1h"), FakeClock(live.START_MS, 1.0))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_driver(exchange: FakeExchange) -> AsyncIterator[Any]:
    """`await make_driver(**settings)`: a live executor on the fake exchange."""
    made: list[Any] = []

    async def factory(**over: Any) -> Any:
        d = await live.driver(exchange, **over)
        made.append(d)
        return d

    yield factory
    for d in made:
        await d.handler.stop()
