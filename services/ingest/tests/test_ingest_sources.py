"""Ingest: merged multi-symbol replay order, each candle keeps its symbol, settings parsing."""

from __future__ import annotations

import functools
import itertools
import time
from datetime import UTC, datetime

import pytest

from meridian.v1 import candle_pb2, common_pb2
from meridian_common import codec, config, topics
from meridian_common.bus import partition_for
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.host import all_topic_configs
from meridian_common.marketdata import RawCandle
from meridian_ingest import sources
from meridian_ingest.replay import replay
from meridian_ingest.settings import DEFAULT_SYMBOLS, IngestSettings, parse_time_ms

HOUR = 3_600_000
T0 = 1_600_000_000_000 - (1_600_000_000_000 % HOUR)


def raw(i: int, price: str) -> RawCandle:
    return RawCandle(T0 + i * HOUR, price, price, price, price, "1")


def test_merged_orders_by_open_time_then_symbol_and_keeps_symbols() -> None:
    per_symbol = {
        # prices encode the symbol, so a candle carrying the wrong symbol is visible
        "XRPUSDT": iter([raw(0, "0.3"), raw(1, "0.31"), raw(4, "0.34")]),
        "BTCUSDT": iter([raw(1, "30001"), raw(2, "30002"), raw(3, "30003")]),
        "ETHUSDT": iter([raw(0, "2000"), raw(2, "2002"), raw(3, "2003"), raw(5, "2005")]),
    }
    out = list(sources.merged("binance", "1h", per_symbol))
    assert [(c.open_time_ms - T0) // HOUR for c in out] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5]
    assert [c.symbol for c in out] == [
        "ETHUSDT", "XRPUSDT", "BTCUSDT", "XRPUSDT", "BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT",
        "XRPUSDT", "ETHUSDT"]
    expected_close = {"XRPUSDT": "0.3", "BTCUSDT": "3000", "ETHUSDT": "200"}
    for c in out:
        assert c.close.startswith(expected_close[c.symbol]), (c.symbol, c.close)
        assert c.meta.id == f"binance:{c.symbol}:1h:{c.open_time_ms}:r0"
        assert c.exchange == "binance"
        assert c.meta.producer == "ingest"
        assert c.close_time_ms == c.meta.event_time_ms == c.open_time_ms + HOUR
        codec.validate(c)


def test_merged_real_files_each_candle_matches_its_own_file() -> None:
    start = int(datetime(2021, 4, 25, tzinfo=UTC).timestamp() * 1000)  # spans an outage gap
    end = start + 72 * HOUR
    symbols = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
    per_symbol = {s: sources.csv_rows(None, s, "1h", start, end) for s in symbols}
    out = list(sources.merged("binance", "1h", per_symbol))
    expected = {
        (s, r.open_time_ms): r for s in symbols
        for r in sources.csv_rows(None, s, "1h", start, end)
    }
    assert len(out) == len(expected)
    keys = [(c.open_time_ms, c.symbol) for c in out]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    for c in out:
        r = expected[(c.symbol, c.open_time_ms)]
        assert (c.open, c.high, c.low, c.close, c.volume) == (r.open, r.high, r.low, r.close,
                                                              r.volume)
    assert {c.symbol for c in out} == set(symbols)


def test_merged_is_lazy() -> None:
    def forever(price: str):
        for i in itertools.count():
            yield raw(i, price)

    stream = sources.merged("binance", "1h", {"A": forever("1"), "B": forever("2")})
    first = list(itertools.islice(stream, 6))
    assert [(c.symbol, c.close) for c in first] == [("A", "1"), ("B", "2")] * 3


async def test_replay_publishes_keyed_candles() -> None:
    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs("x.", 3))
    candles = list(sources.merged("binance", "1h", {
        "BTCUSDT": iter([raw(i, "1") for i in range(5)]),
        "ETHUSDT": iter([raw(i, "2") for i in range(5)])}))
    sent = await replay(iter(candles), bus.producer(), "x.")
    assert sent == 10
    records = bus.read("x." + topics.CANDLE)
    assert len(records) == 10
    for r in records:
        c = codec.decode(topics.CANDLE, r.value, r.header(codec.TYPE_HEADER))
        assert isinstance(c, candle_pb2.Candle)
        assert r.key == f"binance:{c.symbol}".encode()
        assert r.partition == partition_for(r.key, 3)  # type: ignore[arg-type]
    by_symbol: dict[str, list[int]] = {}
    for r in records:
        c = codec.decode(topics.CANDLE, r.value, None)
        by_symbol.setdefault(c.symbol, []).append(c.open_time_ms)  # type: ignore[attr-defined]
    assert all(v == sorted(v) and len(v) == 5 for v in by_symbol.values())


# --- settings --------------------------------------------------------------------------------


def test_symbols_comma_separated() -> None:
    env = {"MERIDIAN_INGEST_SYMBOLS": " BTCUSDT, ETHUSDT,,XRPUSDT "}
    s = config.load(IngestSettings, environ=env)
    assert s.symbols == ("BTCUSDT", "ETHUSDT", "XRPUSDT")
    assert config.load(IngestSettings, environ={}).symbols == DEFAULT_SYMBOLS
    assert config.load(IngestSettings, environ={"MERIDIAN_INGEST_SYMBOLS": "LTCUSDT"}).symbols \
        == ("LTCUSDT",)


@pytest.mark.parametrize("value", ["", " , ,"])
def test_empty_symbols_rejected(value: str) -> None:
    with pytest.raises(config.ConfigError, match="MERIDIAN_INGEST_SYMBOLS"):
        config.load(IngestSettings, environ={"MERIDIAN_INGEST_SYMBOLS": value})


