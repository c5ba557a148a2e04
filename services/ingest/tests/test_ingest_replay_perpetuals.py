"""Replay of spot markets with perpetual copies (MERIDIAN_INGEST_REPLAY_PERPETUALS): over real
CSV candles and funding settlements, the perpetual key carries the spot key's OHLCV, only the
perpetual gets funding (each settlement before the candle that closes at it, a funding
Watermark after each of its candles), the order is (open time, key) and the same every run; the
settings refuse the combinations where a copy would mean something else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meridian.v1 import candle_pb2, common_pb2, funding_pb2
from meridian_common import codec, config, topics
from meridian_common.marketdata import CsvFundingSource, RawCandle, default_data_dir
from meridian_ingest import commands, sources
from meridian_ingest.settings import IngestSettings

HOUR = 3_600_000
SPOT, PERP = "binance:BTCUSDT", "binance-linear:BTCUSDT"
START = int(datetime(2022, 3, 1, tzinfo=UTC).timestamp() * 1000)
END = START + 24 * HOUR
Item = candle_pb2.Candle | sources.Routed


def _stream(**overrides: str) -> list[Item]:
    common = config.load(config.CommonSettings, environ={})
    settings = config.load(IngestSettings, environ={}, symbols="BTCUSDT",
                           replay_perpetuals="BTCUSDT", start="2022-03-01", end="2022-03-02",
                           **overrides)
    return list(commands.candle_stream(common, settings))


def _key(item: Item) -> str:
    if isinstance(item, candle_pb2.Candle):
        return topics.market_key(item.exchange, item.symbol)
    return item.key


def _candles(stream: list[Item], key: str) -> list[candle_pb2.Candle]:
    return [c for c in stream if isinstance(c, candle_pb2.Candle) and _key(c) == key]


def _settlements(stream: list[Item]) -> list[sources.Routed]:
    return [r for r in stream if isinstance(r, sources.Routed)
            and isinstance(r.message, funding_pb2.FundingRate)]


def test_both_keys_carry_the_same_stored_candles() -> None:
    stream = _stream()
    spot, perp = _candles(stream, SPOT), _candles(stream, PERP)
    assert len(spot) == 24  # no source gap that day
    ohlcv = [(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume) for c in spot]
    assert [(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume) for c in perp] == ohlcv
    assert ohlcv[0][0] == START
    assert spot[-1].close_time_ms == END
    assert {c.exchange for c in perp} == {"binance-linear"}
    assert {c.meta.id for c in spot}.isdisjoint(c.meta.id for c in perp)
    for c in spot + perp:
        codec.validate(c)


def test_funding_goes_to_the_perpetual_key_only_and_matches_the_file() -> None:
    stream = _stream()
    funding = [r for r in stream if isinstance(r, sources.Routed) and r.topic == topics.FUNDING]
    assert {r.key for r in funding} == {PERP}
    rates = [(r.message.funding_time_ms, r.message.rate, r.message.exchange)  # type: ignore[attr-defined]
             for r in _settlements(stream)]
    # from a day before the start (the last rate settled before it) to the last close
    expected = list(CsvFundingSource(default_data_dir(), "BTCUSDT").rows(START - 24 * HOUR, END))
    assert [(t, rate) for t, rate, _ in rates] == expected
    assert len(expected) == 7
    assert expected[-1][0] == END
    assert {venue for *_, venue in rates} == {"binance-linear"}
    watermarks = [r.message.event_time_ms for r in funding
                  if isinstance(r.message, common_pb2.Watermark)]
    assert watermarks == [c.close_time_ms for c in _candles(stream, PERP)]


def test_each_settlement_comes_before_the_candle_that_closes_at_it() -> None:
    stream = _stream()
    for i, item in enumerate(stream):
        if not isinstance(item, sources.Routed) or not isinstance(item.message,
                                                                   funding_pb2.FundingRate):
            continue
        t = item.message.funding_time_ms
        nxt = next(c for c in _candles(stream[i:], PERP))  # the perp candle it precedes
        earlier = _candles(stream[:i], PERP)
        assert nxt.close_time_ms >= t  # not after the candle that closes at (or after) it
        assert not earlier or earlier[-1].close_time_ms < t  # not before an earlier close
        if t > START:  # in the window: a settlement time is an hourly close
            assert nxt.close_time_ms == t


def test_order_is_open_time_then_key_and_the_same_every_run() -> None:
    stream = _stream()
    heads = stream[:2]
    assert [(h.topic, h.key, h.message.event_time_ms) for h in heads] == [  # type: ignore[union-attr]
        (topics.CANDLE, SPOT, START), (topics.CANDLE, PERP, START)]
    candles = [c for c in stream if isinstance(c, candle_pb2.Candle)]
    order = [(c.open_time_ms, _key(c)) for c in candles]
    assert order == sorted(order)
    assert len(set(order)) == 48
    assert order[:2] == [(START, PERP), (START, SPOT)]  # '-' sorts before ':'
    again = _stream()
    assert [codec.encode(m if isinstance(m, candle_pb2.Candle) else m.message) for m in again] \
        == [codec.encode(m if isinstance(m, candle_pb2.Candle) else m.message) for m in stream]


def test_funding_off_gives_the_copies_without_funding() -> None:
    stream = _stream(funding="false")
    assert len(_candles(stream, PERP)) == 24
    assert not any(isinstance(r, sources.Routed) and r.topic == topics.FUNDING for r in stream)


def test_a_single_venue_replay_keeps_its_order_by_symbol() -> None:
    """Without copies, the tie-break is the symbol, as before markets were keyed by venue."""
    rows = {s: [RawCandle(START + i * HOUR, "1", "1", "1", "1", "1") for i in range(2)]
            for s in ("XRPUSDT", "BTCUSDT", "ETHUSDT")}
    stream = sources.replay_stream("1h", {sources.Market("binance", s): r
                                          for s, r in rows.items()})
    candles = [c for c in stream if isinstance(c, candle_pb2.Candle)]
    assert [c.symbol for c in candles] == ["BTCUSDT", "ETHUSDT", "XRPUSDT"] * 2


# --- settings --------------------------------------------------------------------------------


def test_replay_perpetuals_comma_separated() -> None:
    env = {"MERIDIAN_INGEST_SYMBOLS": "BTCUSDT,ETHUSDT",
           "MERIDIAN_INGEST_REPLAY_PERPETUALS": " ETHUSDT, ,BTCUSDT "}
    assert config.load(IngestSettings, environ=env).replay_perpetuals == ("ETHUSDT", "BTCUSDT")
    assert config.load(IngestSettings, environ={}).replay_perpetuals == ()


@pytest.mark.parametrize(("env", "says"), [
    ({"MERIDIAN_INGEST_SYMBOLS": "BTCUSDT", "MERIDIAN_INGEST_REPLAY_PERPETUALS": "ETHUSDT"},
     "ETHUSDT not in MERIDIAN_INGEST_SYMBOLS"),
    ({"MERIDIAN_INGEST_REPLAY_PERPETUALS": "BTCUSDT", "MERIDIAN_INGEST_MODE": "live"},
     "replays only"),
    ({"MERIDIAN_INGEST_REPLAY_PERPETUALS": "BTCUSDT", "MERIDIAN_INGEST_MARKET_TYPE": "linear"},
     "MERIDIAN_INGEST_MARKET_TYPE=spot"),
    ({"MERIDIAN_INGEST_REPLAY_PERPETUALS": "BTCUSDT", "MERIDIAN_INGEST_SOURCE": "kafka"},
     "not supported with MERIDIAN_INGEST_SOURCE=kafka"),
])
def test_replay_perpetuals_refused_where_a_copy_means_something_else(
        env: dict[str, str], says: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(IngestSettings, environ=env)
    assert "MERIDIAN_INGEST_REPLAY_PERPETUALS" in str(info.value)
    assert says in str(info.value)


def test_without_replay_perpetuals_nothing_is_refused() -> None:
    env = {"MERIDIAN_INGEST_MODE": "live", "MERIDIAN_INGEST_MARKET_TYPE": "linear",
           "MERIDIAN_INGEST_SOURCE": "kafka"}
    assert config.load(IngestSettings, environ=env).replay_perpetuals == ()
