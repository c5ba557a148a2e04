"""The executor's series agree with what it published: paper over real candles and the orders
the risk gate approves on them (transitions by state, fills by side, fees, open orders; nothing
counted while the host rebuilds the state), and live against the fake exchange through real ccxt
(exchange errors by kind, reconciliation failures, the open orders gauge after a restore)."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, order_approved_pb2, order_event_pb2
from meridian_common import config, ids, orders, testing, topics
from meridian_common.ccxt_urls import reroute_urls
from meridian_common.handler import Inbound, Outbox
from meridian_common.testing import bound_registry, exported
from meridian_execution.handler import ExecutionHandler
from meridian_execution.live.ccxt_venue import venue_for
from meridian_execution.live.handler import LiveExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_fake_exchange import TEST_API_KEY, TEST_API_SECRET, FakeExchange
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

Routed = tuple[str, str, Message]
STATES = ("pending_submit", "open", "partially_filled", "filled", "canceled", "rejected",
          "expired", "unknown")
START_MS = 1_633_046_400_000  # 2021-10-01, inside the fake exchange's data



def _transitions(registry: CollectorRegistry) -> dict[str, float]:
    return {s: exported(registry, "meridian_execution_orders_total", state=s) for s in STATES}


def _published(out: list[Routed]) -> tuple[Counter[str], Counter[str], Decimal]:
    """(transitions by state, fills by side, the fills' fees) of published outputs."""
    events = Counter(orders.name(m.status).lower() for t, _, m in out
                     if isinstance(m, order_event_pb2.OrderEvent))
    fills = [m for _, _, m in out if isinstance(m, fill_pb2.Fill)]
    sides = Counter("buy" if f.side == common_pb2.SIDE_BUY else "sell" for f in fills)
    return events, sides, sum((Decimal(f.fee) for f in fills), Decimal(0))


def _still_open(out: list[Routed]) -> int:
    """Orders whose last published event is not terminal."""
    last: dict[str, int] = {}
    for _, _, m in out:
        if isinstance(m, order_event_pb2.OrderEvent):
            last[m.client_order_id] = m.status
    return sum(1 for status in last.values() if status not in orders.TERMINAL)


# -- paper -------------------------------------------------------------------------------------


@cache
def _paper_inputs(model_dir: str) -> tuple[Routed, ...]:
    """Real BTC+ETH candles (2021-01..03) and the orders the risk gate approves on the trend
    rules' signals, in event time (orders before the candle that opens at their time)."""
    common = config.load(config.CommonSettings, environ={})
    ingest = config.load(IngestSettings, environ={}, symbols="BTCUSDT,ETHUSDT",
                         start="2021-01-01", end="2021-03-01")
    stream = list(commands.candle_stream(common, ingest))
    features = testing.feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE, stream)
    signals = SignalsHandler(SignalsSettings(model_dir=model_dir))
    asyncio.run(signals.start())
    candles = [(topics.CANDLE, topics.market_key(m.exchange, m.symbol), m) for m in stream
               if isinstance(m, candle_pb2.Candle)]
    gate = RiskHandler(RiskSettings(trailing_stop=Decimal("0.03")))
    approved = [r for r in testing.feed(gate, topics.CANDLE, candles + testing.feed(
        signals, topics.FEATURES, features)) if r[0] == topics.ORDER_APPROVED]
    merged = sorted([(m.open_time_ms, 1, r) for r in candles for m in (r[2],)]  # type: ignore[attr-defined]
                    + [(Inbound(*r).event_time_ms, 0, r) for r in approved],
                    key=lambda x: (x[0], x[1], x[2][1]))
    return tuple(r for *_, r in merged)


