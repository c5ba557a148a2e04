"""kill -9 of the live executor while it is sending orders, over real Kafka, against the fake
exchange through real ccxt: no order reaches the exchange twice, and every execution the
exchange made is published exactly once on fill.v1 with its exact quantity and price.

The executor commits every few records (MERIDIAN_CONSUMER_BATCH=3), so most kills land between a
submit and the commit of the approved order that caused it: the restarted process reads that
order again and must find it at the exchange (by its client order id) instead of resending it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf.message import Message

from meridian.v1 import common_pb2, fill_pb2, order_approved_pb2, order_event_pb2
from meridian_common import ids, orders, topics, venues
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import all_topic_configs, publish
from meridian_common.metrics import NullSensor
from meridian_common.testing import read_topic
from meridian_fake_exchange import TEST_API_KEY, TEST_API_SECRET, FakeClock, FakeExchange

pytestmark = pytest.mark.integration
START_MS = 1_633_046_400_000  # 2021-10-01
ORDERS = 60


def _orders(seed: int, venue: str) -> list[tuple[str, str, Message]]:
    rng = random.Random(seed)
    name = venues.venue(venue, "linear")  # the executor's venue name in keys (linear default)
    items: list[tuple[str, str, Message]] = []
    for n in range(ORDERS):
        symbol = rng.choice(("BTCUSDT", "ETHUSDT"))
        coid = ids.client_order_id(f"live-kill9:{seed}:{n}")
        # above Binance's 100 USDT minimum notional at the 2021-10 prices
        qty = f"{rng.randint(3, 20) / 1000:.3f}" if symbol == "BTCUSDT" else \
            f"{rng.randint(5, 20) / 100:.2f}"
        items.append((topics.ORDER_APPROVED, f"{name}:{symbol}", order_approved_pb2.ApprovedOrder(
            meta=common_pb2.Meta(id=coid, event_time_ms=START_MS + n, producer="risk"),
            client_order_id=coid, signal_id=f"live-kill9:{n}", exchange=name,
            symbol=symbol, side=rng.choice([common_pb2.SIDE_BUY, common_pb2.SIDE_SELL]),
            order_type=order_approved_pb2.ORDER_TYPE_MARKET, quantity=qty,
            strategy="kill9")))
    return items


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "meridian_execution"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _wait(done: object, proc: subprocess.Popen[bytes], log: Path,
                timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"execution exited {proc.returncode}: {_tail(log)}"
        if await done():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out: {_tail(log)}")


def _truth(exchange: FakeExchange, venue: str) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """(client id of every order, execution id -> (client id, qty, price)) in either venue's
    own shapes (Binance trades carry the order id only)."""
    orders_ = exchange.orders(venue=venue)
    if venue == "bybit":
        return ([o["orderLinkId"] for o in orders_],
                {e["execId"]: (e["orderLinkId"], e["execQty"], e["execPrice"])
                 for e in exchange.executions(venue=venue)})
    client = {str(o["orderId"]): o["clientOrderId"] for o in orders_}
    return ([o["clientOrderId"] for o in orders_],
            {str(e["id"]): (client[str(e["orderId"])], e["qty"], e["price"])
             for e in exchange.executions(venue=venue)})


@pytest.mark.parametrize(("venue", "seed"), [("bybit", 1), ("bybit", 2), ("binance", 3)])
async def test_kill_9_while_sending_never_doubles_an_order_or_a_fill(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, venue: str, seed: int) -> None:
    """Binance frees a client id once its order is filled: there only the query by client id
    stands between a kill and a second order."""
    prefix = f"{topic_prefix}live{seed}."
    items = _orders(seed, venue)
    coids = [m.client_order_id for _, _, m in items]  # type: ignore[attr-defined]
    exchange = FakeExchange(("BTCUSDT", "ETHUSDT"), ("1m", "1h"), FakeClock(START_MS, 1.0))
    await exchange.start()
    bus = KafkaBus(kafka_bootstrap)
    await bus.ensure_topics(all_topic_configs(prefix, 3))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")},
           "MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": prefix, "MERIDIAN_CONSUMER_BATCH": "3",
           "MERIDIAN_EXCHANGE": venue, "MERIDIAN_EXECUTION_MODE": "live",
           "MERIDIAN_EXECUTION_SYMBOLS": "BTCUSDT,ETHUSDT",
           "MERIDIAN_EXECUTION_API_KEY": TEST_API_KEY,
           "MERIDIAN_EXECUTION_API_SECRET": TEST_API_SECRET,
           "MERIDIAN_EXECUTION_EXCHANGE_URL": exchange.base_url,
           "MERIDIAN_EXECUTION_POLL_S": "0.1", "MERIDIAN_EXECUTION_FILL_LAG_MS": "0"}
    log = tmp_path / "execution.log"
    rng = random.Random(seed)

    def accepted() -> int:
        return sum(1 for c in _truth(exchange, venue)[0] if c in coids)

    proc = _start(env, log)
    try:
        producer = bus.producer()
        await publish(producer, prefix, items, NullSensor())
        await producer.flush()
        await producer.stop()
        for low, high in ((0.1, 0.3), (0.4, 0.6), (0.7, 0.85)):  # kill while sending
            target = int(ORDERS * rng.uniform(low, high))

            async def reached(n: int = target) -> bool:
                return accepted() >= n

            await _wait(reached, proc, log)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc = _start(env, log)

        async def all_filled() -> bool:
            fills = [m for m in await read_topic(bus, prefix, topics.FILL)
                     if isinstance(m, fill_pb2.Fill)]
            return accepted() == ORDERS and len({f.fill_id for f in fills}) >= \
                len(_truth(exchange, venue)[1])

        await _wait(all_filled, proc, log)
    finally:
        proc.terminate()  # it finishes its batch, talking to the exchange: keep serving it
        try:
            await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
            await exchange.stop()

    # the exchange: one create request and one order per approved order, all filled
    assert all(exchange.create_requests(c) == 1 for c in coids), \
        {c: exchange.create_requests(c) for c in coids if exchange.create_requests(c) != 1}
    placed, executions = _truth(exchange, venue)
    by_link = Counter(placed)
    assert all(by_link[c] == 1 for c in coids)
    # fill.v1: each execution once, exactly as the exchange made it
    fills = [m for m in await read_topic(bus, prefix, topics.FILL)
             if isinstance(m, fill_pb2.Fill)]
    ids_seen = Counter(f.fill_id for f in fills)
    assert max(ids_seen.values()) == 1, [i for i, n in ids_seen.items() if n > 1]
    assert {f.fill_id.rsplit(":x", 1)[1] for f in fills} == set(executions)
    for f in fills:
        coid, qty, price = executions[f.fill_id.rsplit(":x", 1)[1]]
        assert (Decimal(f.quantity), Decimal(f.price)) == (Decimal(qty), Decimal(price))
        assert f.client_order_id == coid
    # order.event.v1: per order, one unbroken sequence ending FILLED
    events: dict[str, list[order_event_pb2.OrderEvent]] = {}
    for m in await read_topic(bus, prefix, topics.ORDER_EVENT):
        if isinstance(m, order_event_pb2.OrderEvent):
            events.setdefault(m.client_order_id, []).append(m)
    for coid in coids:
        seq = [e.sequence for e in events[coid]]
        assert seq == list(range(1, len(seq) + 1)), (coid, seq)
        assert events[coid][-1].status == orders.FILLED
    assert "service started" in log.read_text(errors="replace")
