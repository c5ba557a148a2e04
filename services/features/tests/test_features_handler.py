"""Features handler: one trend@2.0.0 row per candle, equal to the library's streaming form; the
cross-asset and funding joins wait for their input and never depend on arrival order."""

from __future__ import annotations

import contextlib
import logging
import math
import time

import numpy as np
import pytest

from meridian.v1 import candle_pb2, common_pb2, features_pb2
from meridian_common import codec, testing, topics
from meridian_common.features import TREND_V2, FeatureState, aligned_returns, funding_asof
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.marketdata import (
    CsvCandleSource,
    CsvFundingSource,
    RawCandle,
    default_data_dir,
    make_candle,
    make_funding,
)
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings

HOUR = 3_600_000
_ROWS: dict[tuple[str, int], list[RawCandle]] = {}
Y2021, Y2023 = 1_609_459_200_000, 1_675_209_600_000  # 2021-01-01, 2023-02-01 (funding data)
BTC, ETH = "binance:BTCUSDT", "binance:ETHUSDT"
COL = {c: i for i, c in enumerate(TREND_V2.columns)}


def rows(symbol: str = "BTCUSDT", n: int = 300, start_ms: int = Y2021) -> list[RawCandle]:
    if (symbol, start_ms) not in _ROWS:
        out = []
        for raw in CsvCandleSource(default_data_dir(), symbol, "1h").rows(start_ms=start_ms):
            out.append(raw)
            if len(out) == 600:
                break
        _ROWS[(symbol, start_ms)] = out
    return _ROWS[(symbol, start_ms)][:n]


def candles(symbol: str = "BTCUSDT", n: int = 300, exchange: str = "binance",
            start_ms: int = Y2021) -> list[candle_pb2.Candle]:
    return [make_candle(exchange, symbol, "1h", r, "ingest") for r in rows(symbol, n, start_ms)]


def feed(handler: FeaturesHandler, items: list) -> list[tuple[str, str, object]]:
    return list(testing.feed(handler, topics.CANDLE, items))


def values(msg: object) -> list[float]:
    return [v.value for v in msg.values]  # type: ignore[attr-defined]


def by_key(items: list[tuple[str, str, object]], key: str) -> list[bytes]:
    return [codec.encode(m)[0] for _, k, m in items if k == key]  # type: ignore[arg-type]


