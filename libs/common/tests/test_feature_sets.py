"""Feature sets: the streaming form (per candle) and the batch form (over arrays) give the same
rows on all four real hourly series, including the 4h confirmation resampled in-stream, funding
as of each close and BTC's return as a cross-asset input; and one build_matrix turns either the
batch rows or the features.v1 messages into the same training matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meridian.v1 import common_pb2, features_pb2
from meridian_common.features import (
    TREND_V2,
    FeatureState,
    aligned_returns,
    build_matrix,
    feature_matrix,
    feature_set,
    funding_asof,
    rows_from_history,
    rows_from_messages,
)
from meridian_common.features.batch import h4_completion
from meridian_common.marketdata import CsvCandleSource, CsvFundingSource, default_data_dir

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
HOUR = 3_600_000
Series = dict[str, np.ndarray]


def _load(symbol: str) -> Series:
    rows = list(CsvCandleSource(default_data_dir(), symbol, "1h").rows())
    cols = list(zip(*[(r.open_time_ms, float(r.high), float(r.low), float(r.close),
                       float(r.volume)) for r in rows], strict=True))
    return {"t": np.array(cols[0], dtype=np.int64), "h": np.array(cols[1]),
            "l": np.array(cols[2]), "c": np.array(cols[3]), "v": np.array(cols[4])}


def _funding(symbol: str) -> tuple[np.ndarray, np.ndarray]:
    source = CsvFundingSource(default_data_dir(), symbol)
    rows = list(source.rows()) if source.exists() else []
    return np.array([t for t, _ in rows], dtype=np.int64), np.array([float(x) for _, x in rows])


@pytest.fixture(scope="module")
def data() -> dict[str, Series]:
    return {s: _load(s) for s in SYMBOLS}


def _context(data: dict[str, Series], symbol: str) -> tuple[np.ndarray, np.ndarray]:
    s, btc = data[symbol], data["BTCUSDT"]
    funding = funding_asof(s["t"] + HOUR, *_funding(symbol))
    cross = aligned_returns(s["t"], btc["t"], btc["c"])
    return funding, cross


def _streamed(s: Series, funding: np.ndarray, cross: np.ndarray) -> np.ndarray:
    state = FeatureState()
    rows = [state.update(int(t), h, lo, c, v, funding_last=f, btc_ret_1=x)
            for t, h, lo, c, v, f, x in zip(s["t"].tolist(), s["h"].tolist(), s["l"].tolist(),
                                            s["c"].tolist(), s["v"].tolist(), funding.tolist(),
                                            cross.tolist(), strict=True)]
    return np.array(rows)


def _worst(a: np.ndarray, b: np.ndarray) -> float:
    both = ~np.isnan(a) & ~np.isnan(b)
    if not both.any():
        return 0.0
    return float(np.max(np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1e-9)))


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_streaming_and_batch_rows_are_identical(data: dict[str, Series], symbol: str) -> None:
    s = data[symbol]
    funding, cross = _context(data, symbol)
    batch = feature_matrix(s["t"], s["h"], s["l"], s["c"], s["v"], funding_last=funding,
                           btc_ret_1=cross)
    streamed = _streamed(s, funding, cross)
    assert batch.shape == streamed.shape == (s["t"].size, len(TREND_V2.columns))
    for j, column in enumerate(TREND_V2.columns):
        nan_b, nan_s = np.isnan(batch[:, j]), np.isnan(streamed[:, j])
        assert (nan_b == nan_s).all(), f"{column}: warm-up/missing positions differ"
        assert not nan_b.all() or column == "funding_last", f"{column}: never has a value"
        assert _worst(streamed[:, j], batch[:, j]) <= 1e-12, column


def test_the_same_build_matrix_serves_history_and_published_messages(
        data: dict[str, Series]) -> None:
    history_rows, messages = [], []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        s = data[symbol]
        funding, cross = _context(data, symbol)
        history_rows += rows_from_history(symbol, s["t"], feature_matrix(
            s["t"], s["h"], s["l"], s["c"], s["v"], funding_last=funding, btc_ret_1=cross))
        for t, row in zip(s["t"].tolist(), _streamed(s, funding, cross).tolist(), strict=True):
            messages.append(features_pb2.Features(
                meta=common_pb2.Meta(id=f"{symbol}:{t}"), symbol=symbol,
                feature_set=TREND_V2.name, feature_set_version=TREND_V2.version,
                candle_open_time_ms=t,
                values=[features_pb2.FeatureValue(name=n, value=x)
                        for n, x in zip(TREND_V2.columns, row, strict=True)]))
    from_history = build_matrix(history_rows, TREND_V2)
    from_topic = build_matrix(rows_from_messages(reversed(messages), TREND_V2), TREND_V2)
    assert from_history.keys == from_topic.keys
    assert np.array_equal(np.isnan(from_history.values), np.isnan(from_topic.values))
    assert _worst(from_topic.values, from_history.values) <= 1e-12


def test_4h_buckets_complete_at_their_last_hour_or_when_it_is_missing() -> None:
    t0 = 1_600_000_000_000 - 1_600_000_000_000 % (4 * HOUR)
    # bucket 0 complete (4 hours); bucket 1 misses its last hour; bucket 2 is still open
    opens = np.array([t0 + i * HOUR for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)], dtype=np.int64)
    close_rows, completes_at = h4_completion(opens, HOUR, 4 * HOUR)
    assert close_rows.tolist() == [3, 6]
    assert completes_at.tolist() == [3, 7]


def test_no_4h_value_before_a_bucket_has_closed(data: dict[str, Series]) -> None:
    s = data["BTCUSDT"]
    state = FeatureState()
    h4_col = TREND_V2.index("h4_rsi")
    first = None
    for i, (t, h, lo, c, v) in enumerate(zip(s["t"].tolist(), s["h"].tolist(), s["l"].tolist(),
                                             s["c"].tolist(), s["v"].tolist(), strict=True)):
        row = state.update(t, h, lo, c, v)
        if not math.isnan(row[h4_col]):
            first = i
            break
    assert first is not None
    # RSI(14) on 4h needs 15 completed buckets: at least 15 * 4 - 1 hourly candles
    assert first >= 15 * 4 - 1


def test_unknown_feature_set_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"trend@2\.0\.0"):
        feature_set("trend", "9.9.9")


def test_messages_with_other_columns_are_refused() -> None:
    bad = features_pb2.Features(meta=common_pb2.Meta(id="x"), symbol="BTCUSDT",
                                feature_set="trend", feature_set_version="2.0.0",
                                values=[features_pb2.FeatureValue(name="rsi", value=1.0)])
    with pytest.raises(ValueError, match="columns"):
        rows_from_messages([bad], TREND_V2)


@pytest.mark.parametrize("cut", [100, 5_000, 20_001])
def test_no_row_at_or_before_t_depends_on_later_candles(data: dict[str, Series],
                                                        cut: int) -> None:
    """Look-ahead guard for both forms: change every candle after row `cut` (prices scaled,
    volumes changed, every 7th candle dropped) and no row up to `cut` may change. The batch
    form is the one at risk (vectorized windows, the 4h bucket mapping); the streaming form
    must not change by a single bit."""
    s = data["ETHUSDT"]
    funding, cross = _context(data, "ETHUSDT")
    base = feature_matrix(s["t"], s["h"], s["l"], s["c"], s["v"], funding_last=funding,
                          btc_ret_1=cross)
    keep = np.ones(s["t"].size, dtype=bool)
    keep[cut + 1::7] = False
    scale = np.where(np.arange(s["t"].size) > cut, 1.37, 1.0)
    mutated = {"t": s["t"][keep], "h": (s["h"] * scale)[keep], "l": (s["l"] * scale)[keep],
               "c": (s["c"] * scale)[keep], "v": (s["v"] * np.where(scale > 1.0, 3.0, 1.0))[keep]}
    changed = feature_matrix(mutated["t"], mutated["h"], mutated["l"], mutated["c"],
                             mutated["v"], funding_last=funding[keep], btc_ret_1=cross[keep])
    np.testing.assert_array_equal(changed[:cut + 1], base[:cut + 1])
    later = ~np.isnan(base[cut + 2:cut + 50]) & ~np.isnan(changed[cut + 2:cut + 50])
    assert later.any()
    assert not np.array_equal(changed[cut + 2:cut + 50][later], base[cut + 2:cut + 50][later])
    streamed = _streamed({k: v for k, v in mutated.items()}, funding[keep], cross[keep])
    np.testing.assert_array_equal(streamed[:cut + 1], _streamed(s, funding, cross)[:cut + 1])
