"""Features metrics on real candles: ready rows and warm-up rows per symbol, each symbol's series
started at 0 when first seen, nothing counted while the host replays inputs to rebuild state."""

from __future__ import annotations

import itertools

from prometheus_client import CollectorRegistry

from meridian.v1 import candle_pb2, features_pb2
from meridian_common import testing, topics
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings

Y2021 = 1_609_459_200_000  # 2021-01-01
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def candles(hours: int) -> list[candle_pb2.Candle]:
    """BTC and ETH hourly candles from 2021-01-01, interleaved in time as ingest publishes."""
    out = []
    for symbol in SYMBOLS:
        rows = itertools.islice(
            CsvCandleSource(default_data_dir(), symbol, "1h").rows(start_ms=Y2021), hours)
        out += [make_candle("binance", symbol, "1h", raw, "ingest") for raw in rows]
    return sorted(out, key=lambda c: (c.open_time_ms, c.symbol))


def counts(registry: CollectorRegistry, symbol: str) -> tuple[float | None, float | None]:
    labels = {"symbol": symbol}
    return (registry.get_sample_value("meridian_features_rows_total", labels),
            registry.get_sample_value("meridian_features_warmup_rows_total", labels))


def bound() -> tuple[FeaturesHandler, CollectorRegistry]:
    handler = FeaturesHandler(FeaturesSettings())
    registry = CollectorRegistry()
    handler.bind_metrics(registry)
    return handler, registry


def test_rows_and_warm_up_rows_per_symbol_equal_what_was_emitted() -> None:
    handler, registry = bound()
    rows = [m for t, _, m in testing.feed(handler, topics.CANDLE, candles(400))
            if t == topics.FEATURES]
    assert len(rows) == 800
    for symbol in SYMBOLS:
        mine: list[features_pb2.Features] = [r for r in rows if r.symbol == symbol]
        first_ready = next(i for i, r in enumerate(mine) if r.ready)
        assert 0 < first_ready < len(mine)
        assert all(r.ready for r in mine[first_ready:])  # warm-up is a prefix
        assert counts(registry, symbol) == (len(mine) - first_ready, first_ready)


def test_a_symbol_starts_at_zero_when_first_seen() -> None:
    """ETH's first candle waits for BTC's of the same hour (the cross-asset join): no row yet,
    but both of ETH's series exist, at 0."""
    handler, registry = bound()
    eth = next(c for c in candles(1) if c.symbol == "ETHUSDT")
    assert testing.feed(handler, topics.CANDLE, [eth]) == []
    assert counts(registry, "ETHUSDT") == (0.0, 0.0)
    assert counts(registry, "BTCUSDT") == (None, None)  # not seen, not configured here


def test_nothing_is_counted_while_replaying() -> None:
    """The host replays the committed candles to rebuild indicator state: those rows were
    counted before the restart; only the rows after the replay count."""
    stream = candles(400)
    cut = 500
    handler, registry = bound()
    handler.replaying = True  # set by the host while it rebuilds
    testing.feed(handler, topics.CANDLE, stream[:cut])
    assert counts(registry, "BTCUSDT") == (0.0, 0.0)
    handler.replaying = False
    live = [m for t, _, m in testing.feed(handler, topics.CANDLE, stream[cut:])
            if t == topics.FEATURES]
    for symbol in SYMBOLS:
        mine = [r for r in live if r.symbol == symbol]  # type: ignore[attr-defined]
        assert mine
        assert all(r.ready for r in mine)  # warmed up during the replay
        assert counts(registry, symbol) == (len(mine), 0.0)