@pytest.mark.parametrize("value", ["yesterday", "2021-13-01", "01/02/2021"])
def test_bad_start_names_the_variable(value: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(IngestSettings, environ={"MERIDIAN_INGEST_START": value})
    assert "MERIDIAN_INGEST_START" in str(info.value)
    assert value in str(info.value)


def test_start_and_end_in_utc_ms() -> None:
    s = config.load(IngestSettings, environ={"MERIDIAN_INGEST_START": "2021-01-01",
                                             "MERIDIAN_INGEST_END": "2021-01-01T12:00:00Z"})
    assert s.start_ms == 1_609_459_200_000
    assert s.end_ms == 1_609_459_200_000 + 12 * HOUR
    assert parse_time_ms("2021-01-01T02:00:00+02:00") == 1_609_459_200_000
    assert config.load(IngestSettings, environ={}).start_ms is None


def test_bad_timeframe_and_typo() -> None:
    with pytest.raises(config.ConfigError, match="MERIDIAN_INGEST_TIMEFRAME"):
        config.load(IngestSettings, environ={"MERIDIAN_INGEST_TIMEFRAME": "1hour"})
    with pytest.raises(config.ConfigError, match="MERIDIAN_INGEST_SYMBOL"):
        config.load(IngestSettings, environ={"MERIDIAN_INGEST_SYMBOL": "BTCUSDT"})


async def test_paced_replay_follows_the_event_clock_scaled_by_speed() -> None:
    """speed=36000: candles one hour apart go out 0.1 s apart (a lower bound the pacing must
    honour; the upper bound is machine-dependent and not asserted)."""
    bus = InProcessBus()
    await bus.ensure_topics(all_topic_configs("", 3))
    candles = list(sources.merged("binance", "1h", {"BTCUSDT": [raw(i, "1") for i in range(4)]}))
    sent_at: list[float] = []

    class Clocked:
        async def send(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: tuple = ()) -> None:
            sent_at.append(time.perf_counter())
            await inner.send(topic, key, value, headers)

        async def flush(self) -> None:
            await inner.flush()

    inner = bus.producer()
    assert await replay(candles, Clocked(), "", speed=36000) == 4  # type: ignore[arg-type]
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert all(g >= 0.095 for g in gaps), gaps
    assert [r.offset for r in bus.read(topics.CANDLE)] == [0, 1, 2, 3]


def test_replay_stream_starts_each_symbol_with_a_watermark_at_its_first_open() -> None:
    spot = functools.partial(sources.Market, "binance")
    stream = list(sources.replay_stream("1h", {
        spot("LTCUSDT"): iter([raw(i, "50") for i in range(4)]),
        spot("BTCUSDT"): iter([raw(i, "30000") for i in range(2, 4)]),
        spot("ETHUSDT"): iter([])}))  # no candles: no watermark either
    heads = stream[:2]
    assert all(isinstance(item, sources.Routed) for item in heads)
    assert [(h.topic, h.key, h.message.event_time_ms) for h in heads] == [  # type: ignore[union-attr]
        (topics.CANDLE, "binance:LTCUSDT", T0), (topics.CANDLE, "binance:BTCUSDT", T0 + 2 * HOUR)]
    candles = stream[2:]
    assert candles == list(sources.merged("binance", "1h", {
        "LTCUSDT": iter([raw(i, "50") for i in range(4)]),
        "BTCUSDT": iter([raw(i, "30000") for i in range(2, 4)])}))


def test_replay_stream_interleaves_funding_settled_by_each_close() -> None:
    settlements = [(T0 - 5 * HOUR, "0.0001"), (T0 + 3 * HOUR, "0.0002"),
                   (T0 + 11 * HOUR, "0.0003")]  # the last one is after the last close
    eth = sources.Market("bybit-linear", "ETHUSDT")
    stream = list(sources.replay_stream("1h", {eth: iter([raw(i, "2000") for i in range(4)])},
                                        {eth: iter(settlements)}))[1:]
    shape = []
    for item in stream:
        if isinstance(item, candle_pb2.Candle):
            shape.append(("candle", item.close_time_ms - T0))
        elif isinstance(item.message, common_pb2.Watermark):
            assert item.topic == topics.FUNDING
            shape.append(("funding-wm", item.message.event_time_ms - T0))
        else:
            assert item.topic == topics.FUNDING
            shape.append(("funding", item.message.funding_time_ms - T0))  # type: ignore[attr-defined]
    assert shape == [
        ("funding", -5 * HOUR), ("candle", HOUR), ("funding-wm", HOUR),
        ("candle", 2 * HOUR), ("funding-wm", 2 * HOUR),
        ("funding", 3 * HOUR), ("candle", 3 * HOUR), ("funding-wm", 3 * HOUR),
        ("candle", 4 * HOUR), ("funding-wm", 4 * HOUR)]


async def test_replay_publishes_routed_items_and_counts_candles() -> None:
    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs("x.", 3))
    eth = sources.Market("bybit-linear", "ETHUSDT")
    stream = sources.replay_stream("1h", {eth: iter([raw(i, "2000") for i in range(3)])},
                                   {eth: iter([(T0 + HOUR, "0.0001")])})
    assert await replay(stream, bus.producer(), "x.") == 3
    assert len(bus.read("x." + topics.CANDLE)) == 4  # 3 candles + the start watermark
    funding = [codec.decode(topics.FUNDING, r.value, r.header(codec.TYPE_HEADER))
               for r in bus.read("x." + topics.FUNDING)]
    assert [type(m).__name__ for m in funding] == ["FundingRate"] + ["Watermark"] * 3
