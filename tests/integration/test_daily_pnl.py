"""The daily_pnl view (revision 0007): a day's close per symbol is its last equity row up to
midnight (the candle closing at midnight belongs to the day it opened in), carried over days a
symbol has no row, summed per account; pnl is the change from the previous day."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from meridian_common import db

pytestmark = pytest.mark.integration
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)


def _row(symbol: str, hours: int, net: str, fees: str = "0", funding: str = "0"
         ) -> tuple[object, ...]:
    return ("paper", "bybit", symbol, DAY0 + timedelta(hours=hours), Decimal(1), Decimal(100),
            Decimal(0), Decimal(net), Decimal(fees), Decimal(net), Decimal(funding))


def test_daily_pnl_sums_each_symbols_close_and_carries_gaps(
        new_database: Callable[[str], str]) -> None:
    url = new_database("dailypnl")
    db.migrate(url)
    rows = [
        _row("BTCUSDT", 1, "5"), _row("BTCUSDT", 24, "10", fees="1"),  # day 1 closes at 10
        _row("ETHUSDT", 12, "-3", funding="0.5"),  # day 1 close -3; no ETH row on day 2
        _row("BTCUSDT", 25, "12"), _row("BTCUSDT", 48, "7", fees="2"),  # day 2 close 7
        _row("ETHUSDT", 60, "1"),  # day 3: ETH 1, BTC carried at 7
    ]
    with psycopg.connect(url) as conn:
        conn.cursor().executemany(
            "insert into equity (account, exchange, symbol, ts, quantity, mark_price,"
            " realized_pnl, unrealized_pnl, fees_paid, net_pnl, funding_paid)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        got = conn.execute("select day, net_pnl, pnl, fees_paid, funding_paid from daily_pnl"
                           " where account = 'paper' order by day").fetchall()
    assert got == [
        (DAY0, Decimal(7), Decimal(7), Decimal(1), Decimal("0.5")),  # 10 + -3
        (DAY0 + timedelta(days=1), Decimal(4), Decimal(-3), Decimal(2), Decimal("0.5")),  # 7 - 3
        (DAY0 + timedelta(days=2), Decimal(8), Decimal(4), Decimal(2), Decimal(0)),  # 7 + 1
    ]
