"""Injected REST faults and data corrections, as ccxt sees them; the admin route."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ccxt
import pytest

from meridian_fake_exchange.testing import CCXT_VENUES, as_ohlcv

HOUR, MINUTE = 3_600_000, 60_000
OCT_1_2021 = 1_633_046_400_000
IDS = [f"{name}-{kind}" for name, kind, _ in CCXT_VENUES]
# what ccxt raises for the venue's rate-limit answer: Bybit retCode 10006 is mapped exactly to
# RateLimitExceeded; binance raises DDoSProtection for every HTTP 429 (both are NetworkErrors)
RATE_LIMIT_ERROR = {"bybit": ccxt.RateLimitExceeded, "binance": ccxt.DDoSProtection}


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_rate_limit_answer(make_server: Any, make_client: Any, name: str, kind: str,
                                 symbol: str) -> None:
    server = await make_server(OCT_1_2021)
    exchange = make_client(server, name, kind)
    await exchange.load_markets()
    server.rate_limit(2)
    for _ in range(2):
        with pytest.raises(RATE_LIMIT_ERROR[name]) as caught:
            await exchange.fetch_ohlcv(symbol, "1h", limit=5)
        assert type(caught.value) is RATE_LIMIT_ERROR[name]
        assert isinstance(caught.value, ccxt.NetworkError)  # retryable
    assert len(await exchange.fetch_ohlcv(symbol, "1h", limit=5)) == 5
    assert sum(server.stats.rate_limited.values()) == 2


async def test_binance_rate_limit_has_retry_after(make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021)
    server.rate_limit(1)
    async with http.get(f"{server.base_url}/api.binance.com/api/v3/time") as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["code"] == -1003


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_server_error_is_exchange_not_available(make_server: Any, make_client: Any,
                                                      name: str, kind: str,
                                                      symbol: str) -> None:
    server = await make_server(OCT_1_2021)
    exchange = make_client(server, name, kind)
    server.server_error(1, status=502)
    with pytest.raises(ccxt.ExchangeNotAvailable):  # also during load_markets
        await exchange.load_markets()
    server.server_error(1)  # 503
    with pytest.raises(ccxt.ExchangeNotAvailable) as caught:
        await exchange.fetch_ohlcv(symbol, "1h", limit=5)
    assert isinstance(caught.value, ccxt.NetworkError)
    assert len(await exchange.fetch_ohlcv(symbol, "1h", limit=5)) == 5
    assert sum(server.stats.server_errors.values()) == 2


async def test_slow_answers_and_client_timeout(make_server: Any, make_client: Any) -> None:
    server = await make_server(OCT_1_2021)
    exchange = make_client(server, "bybit", "linear")
    server.slow(0.2, n=1)
    started = time.perf_counter()
    assert await exchange.fetch_time() == OCT_1_2021
    assert time.perf_counter() - started >= 0.2
    exchange.timeout = 100  # ms
    server.slow(0.4, n=1)
    with pytest.raises(ccxt.RequestTimeout):
        await exchange.fetch_time()
    assert sum(server.stats.slowed.values()) == 2


async def test_token_bucket_rate_limiter(make_server: Any, make_client: Any) -> None:
    server = await make_server(OCT_1_2021, rate_limit_per_s=5)
    exchange = make_client(server, "bybit", "linear")
    results = await asyncio.gather(*(exchange.fetch_time() for _ in range(20)),
                                   return_exceptions=True)
    limited = [r for r in results if isinstance(r, ccxt.RateLimitExceeded)]
    assert 10 <= len(limited) <= 15  # a burst of 5 passes, then about 5 per second
    assert all(r == OCT_1_2021 for r in results if not isinstance(r, Exception))
    assert server.stats.rate_limited[("api.bybit.com", "v5/market/time")] == len(limited)
    assert server.stats.requests[("api.bybit.com", "v5/market/time")] == 20
    await asyncio.sleep(0.25)  # refills at 5 per second
    assert await exchange.fetch_time() == OCT_1_2021
    server.clear_faults()
    await asyncio.gather(*(exchange.fetch_time() for _ in range(20)))


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_correction_rest_shows_wrong_then_true_values(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    server = await make_server(OCT_1_2021 + 30 * MINUTE)
    exchange = make_client(server, name, kind)
    fix = server.correction("BTCUSDT", "1h", OCT_1_2021, delay_ms=30 * MINUTE)
    truth = as_ohlcv(server.true_candles("BTCUSDT", "1h", OCT_1_2021, OCT_1_2021)[0])
    assert as_ohlcv(fix.true) == truth

    server.clock.advance(40 * MINUTE)  # 01:10: closed, not corrected yet
    closed = (await exchange.fetch_ohlcv(symbol, "1h", since=OCT_1_2021, limit=1))[0]
    assert closed == as_ohlcv(fix.wrong) != truth
    assert closed[4] > truth[4]  # the default wrong value: close nudged up

    server.clock.advance(20 * MINUTE)  # 01:30 = close + delay
    assert (await exchange.fetch_ohlcv(symbol, "1h", since=OCT_1_2021, limit=1))[0] == truth


async def test_admin_route_controls_faults_clock_and_stats(make_server: Any, make_client: Any,
                                                           http: Any) -> None:
    server = await make_server(OCT_1_2021)
    exchange = make_client(server, "binance", "spot")
    admin = f"{server.base_url}/_admin"
    async with http.post(f"{admin}/faults", json=[{"action": "server_error", "status": 500},
                                                  {"action": "rate_limit", "n": 1}]) as r:
        assert r.status == 200
    with pytest.raises(ccxt.DDoSProtection):  # rate limits are applied first
        await exchange.fetch_time()
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.fetch_time()

    async with http.post(f"{admin}/clock", json={"advance_ms": HOUR}) as r:
        assert (await r.json())["now_ms"] == OCT_1_2021 + HOUR
    assert await exchange.fetch_time() == OCT_1_2021 + HOUR

    body = {"action": "correction", "symbol": "BTCUSDT", "timeframe": "1h",
            "open_time_ms": OCT_1_2021, "values": {"close": "1.00"}, "delay_ms": MINUTE}
    async with http.post(f"{admin}/faults", json=body) as r:
        result = (await r.json())["results"][0]
    assert result["wrong"]["close"] == "1.00"
    assert result["effective_ms"] == OCT_1_2021 + HOUR + MINUTE

    async with http.post(f"{admin}/faults", json={"action": "explode"}) as r:
        assert r.status == 400
        assert "unknown action" in (await r.json())["error"]
    async with http.get(f"{admin}/stats") as r:
        stats = await r.json()
    assert stats["rate_limited"] == {"api.binance.com/api/v3/time": 1}
    assert stats["server_errors"] == {"api.binance.com/api/v3/time": 1}
    assert stats["requests"]["api.binance.com/api/v3/time"] == 3
    async with http.get(f"{admin}/info") as r:
        info = await r.json()
    assert "BTCUSDT 1m" in info["series"]
    assert "ETHUSDT 1m" not in info["series"]


async def test_unknown_paths_and_hosts_are_404(make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021)
    for path in ("/api.bybit.com/v5/market/orderbook", "/api.binance.com/api/v3/depth",
                 "/api.binance.com/fapi/v1/klines", "/api.kraken.com/0/public/Time"):
        async with http.get(server.base_url + path) as response:
            assert response.status == 404, path
