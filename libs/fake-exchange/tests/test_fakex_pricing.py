"""The trading price path and the engine's determinism, without HTTP.

The price orders fill at must be what a client reads as the forming candle's close, and
`first_reach` must agree with scanning the path millisecond by millisecond (including gaps in
the data and jumps between one candle's close and the next open).
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meridian_common.marketdata import RawCandle
from meridian_fake_exchange import TEST_API_KEY, FakeClock, FakeExchange
from meridian_fake_exchange.data import CandleSeries, MarketData
from meridian_fake_exchange.pricing import PricePath

OCT_1_2021 = 1_633_046_400_000
HOUR, MINUTE = 3_600_000, 60_000


def synthetic_path() -> PricePath:
    """100 ms candles with a gap (300..399) and jumps between close and next open."""
    rows = [RawCandle(0, "10.00", "12", "9", "12.00", "1"),
            RawCandle(100, "11.50", "12", "8", "8.00", "1"),    # jumps down at 100
            RawCandle(200, "8.00", "9", "7", "7.50", "1"),      # then a gap until 400
            RawCandle(400, "9.00", "11", "9", "10.40", "1"),    # opens above the gap's price
            RawCandle(500, "10.40", "10.4", "10.4", "10.40", "1")]  # flat
    series = CandleSeries("TESTUSDT", "x", 100, [r.open_time_ms for r in rows], rows, 2, 0)
    data = MarketData(Path("."), ("TESTUSDT",), ("x",), {("TESTUSDT", "x"): series})
    return PricePath(data)


def brute_force(path: PricePath, after: int, until: int, level: Decimal,
                down: bool) -> tuple[int, Decimal] | None:
    for t in range(after + 1, until + 1):
        price = path.price_at("TESTUSDT", t)
        if price is not None and (price <= level if down else price >= level):
            return t, price
    return None


def test_price_path_inside_candles_gaps_and_after_the_data() -> None:
    path = synthetic_path()
    assert path.price_at("TESTUSDT", -1) is None  # before the first candle
    assert path.price_at("TESTUSDT", 0) == Decimal("10.00")
    assert path.price_at("TESTUSDT", 50) == Decimal("11.00")  # half-way open -> close
    assert path.price_at("TESTUSDT", 100) == Decimal("11.50")  # next open
    assert path.price_at("TESTUSDT", 350) == Decimal("7.50")  # gap: the last close
    assert path.price_at("TESTUSDT", 10_000) == Decimal("10.40")  # after the data
    assert path.price_at("OTHER", 0) is None


@pytest.mark.parametrize("level", ["7.5", "7.8", "8.0", "9.0", "10.0", "10.3", "11.0", "11.5",
                                   "11.99", "12.0", "12.5", "6.0"])
@pytest.mark.parametrize("down", [True, False])
def test_first_reach_equals_a_millisecond_scan(level: str, down: bool) -> None:
    path = synthetic_path()
    rng = random.Random(f"{level}{down}")
    windows = [(-50, 700), (0, 700), (99, 101), (250, 450), (399, 400)]
    windows += [tuple(sorted(rng.sample(range(-20, 700), 2))) for _ in range(20)]
    for after, until in windows:
        found = path.first_reach("TESTUSDT", after, until, Decimal(level), down)
        expected = brute_force(path, after, until, Decimal(level), down)
        assert (None if found is None else tuple(found)) == expected, (after, until)


def test_price_is_the_forming_close_clients_read(tmp_path: Path) -> None:
    server = FakeExchange(("BTCUSDT",), ("1m", "1h"), FakeClock(OCT_1_2021, paused=True))
    series = server.market.data.series("BTCUSDT", "1m")
    assert series is not None
    rng = random.Random(7)
    for _ in range(300):
        t = OCT_1_2021 + rng.randrange(0, 48 * HOUR)
        i = series.times.index(t - t % MINUTE)
        served = server.market.served(series, series.rows[i], t)
        assert server.engine.price("BTCUSDT", t) == Decimal(served.candle.close), t


def test_fills_do_not_depend_on_how_often_the_engine_looks() -> None:
    """The same clock path gives the same fills, whether stepped every few seconds or once."""

    def run(step_ms: int | None) -> list[Any]:
        clock = FakeClock(OCT_1_2021, paused=True)
        server = FakeExchange(("BTCUSDT",), ("1m",), clock)
        account = server.engine.accounts[TEST_API_KEY]
        place = server.engine.place
        base = {"category": "linear", "symbol": "BTCUSDT"}
        place(account, {**base, "side": "Buy", "orderType": "Limit", "qty": "0.01",
                        "price": "43600.0", "stopLoss": "43450.0"}, clock.now_ms())
        place(account, {**base, "side": "Sell", "orderType": "Limit", "qty": "0.02",
                        "price": "44600.0"}, clock.now_ms())
        end = OCT_1_2021 + 9 * HOUR
        while step_ms is not None and clock.now_ms() < end:
            clock.advance(step_ms)
            server.match_now()
        clock.set(end)
        return [(e["execTime"], e["side"], e["execPrice"], e["execQty"], e["isMaker"])
                for e in server.executions()]

    once, stepped = run(None), run(7_919)
    assert once == stepped
    # the buy rests and fills as maker, its stop loss closes it (taker), later the sell fills
    assert [(side, price, maker) for _, side, price, _, maker in once] == [
        ("Buy", "43600", True), ("Sell", "43450", False), ("Sell", "44600", True)]
    assert once[0][0] < once[1][0] < once[2][0]
