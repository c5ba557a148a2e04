"""One ledger, funding on, booking a spot and a perpetual market: the spot key's candles are
marked without any funding stream, the perpetual's wait for its funding watermark, a funding rate
on the spot key is refused (dead-letter), and over a real replay of a spot/perpetual pair the
hedged book's PnL is exactly the funding it received."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, funding_pb2
from meridian_common import config, testing, topics
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.marketdata import CsvFundingSource, RawCandle, default_data_dir, make_candle
from meridian_common.money import cash
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings

HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % (8 * HOUR))
SPOT, PERP = "bybit", "bybit-linear"
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL


def key(venue: str) -> str:
    return topics.market_key(venue, "BTCUSDT")


def candle(venue: str, i: int, close: str) -> candle_pb2.Candle:
    return make_candle(venue, "BTCUSDT", "1h",
                       RawCandle(T0 + i * HOUR, close, close, close, close, "1"), "ingest")


def rate(venue: str, hours: int, value: str) -> funding_pb2.FundingRate:
    t = T0 + hours * HOUR
    return funding_pb2.FundingRate(
        meta=common_pb2.Meta(id=f"f:{venue}:{t}", event_time_ms=t, producer="ingest"),
        exchange=venue, symbol="BTCUSDT", funding_time_ms=t, rate=value)


def done(venue: str, hours: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=key(venue), event_time_ms=T0 + hours * HOUR)


class Ledger:
    """A funding-on ledger fed one (topic, venue, message) at a time, as one partition."""

    def __init__(self, funding: bool = True) -> None:
        self.handler = LedgerHandler(LedgerSettings(funding=funding), None)
        self.offsets = itertools.count()
        self.out = Outbox("ledger")

    def feed(self, topic: str, venue: str, message: object) -> None:
        msg = Inbound(topic, key(venue), message, (topic, 0, next(self.offsets)))  # type: ignore[arg-type]
        self.handler.handle(msg, self.out)

    def marked(self, venue: str) -> list[int]:
        """Close times of the venue's equity rows."""
        return [int(r["ts"].timestamp() * 1000) - T0 for r in self.handler.batch.equity
                if r["exchange"] == venue]


def test_the_spot_key_is_marked_without_funding_the_perpetual_waits_for_it() -> None:
    ledger = Ledger()
    for venue in (SPOT, PERP):
        ledger.feed(topics.CANDLE, venue, candle(venue, 0, "100"))
        ledger.feed(topics.CANDLE, venue, candle(venue, 1, "101"))
        ledger.feed(topics.FILL, venue, done(venue, 1))
    assert ledger.marked(SPOT) == [HOUR, 2 * HOUR]  # no funding stream at all
    assert ledger.marked(PERP) == []  # its funding has not reached the close yet
    ledger.feed(topics.FUNDING, PERP, done(PERP, 1))
    assert ledger.marked(PERP) == [HOUR]
    ledger.feed(topics.FUNDING, PERP, rate(PERP, 2, "0.0001"))
    assert ledger.marked(PERP) == [HOUR, 2 * HOUR]


def test_a_funding_rate_on_a_spot_key_is_refused() -> None:
    ledger = Ledger()
    ledger.feed(topics.CANDLE, SPOT, candle(SPOT, 0, "100"))
    with pytest.raises(InvalidMessage, match=r"bybit:BTCUSDT.*perpetual markets"):
        ledger.feed(topics.FUNDING, SPOT, rate(SPOT, 1, "0.0001"))
    ledger.feed(topics.FILL, SPOT, done(SPOT, 0))
    assert ledger.marked(SPOT) == [HOUR]  # the refused record left the key unharmed


def test_a_funding_watermark_on_a_spot_key_is_dropped() -> None:
    ledger = Ledger()
    ledger.feed(topics.FUNDING, SPOT, done(SPOT, 5))
    assert key(SPOT) not in ledger.handler.symbols  # no state the account curve would wait on


def test_with_funding_off_the_topic_is_ignored_even_on_a_spot_key() -> None:
    ledger = Ledger(funding=False)
    ledger.feed(topics.FUNDING, SPOT, rate(SPOT, 1, "0.0001"))
    assert ledger.handler.symbols == {}


def _hedge(venue: str, side: int, t: int, price: str) -> tuple[str, str, fill_pb2.Fill]:
    fid = f"hedge-{venue}:f1"
    return topics.FILL, key(venue), fill_pb2.Fill(
        meta=common_pb2.Meta(id=fid, event_time_ms=t, producer="execution"), fill_id=fid,
        client_order_id=f"hedge-{venue}", exchange=venue, symbol="BTCUSDT", side=side,
        quantity="1", price=price, fee="0", fee_currency="USDT")


def test_a_replayed_spot_perp_hedge_earns_exactly_its_funding() -> None:
    """Real BTCUSDT candles of 2022-03-01 with the perpetual copy and its stored settlements:
    long 1 spot + short 1 perp from 02:00 (both at that candle's open). The perpetual is marked
    at spot (basis 0), so the pair's net PnL at every close is minus the funding paid so far."""
    common = config.load(config.CommonSettings, environ={})
    ingest = config.load(IngestSettings, environ={}, symbols="BTCUSDT",
                         replay_perpetuals="BTCUSDT", start="2022-03-01", end="2022-03-02")
    stream = list(commands.candle_stream(common, ingest))
    spot_key, perp_key = "binance:BTCUSDT", "binance-linear:BTCUSDT"
    candles = [m for m in stream if isinstance(m, candle_pb2.Candle)]
    entry = candles[4]  # opens at 02:00 (two markets per hour)
    assert entry.open_time_ms - candles[0].open_time_ms == 2 * HOUR
    end = candles[-1].close_time_ms
    fills = [_hedge("binance", BUY, entry.open_time_ms, entry.open),
             _hedge("binance-linear", SELL, entry.open_time_ms, entry.open),
             (topics.FILL, spot_key, common_pb2.Watermark(key=spot_key, event_time_ms=end)),
             (topics.FILL, perp_key, common_pb2.Watermark(key=perp_key, event_time_ms=end))]
    ledger = LedgerHandler(LedgerSettings(funding=True), None)
    testing.feed(ledger, topics.CANDLE, fills + stream)
    rows = ledger.batch.equity
    spot = [r for r in rows if r["exchange"] == "binance"]
    perp = [r for r in rows if r["exchange"] == "binance-linear"]
    assert len(spot) == len(perp) == 24
    assert {r["funding_paid"] for r in spot} == {Decimal(0)}
    closes = {c.close_time_ms: Decimal(c.close) for c in candles}
    start = candles[0].open_time_ms
    settled = [(t, Decimal(r)) for t, r in CsvFundingSource(default_data_dir(), "BTCUSDT").rows(
        entry.open_time_ms + 1, end)]
    assert [t - start for t, _ in settled] == [8 * HOUR, 16 * HOUR, 24 * HOUR]
    # short 1: receives rate x mark, each settlement rounded to the cash quantum
    paid = -sum((cash(closes[t] * r) for t, r in settled), Decimal(0))
    assert perp[-1]["funding_paid"] == paid != 0
    for s, p in zip(spot, perp, strict=True):
        assert s["ts"] == p["ts"]
        assert s["net_pnl"] + p["net_pnl"] == -p["funding_paid"]