def test_paper_series_count_what_the_executor_published(tmp_path: Path) -> None:
    executor = ExecutionHandler(ExecutionSettings())
    registry = bound_registry(executor)
    for kind in ("retryable", "fatal"):  # live-only series, present in paper mode too
        assert exported(registry, "meridian_execution_exchange_errors_total", kind=kind) == 0
    assert exported(registry, "meridian_execution_reconciliation_failures_total") == 0
    items = _paper_inputs(str(tmp_path / "models"))
    out = testing.feed(executor, topics.CANDLE, items)
    events, sides, fees = _published(out)
    assert events["filled"] > 10
    assert sides["buy"]
    assert sides["sell"]
    assert _transitions(registry) == {s: events[s] for s in STATES}
    for side in ("buy", "sell"):
        assert exported(registry, "meridian_execution_fills_total", side=side) == sides[side]
    assert exported(registry, "meridian_execution_fees_quote_total") == pytest.approx(
        float(fees), rel=1e-12)
    assert exported(registry, "meridian_execution_open_orders") == _still_open(out)


def test_paper_rebuild_counts_nothing_and_sets_the_open_orders(tmp_path: Path) -> None:
    items = list(_paper_inputs(str(tmp_path / "models")))
    # cut right after an approved order, before the candle that fills it
    cut = next(i for i in range(len(items) // 2, len(items))
               if isinstance(items[i][2], order_approved_pb2.ApprovedOrder)) + 1
    executor = ExecutionHandler(ExecutionSettings())
    registry = bound_registry(executor)
    executor.replaying = True  # type: ignore[attr-defined]  # the host's rebuild
    rebuilt = testing.feed(executor, topics.CANDLE, items[:cut])
    assert set(_transitions(registry).values()) == {0}
    assert exported(registry, "meridian_execution_fills_total", side="buy") == 0
    assert exported(registry, "meridian_execution_fees_quote_total") == 0
    assert _still_open(rebuilt) >= 1
    assert exported(registry, "meridian_execution_open_orders") == _still_open(rebuilt)
    executor.replaying = False  # type: ignore[attr-defined]
    live = testing.feed(executor, topics.CANDLE, items[cut:])
    events, sides, _ = _published(live)
    assert _transitions(registry) == {s: events[s] for s in STATES}
    assert exported(registry, "meridian_execution_fills_total", side="sell") == sides["sell"]
    assert exported(registry, "meridian_execution_open_orders") == _still_open(rebuilt + live)


# -- live --------------------------------------------------------------------------------------


# the `exchange` fixture (the fake exchange at START_MS) is in conftest.py


class Live:
    """A live executor driven as the host drives it (handle per record, then act), metrics
    bound, outputs kept in publication order."""

    def __init__(self, server: FakeExchange, **over: Any) -> None:
        values: dict[str, Any] = {
            "mode": "live", "symbols": "BTCUSDT,ETHUSDT", "api_key": TEST_API_KEY,
            "api_secret": TEST_API_SECRET, "exchange_url": server.base_url, "poll_s": 0.05,
            "resend_after_s": 0.0, "fill_lag_ms": 0, **over}
        s = ExecutionSettings(**values)
        self.handler = LiveExecutionHandler(s, venue_for(s, "bybit"))
        self.registry = bound_registry(self.handler)
        self.published: list[Routed] = []

    async def send(self, *records: Routed) -> None:
        out = Outbox(self.handler.name)
        for topic, key, message in records:
            self.handler.handle(Inbound(topic, key, message), out)
        await self.handler.act(out)
        self.published.extend(out.drain())

    async def until_settled(self, coid: str) -> None:
        for _ in range(100):
            last = [m.status for _, _, m in self.published
                    if isinstance(m, order_event_pb2.OrderEvent) and m.client_order_id == coid]
            if last and last[-1] in orders.TERMINAL:
                return
            await self.send()
            await asyncio.sleep(0.02)
        raise AssertionError(f"{coid} never settled")

    def errors(self, kind: str) -> float:
        return exported(self.registry, "meridian_execution_exchange_errors_total", kind=kind)


def approved(signal: str, qty: str = "0.01", limit: str = "") -> Routed:
    coid = ids.client_order_id(signal)
    kind = order_approved_pb2.ORDER_TYPE_LIMIT if limit else order_approved_pb2.ORDER_TYPE_MARKET
    return topics.ORDER_APPROVED, "bybit-linear:BTCUSDT", order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=coid, event_time_ms=START_MS, producer="test"),
        client_order_id=coid, signal_id=signal, exchange="bybit-linear", symbol="BTCUSDT",
        side=common_pb2.SIDE_BUY, order_type=kind, quantity=qty, limit_price=limit,
        strategy="test")


