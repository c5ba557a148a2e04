"""Real BTC features.v1 messages for the signals tests, made by the features service's handler
from the shared candles (the same rows the service would publish)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import cache

import pytest

from meridian.v1 import features_pb2
from meridian_common import testing, topics
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings


@cache
def _btc_features(hours: int) -> tuple[features_pb2.Features, ...]:
    rows = itertools.islice(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(), hours)
    candles = [make_candle("binance", "BTCUSDT", "1h", raw, "ingest") for raw in rows]
    out = testing.feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE, candles)
    return tuple(m for _, _, m in out)  # type: ignore[misc]


@pytest.fixture(scope="session")
def real_features() -> Callable[[int], list[features_pb2.Features]]:
    """hours -> the first `hours` BTCUSDT rows (fresh copies: tests may mutate them)."""

    def make(hours: int) -> list[features_pb2.Features]:
        copies = []
        for m in _btc_features(hours):
            c = features_pb2.Features()
            c.CopyFrom(m)
            copies.append(c)
        return copies
    return make
