"""Funding through PostgreSQL: revision 0006 adds the columns to a database that lacks them
(existing rows read 0), the ledger stores what it paid, and a ledger restarted from the database
pays no settlement twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest

from meridian.v1 import common_pb2, fill_pb2, funding_pb2
from meridian_common import db, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_ledger.store import SqlLedgerStore

pytestmark = pytest.mark.integration
VENUE = "bybit-linear"  # a perpetual: the ledger pays funding on perpetual keys only
KEY = f"{VENUE}:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % (8 * HOUR))


def _candle(i: int, close: str) -> tuple[str, object]:
    return topics.CANDLE, make_candle(VENUE, "BTCUSDT", "1h", RawCandle(
        T0 + i * HOUR, close, close, close, close, "1"), "ingest")


def _funding(hours: int, rate: str) -> tuple[str, object]:
    t = T0 + hours * HOUR
    return topics.FUNDING, funding_pb2.FundingRate(
        meta=common_pb2.Meta(id=f"f:{t}", event_time_ms=t), exchange=VENUE,
        symbol="BTCUSDT", funding_time_ms=t, rate=rate)


def _done(topic: str, hours: int) -> tuple[str, object]:
    return topic, common_pb2.Watermark(key=KEY, event_time_ms=T0 + hours * HOUR)


BUY = fill_pb2.Fill(
    meta=common_pb2.Meta(id="mer-1:f1", event_time_ms=T0 - HOUR), fill_id="mer-1:f1",
    client_order_id="mer-1", exchange=VENUE, symbol="BTCUSDT", side=common_pb2.SIDE_BUY,
    quantity="2", price="100", fee="0", fee_currency="USDT")
FIRST = [(topics.FILL, BUY), _candle(-1, "110"), _funding(0, "0.0001"), _done(topics.FILL, 0)]


async def _run(url: str, items: list[tuple[str, object]]) -> LedgerHandler:
    engine = db.create_engine(url)
    try:
        handler = LedgerHandler(LedgerSettings(funding=True), SqlLedgerStore(engine))
        await handler.start()
        out = Outbox("ledger")
        for n, (topic, message) in enumerate(items):
            handler.handle(Inbound(topic, KEY, message, (topic, 0, n)), out)  # type: ignore[arg-type]
        await handler.flush()
        return handler
    finally:
        await engine.dispose()


def _paid(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("select ts, funding_paid from equity order by ts").fetchall()


def test_funding_is_stored_and_never_paid_twice(new_database: Callable[[str], str]) -> None:
    url = new_database("fundingdb")
    db.migrate(url, "0005")
    with psycopg.connect(url, autocommit=True) as conn:  # a database from before 0006
        for table, column in (("positions", "funding_paid"), ("equity", "funding_paid"),
                              ("trades", "funding")):
            conn.execute(f"alter table {table} drop column {column}")
        conn.execute("insert into positions values ('old', 'bybit', 'ETHUSDT', 1, 2000, 0, 0, 0,"
                     " now())")
    db.migrate(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("select funding_paid from positions where account = 'old'"
                            ).fetchone() == (Decimal(0),)
    asyncio.run(_run(url, FIRST))
    assert [p for _, p in _paid(url)] == [Decimal("0.022")]
    # restarted: the settlement at T0 is handed over again (offsets not committed), then more
    restarted = asyncio.run(_run(url, [_funding(0, "0.0001"), _candle(0, "105"),
                                       _done(topics.FUNDING, 1), _done(topics.FILL, 1)]))
    assert restarted.symbols[KEY].book.funding_paid == Decimal("0.022")
    assert [p for _, p in _paid(url)] == [Decimal("0.022"), Decimal("0.022")]


def test_a_round_trip_spanning_a_restart_gets_its_trade(
        new_database: Callable[[str], str]) -> None:
    """The restarted ledger rebuilds its books from the stored fills: the open trade keeps its
    entry, so closing it after the restart writes the trades row."""
    url = new_database("ledgerrestart")
    db.migrate(url)
    asyncio.run(_run(url, FIRST))  # long 2 from T0-1h, marked through T0
    sell = fill_pb2.Fill(
        meta=common_pb2.Meta(id="mer-2:f1", event_time_ms=T0 + HOUR), fill_id="mer-2:f1",
        client_order_id="mer-2", exchange=VENUE, symbol="BTCUSDT", side=common_pb2.SIDE_SELL,
        quantity="2", price="120", fee="0", fee_currency="USDT")
    asyncio.run(_run(url, [(topics.FILL, BUY), _candle(0, "115"), _done(topics.FUNDING, 2),
                           (topics.FILL, sell), _candle(1, "120"), _done(topics.FILL, 2)]))
    with psycopg.connect(url) as conn:
        trades = conn.execute("select entry_time, exit_time, quantity, entry_price, exit_price,"
                              " gross_pnl from trades").fetchall()
        fills = conn.execute("select count(*) from fills").fetchone()
    assert fills == (2,)  # the redelivered buy counted once
    assert len(trades) == 1
    _, _, quantity, entry, exit_, gross = trades[0]
    assert (quantity, entry, exit_, gross) == (Decimal(2), Decimal(100), Decimal(120),
                                               Decimal(40))
