"""Look-ahead guard: no feature at or before time t may depend on any candle after t.

Two runs over the same real candles of two symbols, interleaved as ingest publishes them; in the
second, every candle after t is changed (prices scaled, volume changed, a candle dropped). Every
features message for a candle that closed at or before t must be identical byte for byte.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian.v1 import candle_pb2
from meridian_common import topics
from meridian_common.marketdata import CsvCandleSource, RawCandle, default_data_dir, make_candle
from meridian_common.testing import features_by_candle, feed
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings

N = 600
HOUR = 3_600_000


def _rows(symbol: str) -> list[RawCandle]:
    out = []
    for raw in CsvCandleSource(default_data_dir(), symbol, "1h").rows(1_609_459_200_000):
        out.append(raw)
        if len(out) == N:
            break
    return out


def _mutated(raw: RawCandle) -> RawCandle:
    def scale(x: str) -> str:
        return str(Decimal(x) * Decimal("1.37"))

    return RawCandle(raw.open_time_ms, scale(raw.open), scale(raw.high), scale(raw.low),
                     scale(raw.close), str(Decimal(raw.volume) * 3 + 1))


def _stream(cut_ms: int | None) -> list[candle_pb2.Candle]:
    merged = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for i, raw in enumerate(_rows(symbol)):
            if cut_ms is not None and raw.open_time_ms + 3_600_000 > cut_ms:
                if i % 50 == 0:
                    continue  # the future may also lose candles
                raw = _mutated(raw)
            merged.append(make_candle("binance", symbol, "1h", raw, "ingest"))
    return sorted(merged, key=lambda c: (c.close_time_ms, c.symbol))


def _features(stream: list[candle_pb2.Candle]) -> dict[tuple[str, int], bytes]:
    return features_by_candle(feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE, stream))


@pytest.mark.parametrize("cut_index", [60, 333, 599])
def test_no_feature_at_or_before_t_changes_when_the_future_changes(cut_index: int) -> None:
    base_stream = _stream(None)
    cut_ms = base_stream[cut_index].close_time_ms
    base = _features(base_stream)
    changed = _features(_stream(cut_ms))
    past = {k: v for k, v in base.items() if k[1] + HOUR <= cut_ms}  # closed by t
    assert past, "the cut must leave some history"
    assert {k: changed[k] for k in past} == past
    future = [k for k in base if k[1] + HOUR > cut_ms]
    assert any(base[k] != changed.get(k) for k in future), "the mutation must be visible later"
