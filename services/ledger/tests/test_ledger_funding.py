"""Funding payments: each settlement is paid on the position held through it (fills up to the
candle's open), valued at that candle's close, once; the curve is the same whatever order fills,
candles and funding arrive in; a restarted ledger pays nothing twice."""

from __future__ import annotations

import itertools
from decimal import Decimal

from meridian.v1 import common_pb2, fill_pb2, funding_pb2
from meridian_common import topics
from meridian_common.accounting import PositionBook
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings

VENUE = "bybit-linear"  # a perpetual: the ledger pays funding on perpetual keys only
KEY = f"{VENUE}:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % (8 * HOUR))  # a settlement time
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
Item = tuple[str, object]


def candle(i: int, close: str) -> Item:
    """The candle opening at T0 + i h (closing an hour later)."""
    return topics.CANDLE, make_candle(VENUE, "BTCUSDT", "1h",
                                      RawCandle(T0 + i * HOUR, close, close, close, close, "1"),
                                      "ingest")


def fill(i: int, side: int, qty: str, price: str) -> Item:
    fid = f"mer-{i}:f1"
    return topics.FILL, fill_pb2.Fill(
        meta=common_pb2.Meta(id=fid, event_time_ms=T0 + i * HOUR, producer="execution"),
        fill_id=fid, client_order_id=f"mer-{i}", exchange=VENUE, symbol="BTCUSDT", side=side,
        quantity=qty, price=price, fee="0", fee_currency="USDT")


def fills_done(i: int) -> Item:
    return topics.FILL, common_pb2.Watermark(key=KEY, event_time_ms=T0 + i * HOUR)


def funding(hours: int, rate: str) -> Item:
    t = T0 + hours * HOUR
    return topics.FUNDING, funding_pb2.FundingRate(
        meta=common_pb2.Meta(id=f"f:{t}", event_time_ms=t, producer="ingest"),
        exchange=VENUE, symbol="BTCUSDT", funding_time_ms=t, rate=rate)


def funding_done(hours: int) -> Item:
    return topics.FUNDING, common_pb2.Watermark(key=KEY, event_time_ms=T0 + hours * HOUR)


def feed(handler: LedgerHandler, items: list[Item]) -> list[tuple[str, str, object]]:
    out = Outbox("ledger")
    offsets = itertools.count()
    for topic, msg in items:
        handler.handle(Inbound(topic, KEY, msg, (topic, 0, next(offsets))), out)  # type: ignore[arg-type]
    return out.items


def curve(handler: LedgerHandler) -> list[tuple[str, Decimal, Decimal]]:
    return [(r["ts"].isoformat(), r["funding_paid"], r["net_pnl"]) for r in handler.batch.equity]


# A long of 2 from the open at T0-1h, closed at the open at T0+8h; settlements at T0 and T0+8h
# (the close of the candles opening at T0-1h and T0+7h). The one at T0 is paid on 2 x 110 (the
# close at T0): 0.022; the one at T0+8h on 2 x 100: -0.02 (a negative rate: longs receive).
STREAM: list[Item] = [
    fill(-1, BUY, "2", "100"), candle(-1, "110"), funding(0, "0.0001"), fills_done(0),
    *[item for i in range(7) for item in (candle(i, "105"), funding_done(i + 1),
                                          fills_done(i + 1))],
    candle(7, "100"), funding(8, "-0.0001"), fill(8, SELL, "2", "100"), candle(8, "100"),
    funding_done(9), fills_done(9),
]


def test_each_settlement_is_paid_on_the_position_held_through_it() -> None:
    handler = LedgerHandler(LedgerSettings(funding=True), None)
    feed(handler, STREAM)
    rows = handler.batch.equity
    assert len(rows) == 10
    assert rows[0]["funding_paid"] == Decimal("0.022")  # at T0: 2 x 110 x 0.0001
    assert rows[-2]["funding_paid"] == Decimal("0.002")  # at T0+8h: - 2 x 100 x 0.0001
    assert rows[-1]["quantity"] == 0
    [trade] = handler.batch.trades
    assert trade["funding"] == Decimal("0.002")
    assert trade["net_pnl"] == Decimal("-0.002")  # flat price, no fees: only funding
    assert handler.batch.positions[("paper", VENUE, "BTCUSDT")]["funding_paid"] == Decimal(
        "0.002")


def test_a_candle_waits_for_its_funding() -> None:
    handler = LedgerHandler(LedgerSettings(funding=True), None)
    feed(handler, [fill(-1, BUY, "2", "100"), candle(-1, "110"), fills_done(0)])
    assert handler.batch.equity == []  # funding up to T0 unknown yet
    feed(handler, [funding(0, "0.0001")])
    assert [r["funding_paid"] for r in handler.batch.equity] == [Decimal("0.022")]


def test_funding_off_ignores_the_topic() -> None:
    handler = LedgerHandler(LedgerSettings(), None)
    feed(handler, STREAM)
    assert {r["funding_paid"] for r in handler.batch.equity} == {Decimal(0)}


def test_any_arrival_order_gives_the_same_curve() -> None:
    reference = LedgerHandler(LedgerSettings(funding=True), None)
    feed(reference, STREAM)
    by_topic: dict[str, list[Item]] = {}
    for item in STREAM:
        by_topic.setdefault(item[0], []).append(item)
    orders = [  # each topic in its own order, the topics interleaved differently
        by_topic[topics.FUNDING] + by_topic[topics.FILL] + by_topic[topics.CANDLE],
        by_topic[topics.CANDLE] + by_topic[topics.FILL] + by_topic[topics.FUNDING],
        by_topic[topics.FILL] + by_topic[topics.FUNDING] + by_topic[topics.CANDLE],
    ]
    for items in orders:
        other = LedgerHandler(LedgerSettings(funding=True), None)
        feed(other, items)
        assert curve(other) == curve(reference)


def test_a_restart_pays_nothing_twice() -> None:
    first = LedgerHandler(LedgerSettings(funding=True), None)
    feed(first, STREAM[:4])  # marked through T0, settlement at T0 paid
    [row] = first.batch.positions.values()
    # a restarted ledger loads the positions row, then is handed the funding again
    second = LedgerHandler(LedgerSettings(funding=True), None)
    st = second._symbol(KEY)
    st.book = PositionBook(row["quantity"], row["average_price"], row["realized_pnl"],
                           row["fees_paid"], row["trades_closed"],
                           funding_paid=row["funding_paid"])
    st.funding_to = int(row["as_of"].timestamp() * 1000)
    st.fill_wm = T0
    feed(second, [funding(0, "0.0001"), candle(0, "105"), funding_done(1), fills_done(1)])
    assert [r["funding_paid"] for r in second.batch.equity] == [Decimal("0.022")]


def test_the_book_pays_longs_and_shorts_opposite_ways() -> None:
    long, short = PositionBook(), PositionBook()
    long.apply_fill(BUY, Decimal(3), Decimal(50), Decimal(0), 0)
    short.apply_fill(SELL, Decimal(3), Decimal(50), Decimal(0), 0)
    assert long.apply_funding(Decimal("0.0002"), Decimal(60)) == Decimal("0.036")
    assert short.apply_funding(Decimal("0.0002"), Decimal(60)) == Decimal("-0.036")
    assert PositionBook().apply_funding(Decimal("0.0002"), Decimal(60)) == 0
    assert long.net_pnl(Decimal(50)) == Decimal("-0.036")
