"""REST through real ccxt: markets, time, paginated candles, forming candle, funding, errors."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from meridian_fake_exchange.testing import CCXT_VENUES, as_ohlcv

HOUR, MINUTE = 3_600_000, 60_000
OCT_1_2021 = 1_633_046_400_000      # 2021-10-01T00:00Z
SEP_10_2021 = 1_631_232_000_000     # 2021-09-10T00:00Z
MAR_1_2022 = 1_646_092_800_000      # 2022-03-01T00:00Z
JAN_1_2022 = 1_640_995_200_000      # 2022-01-01T00:00Z
IDS = [f"{name}-{kind}" for name, kind, _ in CCXT_VENUES]
PERPS = [v for v in CCXT_VENUES if v[1] == "linear"]
PERP_IDS = [f"{name}-{kind}" for name, kind, _ in PERPS]

EXPECTED_RULES = {  # (price tick, amount step, min amount, min cost) as ccxt reports them
    ("bybit", "linear"): (0.1, 0.001, 0.001, 5.0),
    ("bybit", "spot"): (0.01, 0.000001, 0.000048, 1.0),
    ("binance", "spot"): (0.01, 0.00001, 0.00001, 5.0),
    ("binance", "linear"): (0.1, 0.001, 0.001, 100.0),
}


async def fetch_all(exchange: Any, symbol: str, timeframe: str, since: int,
                    limit: int) -> list[list[float]]:
    """Page forward with since/limit the way an ingest backfill does."""
    out: list[list[float]] = []
    cursor = since
    while True:
        page = await exchange.fetch_ohlcv(symbol, timeframe, since=cursor, limit=limit)
        page = [row for row in page if not out or row[0] > out[-1][0]]
        if not page:
            return out
        out.extend(page)
        cursor = page[-1][0] + 1


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_load_markets_and_time(make_server: Any, make_client: Any, name: str, kind: str,
                                     symbol: str) -> None:
    server = await make_server(OCT_1_2021 + 1234)
    exchange = make_client(server, name, kind)
    markets = await exchange.load_markets()
    eth = symbol.replace("BTC", "ETH")
    assert sorted(markets) == sorted([symbol, eth])
    market = markets[symbol]
    assert market["id"] == "BTCUSDT"
    assert market["spot"] is (kind == "spot")
    assert market["swap"] is (kind == "linear")
    if kind == "linear":
        assert market["linear"] is True
        assert market["settle"] == "USDT"
    tick, step, min_amount, min_cost = EXPECTED_RULES[(name, kind)]
    assert market["precision"]["price"] == tick
    assert market["precision"]["amount"] == step
    assert market["limits"]["amount"]["min"] == min_amount
    assert market["limits"]["cost"]["min"] == min_cost
    assert market["active"] is True

    assert await exchange.fetch_time() == OCT_1_2021 + 1234
    server.clock.advance(5000)
    assert await exchange.fetch_time() == OCT_1_2021 + 6234


async def test_binance_futures_time_endpoint(make_server: Any, make_client: Any) -> None:
    server = await make_server(OCT_1_2021)
    exchange = make_client(server, "binance", "linear")
    assert await exchange.fetch_time({"type": "swap"}) == OCT_1_2021
    assert server.stats.requests[("fapi.binance.com", "fapi/v1/time")] == 1


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_hourly_pagination_over_weeks_equals_the_files(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    now = OCT_1_2021 + 30 * MINUTE
    server = await make_server(now)
    exchange = make_client(server, name, kind)
    rows = await fetch_all(exchange, symbol, "1h", SEP_10_2021, limit=200)

    truth = server.true_candles("BTCUSDT", "1h", SEP_10_2021, OCT_1_2021 - HOUR)
    assert len(truth) == 21 * 24 - 2  # the file misses 2021-09-29 07:00 and 08:00
    assert rows[:-1] == [as_ohlcv(r) for r in truth]
    # the candle containing "now" is served, but not with its final values
    forming = rows[-1]
    final = as_ohlcv(server.true_candles("BTCUSDT", "1h", OCT_1_2021, OCT_1_2021)[0])
    assert forming[0] == OCT_1_2021
    assert forming != final
    assert forming[3] <= min(forming[1], forming[4]) <= max(forming[1], forming[4]) <= forming[2]
    assert 0 < forming[5] < final[5]


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_minute_candles_across_the_two_hour_gap(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    start = 1_632_873_600_000  # 2021-09-29T00:00Z; the 1m file misses 07:00..08:59
    server = await make_server(start + 12 * HOUR)
    exchange = make_client(server, name, kind)
    rows = await fetch_all(exchange, symbol, "1m", start, limit=1000)
    truth = server.true_candles("BTCUSDT", "1m", start, start + 12 * HOUR - MINUTE)
    assert len(truth) == 12 * 60 - 120
    assert rows[:-1] == [as_ohlcv(r) for r in truth]
    # exactly at a candle's open the forming candle is flat with no volume
    opening = rows[-1]
    assert opening[0] == start + 12 * HOUR
    assert opening[1] == opening[2] == opening[3] == opening[4]
    assert opening[5] == 0


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_forming_candle_becomes_final_when_it_closes(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    server = await make_server(OCT_1_2021 + 45 * MINUTE)
    exchange = make_client(server, name, kind)
    final = as_ohlcv(server.true_candles("BTCUSDT", "1h", OCT_1_2021, OCT_1_2021)[0])
    latest = await exchange.fetch_ohlcv(symbol, "1h", limit=3)
    assert [r[0] for r in latest] == [OCT_1_2021 - 2 * HOUR, OCT_1_2021 - HOUR, OCT_1_2021]
    assert latest[-1] != final

    server.clock.advance(15 * MINUTE)  # exactly the close of 00:00
    latest = await exchange.fetch_ohlcv(symbol, "1h", limit=2)
    assert latest[0] == final
    assert latest[1][0] == OCT_1_2021 + HOUR


@pytest.mark.parametrize(("name", "kind", "symbol"), PERPS, ids=PERP_IDS)
async def test_funding_history_equals_the_file_up_to_now(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    now = MAR_1_2022 + 4 * HOUR
    server = await make_server(now)
    exchange = make_client(server, name, kind)
    await exchange.load_markets()
    got: list[tuple[int, float]] = []
    cursor = JAN_1_2022
    while True:
        page = await exchange.fetch_funding_rate_history(symbol, since=cursor, limit=50)
        page = [p for p in page if not got or p["timestamp"] > got[-1][0]]
        if not page:
            break
        got.extend((p["timestamp"], p["fundingRate"]) for p in page)
        cursor = page[-1]["timestamp"] + 1
    truth = server.true_funding("BTCUSDT", JAN_1_2022, now)
    assert len(truth) == 59 * 3 + 1  # Jan + Feb, plus the 2022-03-01T00:00 settlement
    assert got == [(r.time_ms, float(r.rate)) for r in truth]

    latest = await exchange.fetch_funding_rate_history(symbol)  # no since: newest up to now
    assert latest[-1]["timestamp"] == MAR_1_2022
    assert all(p["timestamp"] <= now for p in latest)


async def test_bybit_funding_with_start_time_only_is_rejected(make_server: Any,
                                                              make_client: Any) -> None:
    server = await make_server(MAR_1_2022)
    exchange = make_client(server, "bybit", "linear")
    with pytest.raises(ccxt.BadRequest):
        await exchange.public_get_v5_market_funding_history(
            {"category": "linear", "symbol": "BTCUSDT", "startTime": JAN_1_2022})


async def test_bybit_kline_page_is_newest_first_and_limit_is_clipped(
        make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021)
    url = f"{server.base_url}/api.bybit.com/v5/market/kline"
    params = {"category": "linear", "symbol": "BTCUSDT", "interval": "1", "limit": "5000",
              "start": str(OCT_1_2021 - 2000 * MINUTE + 30_000)}
    async with http.get(url, params=params) as response:
        body = await response.json()
    rows = body["result"]["list"]
    assert body["retCode"] == 0
    assert len(rows) == 1000
    assert int(rows[0][0]) > int(rows[-1][0])
    # a start inside a candle includes that candle, as Bybit does
    assert int(rows[-1][0]) == OCT_1_2021 - 2000 * MINUTE

    params = {"category": "linear", "symbol": "BTCUSDT", "interval": "60"}
    async with http.get(url, params=params) as response:
        rows = (await response.json())["result"]["list"]
    assert len(rows) == 200  # the default page
    assert int(rows[0][0]) == OCT_1_2021  # newest first, ending at the forming candle


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_unknown_symbol_is_a_non_retryable_bad_symbol(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    server = await make_server(OCT_1_2021)
    exchange = make_client(server, name, kind)
    await exchange.load_markets()
    with pytest.raises(ccxt.BadSymbol):  # ccxt itself knows the market list
        await exchange.fetch_ohlcv(symbol.replace("BTC", "DOGE"), "1h")
    # and the server answers a raw request for it the way the venue does
    if name == "bybit":
        call = exchange.public_get_v5_market_kline(
            {"category": kind, "symbol": "DOGEUSDT", "interval": "60"})
    elif kind == "spot":
        call = exchange.public_get_klines({"symbol": "DOGEUSDT", "interval": "1h"})
    else:
        call = exchange.fapipublic_get_klines({"symbol": "DOGEUSDT", "interval": "1h"})
    with pytest.raises(ccxt.BadSymbol) as caught:
        await call
    assert not isinstance(caught.value, ccxt.NetworkError)


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_unserved_timeframe_is_a_non_retryable_bad_request(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    server = await make_server(OCT_1_2021)
    exchange = make_client(server, name, kind)
    for timeframe in ("5m", "7m"):  # valid on the venue but not served; not a venue interval
        with pytest.raises(ccxt.BadRequest) as caught:
            await exchange.fetch_ohlcv(symbol, timeframe)
        assert type(caught.value) is ccxt.BadRequest
        assert "Invalid" in str(caught.value)
    assert sum(server.stats.errors.values()) == 2


@pytest.mark.parametrize("name", ["bybit", "binance"])
async def test_load_markets_with_ccxt_default_market_types(make_server: Any, make_client: Any,
                                                           name: str) -> None:
    server = await make_server(OCT_1_2021)
    exchange = make_client(server, name, "spot")
    del exchange.options["fetchMarkets"]["types"]  # back to ccxt's default list of types
    markets = await exchange.load_markets()
    assert sorted(markets) == ["BTC/USDT", "BTC/USDT:USDT", "ETH/USDT", "ETH/USDT:USDT"]
