"""The live executor's test harness, shared by the live tests of this directory (loaded with
`meridian_common.testing.sibling_module`; the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from meridian.v1 import fill_pb2, order_event_pb2
from meridian_common import orders, topics
from meridian_common.handler import Inbound, Outbox
from meridian_execution.live.ccxt_venue import venue_for
from meridian_execution.live.handler import LiveExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_fake_exchange import TEST_API_KEY, TEST_API_SECRET, FakeExchange

START_MS = 1_633_046_400_000  # 2021-10-01, inside the shared BTC/ETH data (BTC ~ 43000)
Item = tuple[str, str, Message]


def settings(server: FakeExchange, **over: Any) -> ExecutionSettings:
    values: dict[str, Any] = {
        "mode": "live", "symbols": "BTCUSDT,ETHUSDT", "api_key": TEST_API_KEY,
        "api_secret": TEST_API_SECRET, "exchange_url": server.base_url, "poll_s": 0.05,
        "resend_after_s": 0.0, "fill_lag_ms": 0, **over}
    return ExecutionSettings(**values)


class Driver:
    """A host in miniature: records in, `act`, outputs kept in publication order."""

    def __init__(self, handler: LiveExecutionHandler) -> None:
        self.handler = handler
        self.published: list[Item] = []

    async def send(self, *records: Item) -> list[Item]:
        out = Outbox(self.handler.name)
        for topic, key, message in records:
            self.handler.handle(Inbound(topic, key, message), out)
        await self.handler.act(out)
        items = out.drain()
        self.published.extend(items)
        return items

    async def until(self, done: Callable[[], bool], ticks: int = 100) -> None:
        for _ in range(ticks):
            if done():
                return
            await self.send()
            await asyncio.sleep(0.02)
        raise AssertionError("condition not reached; published: "
                             f"{[(t, type(m).__name__) for t, _, m in self.published][-12:]}")

    def events(self, coid: str) -> list[order_event_pb2.OrderEvent]:
        return [m for t, _, m in self.published if t == topics.ORDER_EVENT
                and m.client_order_id == coid]  # type: ignore[attr-defined]

    def statuses(self, coid: str) -> list[str]:
        return [orders.name(e.status) for e in self.events(coid)]

    def fills(self, coid: str | None = None) -> list[fill_pb2.Fill]:
        return [m for t, _, m in self.published if t == topics.FILL
                and isinstance(m, fill_pb2.Fill)
                and (coid is None or m.client_order_id == coid)]


async def driver(server: FakeExchange, *, venue: str = "bybit", **over: Any) -> Driver:
    s = settings(server, **over)
    return Driver(LiveExecutionHandler(s, venue_for(s, venue)))


Starter = Callable[..., Awaitable[Driver]]
