"""Features handler: one Features per candle, warm-up, redelivery, values equal the indicators."""

from __future__ import annotations

import contextlib

import pytest

from meridian.v1 import candle_pb2, common_pb2, features_pb2
from meridian_common import codec, testing, topics
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.indicators import Ema, Rsi
from meridian_common.marketdata import CsvCandleSource, RawCandle, default_data_dir, make_candle
from meridian_features.handler import FEATURE_SET, FeaturesHandler
from meridian_features.settings import FeaturesSettings

HOUR = 3_600_000
_ROWS: dict[str, list[RawCandle]] = {}


def rows(symbol: str = "BTCUSDT", n: int = 150) -> list[RawCandle]:
    if symbol not in _ROWS:
        source = CsvCandleSource(default_data_dir(), symbol, "1h")
        out = []
        for raw in source.rows():
            out.append(raw)
            if len(out) == 400:
                break
        _ROWS[symbol] = out
    return _ROWS[symbol][:n]


def candles(symbol: str = "BTCUSDT", n: int = 150) -> list[candle_pb2.Candle]:
    return [make_candle("binance", symbol, "1h", r, "ingest") for r in rows(symbol, n)]


def feed(handler: FeaturesHandler, items: list[candle_pb2.Candle]) -> list[tuple[str, str, object]]:
    return list(testing.feed(handler, topics.CANDLE, items))


def test_one_features_per_candle_with_values_equal_to_indicators() -> None:
    settings = FeaturesSettings()
    handler = FeaturesHandler(settings)
    cs = candles()
    items = feed(handler, cs)
    assert len(items) == len(cs)
    fast, slow, rsi = Ema(settings.ema_fast), Ema(settings.ema_slow), Rsi(settings.rsi_period)
    for i, ((topic, key, msg), c) in enumerate(zip(items, cs, strict=True)):
        assert topic == topics.FEATURES
        assert key == "binance:BTCUSDT"
        assert isinstance(msg, features_pb2.Features)
        x = float(c.close)
        f, s, r = fast.update(x), slow.update(x), rsi.update(x)
        assert msg.meta.id == "feat:" + c.meta.id
        assert msg.meta.cause_id == c.meta.id
        assert msg.meta.event_time_ms == c.meta.event_time_ms
        assert msg.meta.producer == "features"
        assert (msg.exchange, msg.symbol, msg.timeframe) == ("binance", "BTCUSDT", "1h")
        assert msg.candle_open_time_ms == c.open_time_ms
        assert msg.close == c.close
        assert msg.feature_set == FEATURE_SET
        assert msg.feature_set_version == settings.version
        # ready exactly when the slowest indicator (the 50-candle EMA) has warmed up
        assert msg.ready == (i >= settings.ema_slow - 1)
        if msg.ready:
            assert {v.name: v.value for v in msg.values} == {"ema_fast": f, "ema_slow": s,
                                                            "rsi": r}
        else:
            assert list(msg.values) == []
        codec.validate(msg)  # what downstream consumers will accept


def test_readiness_follows_the_rsi_when_it_is_slowest() -> None:
    handler = FeaturesHandler(FeaturesSettings(ema_fast=2, ema_slow=3, rsi_period=10))
    ready = [m.ready for _, _, m in feed(handler, candles(n=15))]  # type: ignore[attr-defined]
    assert ready == [False] * 10 + [True] * 5  # RSI needs period + 1 closes


def test_redelivered_candle_is_skipped() -> None:
    handler = FeaturesHandler(FeaturesSettings())
    cs = candles(n=60)
    first = feed(handler, cs[:55])
    again = feed(handler, [cs[54], cs[40]])  # redelivery and an older candle
    assert again == []
    assert handler.skipped == 2
    rest = feed(handler, cs[55:])
    straight = feed(FeaturesHandler(FeaturesSettings()), cs)
    assert [codec.encode(m) for _, _, m in first + rest] == \
        [codec.encode(m) for _, _, m in straight]  # type: ignore[arg-type]


def test_revision_of_used_candle_is_skipped() -> None:
    handler = FeaturesHandler(FeaturesSettings())
    cs = candles(n=3)
    feed(handler, cs)
    revised = make_candle("binance", "BTCUSDT", "1h", rows(n=3)[2], "ingest", revision=1)
    assert feed(handler, [revised]) == []


def test_symbols_are_independent() -> None:
    settings = FeaturesSettings()
    btc, eth = candles("BTCUSDT", 80), candles("ETHUSDT", 80)
    mixed = [c for pair in zip(btc, eth, strict=True) for c in pair]
    out = feed(FeaturesHandler(settings), mixed)
    alone_btc = feed(FeaturesHandler(settings), btc)
    alone_eth = feed(FeaturesHandler(settings), eth)
    got_btc = [m for _, k, m in out if k == "binance:BTCUSDT"]
    got_eth = [m for _, k, m in out if k == "binance:ETHUSDT"]
    assert got_btc == [m for _, _, m in alone_btc]
    assert got_eth == [m for _, _, m in alone_eth]


def test_gap_is_counted_and_indicators_carry_across() -> None:
    handler = FeaturesHandler(FeaturesSettings(ema_fast=2, ema_slow=3, rsi_period=2))
    raws = rows(n=6)
    gapped = [make_candle("binance", "BTCUSDT", "1h", r, "ingest") for r in raws[:3]]
    later = raws[3]._replace(open_time_ms=raws[2].open_time_ms + 5 * HOUR)
    gapped.append(make_candle("binance", "BTCUSDT", "1h", later, "ingest"))
    out = feed(handler, gapped)
    assert len(out) == 4
    assert handler.state["binance:BTCUSDT"].gaps == 1
    ema = Ema(3)
    for c in gapped:
        value = ema.update(float(c.close))
    assert {v.name: v.value for v in out[-1][2].values}["ema_slow"] == value  # type: ignore[attr-defined]


def test_candle_with_bad_timeframe_does_not_crash() -> None:
    """The codec does not check Candle.timeframe; a candle with a timeframe that is not ccxt
    notation must be rejected as InvalidMessage (-> DLQ) or handled, not raise ValueError from
    `timeframe_ms` (which stops the host, and again after every restart)."""
    handler = FeaturesHandler(FeaturesSettings())
    cs = candles(n=2)
    bad = candle_pb2.Candle()
    bad.CopyFrom(cs[1])
    bad.timeframe = "1x"
    feed(handler, cs[:1])
    with contextlib.suppress(InvalidMessage):
        feed(handler, [bad])
    assert len(feed(handler, [candles(n=3)[2]])) == 1


def test_watermark_input_is_ignored() -> None:
    handler = FeaturesHandler(FeaturesSettings())
    out = Outbox("features")
    handler.handle(Inbound(topics.CANDLE, "binance:BTCUSDT",
                           common_pb2.Watermark(key="binance:BTCUSDT", event_time_ms=5)), out)
    assert out.items == []


def test_replay_is_bit_for_bit() -> None:
    cs = candles(n=120)
    a = [codec.encode(m) for _, _, m in feed(FeaturesHandler(FeaturesSettings()), cs)]  # type: ignore[arg-type]
    b = [codec.encode(m) for _, _, m in feed(FeaturesHandler(FeaturesSettings()), cs)]  # type: ignore[arg-type]
    assert a == b


@pytest.mark.parametrize(("fast", "slow"), [(50, 50), (60, 50)])
def test_fast_must_be_below_slow(fast: int, slow: int) -> None:
    with pytest.raises(ValueError, match="ema_fast"):
        FeaturesSettings(ema_fast=fast, ema_slow=slow)