def same(a: list[float], b: list[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def test_rows_equal_the_streaming_form_and_ready_when_warm() -> None:
    cs = candles()
    items = feed(FeaturesHandler(FeaturesSettings()), cs)
    assert len(items) == len(cs)
    state = FeatureState()
    closes = [float(c.close) for c in cs]
    seen_ready = False
    for i, ((topic, key, msg), c) in enumerate(zip(items, cs, strict=True)):
        assert (topic, key) == (topics.FEATURES, BTC)
        assert isinstance(msg, features_pb2.Features)
        own = math.log(closes[i] / closes[i - 1]) if i else math.nan  # BTC is its own reference
        expected = state.update(c.open_time_ms, float(c.high), float(c.low), closes[i],
                                float(c.volume), btc_ret_1=own)
        assert [v.name for v in msg.values] == list(TREND_V2.columns)
        assert same(values(msg), expected)
        assert values(msg)[COL["btc_ret_1"]] == values(msg)[COL["ret_1"]] or i == 0
        assert msg.meta.id == "feat:" + c.meta.id
        assert msg.meta.cause_id == c.meta.id
        assert msg.meta.event_time_ms == c.meta.event_time_ms
        assert (msg.feature_set, msg.feature_set_version) == ("trend", "2.0.0")
        assert (msg.exchange, msg.symbol, msg.timeframe) == ("binance", "BTCUSDT", "1h")
        assert (msg.candle_open_time_ms, msg.close) == (c.open_time_ms, c.close)
        technical = [x for col, x in zip(TREND_V2.columns, expected, strict=True)
                     if col not in TREND_V2.context]
        assert msg.ready == (not any(math.isnan(x) for x in technical))
        assert msg.ready or not seen_ready  # once warm, stays warm on continuous data
        seen_ready |= msg.ready
        codec.validate(msg)
    assert seen_ready
    assert math.isnan(values(items[-1][2])[COL["funding_last"]])  # funding join is off


def test_redelivered_and_revised_candles_are_skipped() -> None:
    handler = FeaturesHandler(FeaturesSettings())
    cs = candles(n=60)
    first = feed(handler, cs[:55])
    revised = make_candle("binance", "BTCUSDT", "1h", rows(n=60)[54], "ingest", revision=1)
    assert feed(handler, [cs[54], cs[40], revised]) == []
    assert handler.skipped == 3
    rest = feed(handler, cs[55:])
    straight = feed(FeaturesHandler(FeaturesSettings()), cs)
    assert by_key(first + rest, BTC) == by_key(straight, BTC)


def test_other_symbols_wait_for_the_reference_whatever_the_arrival_order() -> None:
    btc, eth = candles("BTCUSDT"), candles("ETHUSDT")
    interleaved = feed(FeaturesHandler(FeaturesSettings()),
                       [c for pair in zip(btc, eth, strict=True) for c in pair])
    handler = FeaturesHandler(FeaturesSettings())
    assert feed(handler, eth) == []  # every ETH row waits for BTC
    assert handler.waiting == len(eth)
    assert handler.retained() == {(topics.CANDLE, 0): 0}
    late = feed(handler, btc)
    assert handler.waiting == 0
    assert handler.retained() == {}
    for key in (BTC, ETH):
        assert by_key(late, key) == by_key(interleaved, key)
    # ETH's btc_ret_1 is BTC's ret_1 at the same open time, as the batch join computes it
    eth_rows = [values(m) for _, k, m in interleaved if k == ETH]
    btc_rows = [values(m) for _, k, m in interleaved if k == BTC]
    expected = aligned_returns([c.open_time_ms for c in eth], [c.open_time_ms for c in btc],
                               [float(c.close) for c in btc])
    got = [r[COL["btc_ret_1"]] for r in eth_rows]
    np.testing.assert_array_equal(got, expected)
    assert got[1:] == [r[COL["ret_1"]] for r in btc_rows][1:]


def test_a_reference_gap_gives_nan_once_the_reference_moves_past_it() -> None:
    btc, eth = candles("BTCUSDT", 10), candles("ETHUSDT", 10)
    handler = FeaturesHandler(FeaturesSettings())
    out = feed(handler, btc[:5] + eth[:7])
    assert [m.candle_open_time_ms for _, k, m in out if k == ETH] == \
        [c.open_time_ms for c in eth[:5]]  # type: ignore[attr-defined]
    out = feed(handler, btc[6:8])  # BTC's candle 5 never comes
    eth_rows = [m for _, k, m in out if k == ETH]
    assert [m.candle_open_time_ms for m in eth_rows] == [c.open_time_ms for c in eth[5:7]]  # type: ignore[attr-defined]
    assert math.isnan(values(eth_rows[0])[COL["btc_ret_1"]])
    assert values(eth_rows[1])[COL["btc_ret_1"]] == \
        math.log(float(btc[6].close) / float(btc[4].close))  # carried across the gap


def test_a_reference_watermark_releases_waiting_rows() -> None:
    handler = FeaturesHandler(FeaturesSettings())
    eth = candles("ETHUSDT", 5)
    feed(handler, eth)
    out = Outbox("features")
    wm = common_pb2.Watermark(key=BTC, event_time_ms=eth[2].close_time_ms)  # closes up to it
    handler.handle(Inbound(topics.CANDLE, BTC, wm, (topics.CANDLE, 0, 99)), out)
    assert [m.candle_open_time_ms for _, _, m in out.items] == \
        [c.open_time_ms for c in eth[:3]]  # type: ignore[attr-defined]
    assert all(math.isnan(values(m)[COL["btc_ret_1"]]) for _, _, m in out.items)
    other = common_pb2.Watermark(key=ETH, event_time_ms=eth[4].open_time_ms)
    handler.handle(Inbound(topics.CANDLE, ETH, other, (topics.CANDLE, 0, 100)), out)
    assert len(out.items) == 3  # a non-reference watermark changes nothing


def test_without_cross_asset_nothing_waits() -> None:
    eth = candles("ETHUSDT", 30)
    out = feed(FeaturesHandler(FeaturesSettings(cross_asset=False)), eth)
    assert len(out) == len(eth)
    assert all(math.isnan(values(m)[COL["btc_ret_1"]]) for _, _, m in out)


def test_waiting_too_long_is_logged_with_the_missing_input(
        caplog: pytest.LogCaptureFixture) -> None:
    handler = FeaturesHandler(FeaturesSettings(hold_warning_s=0.05))
    eth = candles("ETHUSDT", 25)
    with caplog.at_level(logging.WARNING, logger="meridian_features.handler"):
        feed(handler, eth[:20])
        assert not caplog.records  # waiting, but not for long yet
        time.sleep(0.06)
        feed(handler, eth[20:])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, not per candle
    assert "binance:BTCUSDT" in " ".join(warnings[0].missing)  # type: ignore[attr-defined]
    assert warnings[0].waiting == 21  # type: ignore[attr-defined]


def _funding(symbol: str, start: int, end: int) -> list[tuple[int, str]]:
    return list(CsvFundingSource(default_data_dir(), symbol).rows(start - 24 * HOUR, end))


def test_funding_rows_wait_for_funding_progress_and_equal_the_batch_join() -> None:
    eth = candles("ETHUSDT", 100, exchange="binance-linear", start_ms=Y2023)
    btc = candles("BTCUSDT", 100, exchange="binance-linear", start_ms=Y2023)
    settlements = [make_funding("binance-linear", "ETHUSDT", t, r, "ingest")
                   for t, r in _funding("ETHUSDT", eth[0].open_time_ms, eth[-1].close_time_ms)]
    handler = FeaturesHandler(FeaturesSettings(funding=True))
    out = feed(handler, btc + eth)
    assert not [m for _, k, m in out if k == "binance-linear:ETHUSDT"]  # no funding yet
    out += list(testing.feed(handler, topics.FUNDING, settlements))
    got = [m for _, k, m in out if k == "binance-linear:ETHUSDT"]
    # released up to the last settlement: rows closing after it wait for a watermark
    last = settlements[-1].funding_time_ms
    assert [m.candle_open_time_ms for m in got] == \
        [c.open_time_ms for c in eth if c.close_time_ms <= last]  # type: ignore[attr-defined]
    wm = common_pb2.Watermark(key="binance-linear:ETHUSDT", event_time_ms=eth[-1].close_time_ms)
    box = Outbox("features")
    handler.handle(Inbound(topics.FUNDING, wm.key, wm, (topics.FUNDING, 0, 999)), box)
    got += [m for _, _, m in box.items]
    assert [m.candle_open_time_ms for m in got] == [c.open_time_ms for c in eth]  # type: ignore[attr-defined]
    expected = funding_asof([c.close_time_ms for c in eth],
                            [s.funding_time_ms for s in settlements],
                            [float(s.rate) for s in settlements])
    np.testing.assert_array_equal([values(m)[COL["funding_last"]] for m in got], expected)
    assert not np.isnan(expected).all()


def test_a_funding_rate_that_is_not_a_number_is_invalid() -> None:
    handler = FeaturesHandler(FeaturesSettings(funding=True))
    bad = make_funding("bybit-linear", "ETHUSDT", 1_609_459_200_000, "abc", "ingest")
    with pytest.raises(InvalidMessage, match="abc"):
        testing.feed(handler, topics.FUNDING, [bad])


def test_gap_is_counted_and_indicators_carry_across() -> None:
    handler = FeaturesHandler(FeaturesSettings())
    raws = rows(n=6)
    later = raws[3]._replace(open_time_ms=raws[2].open_time_ms + 5 * HOUR)
    gapped = [make_candle("binance", "BTCUSDT", "1h", r, "ingest") for r in raws[:3]]
    gapped.append(make_candle("binance", "BTCUSDT", "1h", later, "ingest"))
    out = feed(handler, gapped)
    assert len(out) == 4
    assert handler.symbols[BTC].gaps == 1
    # ret_1 spans the gap: horizons count candles
    assert values(out[-1][2])[COL["ret_1"]] == math.log(float(later.close) / float(raws[2].close))


def test_candle_with_bad_timeframe_does_not_crash() -> None:
    """A timeframe that is not ccxt notation is InvalidMessage (-> DLQ), never a ValueError that
    stops the host (and again after every restart)."""
    handler = FeaturesHandler(FeaturesSettings())
    cs = candles(n=3)
    bad = candle_pb2.Candle()
    bad.CopyFrom(cs[1])
    bad.timeframe = "1x"
    feed(handler, cs[:1])
    with contextlib.suppress(InvalidMessage):
        feed(handler, [bad])
    assert len(feed(handler, [cs[2]])) == 1


def test_replay_is_bit_for_bit() -> None:
    cs = candles("BTCUSDT", 120) + candles("ETHUSDT", 120)
    a = feed(FeaturesHandler(FeaturesSettings()), cs)
    b = feed(FeaturesHandler(FeaturesSettings()), cs)
    assert by_key(a, ETH) == by_key(b, ETH)
    assert by_key(a, BTC) == by_key(b, BTC)


@pytest.mark.parametrize("name", ["trend@9.9.9", "nope@1.0.0"])
def test_unknown_feature_set_is_refused_naming_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"known: trend@2\.0\.0"):
        FeaturesSettings(feature_set=name)
