"""Ingest metrics: a replay of real candles counts every candle per symbol and sets the last
candle's close time; the exchange-error kinds follow the retry rules (exchange/retry.py)."""

from __future__ import annotations

import asyncio

import ccxt
import pytest
from prometheus_client import CollectorRegistry

from meridian.v1 import candle_pb2
from meridian_common import config
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.host import all_topic_configs
from meridian_common.metrics import PrometheusSensor
from meridian_ingest import commands
from meridian_ingest.exchange.retry import (
    Budget,
    ExchangeCallError,
    RetryPolicy,
    RetryStats,
    call,
)
from meridian_ingest.ingest_metrics import IngestMetrics
from meridian_ingest.replay import replay
from meridian_ingest.settings import IngestSettings

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_replay_counts_every_candle_per_symbol_and_its_last_close() -> None:
    """Ten days of real BTC and ETH candles (CSV), replayed onto the in-process bus."""
    common = config.load(config.CommonSettings, environ={})
    settings = config.load(IngestSettings, environ={}, source="csv", symbols=",".join(SYMBOLS),
                           start="2021-01-10", end="2021-01-20")
    stream = list(commands.candle_stream(common, settings))
    candles = [c for c in stream if isinstance(c, candle_pb2.Candle)]
    bus = InProcessBus()
    registry = PrometheusSensor("ingest").registry
    metrics = IngestMetrics(registry, timeframe="1h", symbols=SYMBOLS, modes=("replay",))

    async def run() -> int:
        await bus.ensure_topics(all_topic_configs("", 3))
        return await replay(iter(stream), bus.producer(), "", metrics=metrics)

    assert asyncio.run(run()) == len(candles)
    assert sample(registry, "meridian_ingest_timeframe_seconds") == 3600
    for symbol in SYMBOLS:
        mine = [c for c in candles if c.symbol == symbol]
        assert len(mine) == 10 * 24  # no source gap in that window
        assert sample(registry, "meridian_ingest_candles_total", symbol=symbol,
                      mode="replay") == len(mine)
        assert sample(registry, "meridian_ingest_last_candle_seconds", symbol=symbol,
                      mode="replay") == mine[-1].close_time_ms / 1000
        assert sample(registry, "meridian_ingest_gaps_detected_total", symbol=symbol) == 0
    assert sample(registry, "meridian_ingest_candles_total", symbol="BTCUSDT",
                  mode="live") is None  # only the running mode's series


def test_known_values_start_at_zero_and_the_last_candle_only_moves_forward() -> None:
    metrics = IngestMetrics(symbols=("BTCUSDT",), modes=("live",))
    registry = metrics.registry
    for kind in ("retryable", "fatal"):
        assert sample(registry, "meridian_ingest_exchange_errors_total", kind=kind) == 0
    assert sample(registry, "meridian_ingest_candles_total", symbol="BTCUSDT", mode="live") == 0
    assert sample(registry, "meridian_ingest_gaps_repaired_total", symbol="BTCUSDT") == 0
    # absent, not 0 (1970): a staleness rule must not fire before the first candle
    assert sample(registry, "meridian_ingest_last_candle_seconds", symbol="BTCUSDT",
                  mode="live") is None
    metrics.candle("BTCUSDT", "live", 7_200_000)
    metrics.candle("BTCUSDT", "live", 3_600_000)  # a corrected older candle republished
    assert sample(registry, "meridian_ingest_last_candle_seconds", symbol="BTCUSDT",
                  mode="live") == 7200
    assert sample(registry, "meridian_ingest_candles_total", symbol="BTCUSDT", mode="live") == 2


def _failing(errors: list[Exception]):  # type: ignore[no-untyped-def]
    """An exchange call that raises each error in turn, then answers."""
    async def fn() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"
    return fn


@pytest.mark.parametrize(("errors", "retries", "want"), [
    ([ccxt.RateLimitExceeded("x"), ccxt.RequestTimeout("x")], 8,
     {"retryable": 2, "fatal": 0}),  # retried, then answered
    ([ccxt.BadRequest("x")], 8, {"retryable": 0, "fatal": 1}),  # not retryable
    ([ccxt.ExchangeNotAvailable("x")] * 3, 2, {"retryable": 2, "fatal": 1}),  # exhausted
])
def test_exchange_errors_are_counted_by_kind(errors: list[Exception], retries: int,
                                             want: dict[str, int]) -> None:
    metrics = IngestMetrics()
    stats = RetryStats(metrics.exchange_error)
    policy = RetryPolicy(retries=retries, base_s=0.0, max_s=0.0)

    async def run() -> None:
        await call("fetch", _failing(list(errors)), policy, Budget(0), stats)

    if want["fatal"]:
        with pytest.raises(ExchangeCallError):
            asyncio.run(run())
    else:
        asyncio.run(run())
    for kind, n in want.items():
        assert sample(metrics.registry, "meridian_ingest_exchange_errors_total", kind=kind) == n
