"""The features service's messages, fed by an ingest replay of a perpetual venue (candles, start
watermarks, funding and funding watermarks; the two symbols with funding history), make the same
training matrix as the batch form over the same history: same keys, NaN in the same places,
values within 1e-12."""

from __future__ import annotations

import numpy as np

from meridian.v1 import candle_pb2
from meridian_common import config, testing, topics
from meridian_common.features import (
    TREND_V2,
    aligned_returns,
    build_matrix,
    feature_matrix,
    funding_asof,
    rows_from_history,
    rows_from_messages,
)
from meridian_common.marketdata import CsvFundingSource, default_data_dir
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings

SYMBOLS = ("ETHUSDT", "BTCUSDT")
START, END = "2023-01-10", "2023-04-10"  # the shared funding history covers 2023


def _batch(candles: list[candle_pb2.Candle]) -> list:
    by_symbol: dict[str, list[candle_pb2.Candle]] = {}
    for c in candles:
        by_symbol.setdefault(c.symbol, []).append(c)
    btc = by_symbol["BTCUSDT"]
    rows = []
    for symbol, cs in by_symbol.items():
        t = np.array([c.open_time_ms for c in cs], dtype=np.int64)
        funding = list(CsvFundingSource(default_data_dir(), symbol).rows())
        matrix = feature_matrix(
            t, [float(c.high) for c in cs], [float(c.low) for c in cs],
            [float(c.close) for c in cs], [float(c.volume) for c in cs],
            funding_last=funding_asof([c.close_time_ms for c in cs],
                                      np.array([f for f, _ in funding], dtype=np.int64),
                                      [float(r) for _, r in funding]),
            btc_ret_1=aligned_returns(t, [c.open_time_ms for c in btc],
                                      [float(c.close) for c in btc]))
        rows += rows_from_history(symbol, t, matrix)
    return rows


def test_streamed_messages_and_history_give_the_same_matrix() -> None:
    common = config.load(config.CommonSettings, environ={})
    ingest = config.load(IngestSettings, environ={}, symbols=",".join(SYMBOLS), start=START,
                         end=END, market_type="linear", funding=True)
    stream = list(commands.candle_stream(common, ingest))
    candles = [c for c in stream if isinstance(c, candle_pb2.Candle)]
    out = testing.feed(FeaturesHandler(FeaturesSettings(funding=True)), topics.CANDLE, stream)
    streamed = build_matrix(rows_from_messages([m for _, _, m in out], TREND_V2), TREND_V2)
    history = build_matrix(_batch(candles), TREND_V2)
    assert streamed.keys == history.keys
    assert len(streamed.keys) == len(candles)
    np.testing.assert_array_equal(np.isnan(streamed.values), np.isnan(history.values))
    np.testing.assert_allclose(streamed.values, history.values, rtol=1e-12, atol=0)
    funding_col = streamed.values[:, TREND_V2.index("funding_last")]
    assert not np.isnan(funding_col).all()
    cross_col = streamed.values[:, TREND_V2.index("btc_ret_1")]
    assert np.isfinite(cross_col).sum() > len(cross_col) * 0.99