async def test_live_fills_and_transitions_with_a_rate_limit_and_unanswered_submits(
        exchange: FakeExchange) -> None:
    d = Live(exchange)
    try:
        exchange.rate_limit(1)  # the first call (loading the markets) is refused: retried
        await d.send()
        assert d.errors("retryable") == 1
        exchange.reject_orders(10016, "Internal server error.", n=2)  # no answer, twice
        order = approved("m-1", qty="0.013")
        await d.send(order)
        await d.until_settled(order[2].client_order_id)  # type: ignore[attr-defined]
        events, sides, fees = _published(d.published)
        assert events["unknown"] == 1
        assert events["filled"] == 1
        assert _transitions(d.registry) == {s: events[s] for s in STATES}
        assert exported(d.registry, "meridian_execution_fills_total", side="buy") == sides["buy"]
        assert fees > 0
        assert exported(d.registry, "meridian_execution_fees_quote_total") == pytest.approx(
            float(fees), rel=1e-12)
        assert d.errors("retryable") == 3  # the rate limit and the two unanswered submits
        assert d.errors("fatal") == 0
        assert exported(d.registry, "meridian_execution_open_orders") == 0
        assert exported(d.registry, "meridian_execution_reconciliation_failures_total") == 0
    finally:
        await d.handler.stop()


async def test_refused_credentials_count_as_fatal(exchange: FakeExchange) -> None:
    d = Live(exchange, api_secret="wrong-secret-value-123")
    try:
        await d.send(approved("m-auth"))
        assert "credentials" in (d.handler.halted or "")
        assert d.errors("fatal") == 1
        assert d.errors("retryable") == 0
        text = "".join(f"{m.name}{m.samples}" for m in d.registry.collect())
        assert "wrong-secret-value-123" not in text
        assert TEST_API_KEY not in text
    finally:
        await d.handler.stop()


async def test_each_reconciliation_that_finds_a_foreign_order_counts(
        exchange: FakeExchange) -> None:
    manual = ccxt.bybit({"apiKey": TEST_API_KEY, "secret": TEST_API_SECRET,
                         "options": {"defaultType": "swap", "fetchMarkets": {"types": ["linear"]},
                                     "adjustForTimeDifference": True}})
    reroute_urls(manual, exchange.base_url)
    try:
        await manual.load_time_difference()
        await manual.load_markets()
        await manual.create_order("BTC/USDT:USDT", "market", "buy", 0.002)
    finally:
        await manual.close()
    d = Live(exchange)
    try:
        await d.send()
        assert d.handler.halted
        assert exported(d.registry, "meridian_execution_reconciliation_failures_total") == 1
        d.handler._reconciled_at = None  # the next periodic reconciliation: still foreign
        await d.send()
        assert exported(d.registry, "meridian_execution_reconciliation_failures_total") == 2
    finally:
        await d.handler.stop()


async def test_a_restore_sets_the_open_orders_and_counts_nothing(exchange: FakeExchange) -> None:
    first = Live(exchange)
    resting = approved("m-rest", limit="1000")  # far below the 2021 price: rests
    try:
        await first.send(resting)
    finally:
        await first.handler.stop()
    assert exported(first.registry, "meridian_execution_open_orders") == 1
    second = Live(exchange)
    try:
        second.handler.replaying = True  # type: ignore[attr-defined]
        for topic, key, m in [resting, *first.published]:
            if topic in second.handler.restore_from:
                second.handler.restore(Inbound(topic, key, m))
        second.handler.restored()
        second.handler.replaying = False  # type: ignore[attr-defined]
        assert exported(second.registry, "meridian_execution_open_orders") == 1
        assert set(_transitions(second.registry).values()) == {0}
    finally:
        await second.handler.stop()
