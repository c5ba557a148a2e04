"""Bybit v5 request signing: what ccxt raises for a wrong key, a wrong signature and a stale
timestamp (measured against the FAKE clock), and the signature rules checked with raw HTTP."""

from __future__ import annotations

import json
import logging
from typing import Any

import ccxt
import pytest

from meridian_fake_exchange import TEST_API_KEY, TEST_API_SECRET, sign

OCT_1_2021 = 1_633_046_400_000
MINUTE = 60_000
BTC = "BTC/USDT:USDT"


async def test_wrong_key_or_secret_is_authentication_error(make_server: Any, make_trader: Any,
                                                           caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    server = await make_server(OCT_1_2021)
    # with keys set ccxt signs already inside load_markets (currencies), so it fails there
    stranger = await make_trader(server, api_key="someone-else", load=False)
    with pytest.raises(ccxt.AuthenticationError, match="10003"):
        await stranger.load_markets()
    forger = await make_trader(server, secret="not-the-secret", load=False)
    with pytest.raises(ccxt.AuthenticationError, match="10004") as caught:
        await forger.load_markets()
    assert "error sign!" in str(caught.value)
    assert TEST_API_SECRET not in str(caught.value)
    assert TEST_API_SECRET not in caplog.text
    good = await make_trader(server)
    assert (await good.fetch_balance())["USDT"]["total"] == 100_000


async def test_stale_timestamp_is_invalid_nonce_and_ccxt_time_sync_fixes_it(
        make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)  # the fake clock is years behind the real one
    unsynced = await make_trader(server, follow_clock=False, load=False)
    with pytest.raises(ccxt.InvalidNonce, match="10002"):
        await unsynced.load_markets()
    # the option alone does not do it: load_markets signs its first call (currencies) before
    # fetch_markets syncs the time
    lagging = await make_trader(server, follow_clock=False, load=False,
                                options={"adjustForTimeDifference": True})
    with pytest.raises(ccxt.InvalidNonce):
        await lagging.load_markets()
    # ccxt's remedy: take the time offset from /v5/market/time before the first signed call
    synced = await make_trader(server, follow_clock=False, sync_time=True)
    await synced.fetch_balance()
    server.clock.advance(10 * MINUTE)  # the fake clock jumps; the client's offset is stale
    with pytest.raises(ccxt.InvalidNonce):
        await synced.fetch_balance()
    await synced.load_time_difference()
    await synced.fetch_balance()


async def test_fast_clock_scales_the_recv_window(make_server: Any, make_trader: Any) -> None:
    # 1 ms of real latency is 3.6 fake seconds here: the window is measured in real time
    server = await make_server(OCT_1_2021, speed=3600.0)
    ex = await make_trader(server, follow_clock=False, sync_time=True)
    await ex.create_order(BTC, "market", "buy", 0.01)
    assert len(server.positions()) == 1


async def test_check_timestamp_off_accepts_any_time(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021, check_timestamp=False)
    ex = await make_trader(server, follow_clock=False)  # signs with the real time
    await ex.create_order(BTC, "market", "buy", 0.01)
    server.clock.advance(60 * MINUTE)
    assert (await ex.fetch_balance())["USDT"]["total"] < 100_000


async def test_signature_rules_with_raw_http(make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021)
    now = server.clock.now_ms()
    base = f"{server.base_url}/api.bybit.com"

    async def get(query: str, timestamp: int, window: int = 5000, signed: str | None = None,
                  key: str = TEST_API_KEY) -> dict[str, Any]:
        signature = sign(TEST_API_SECRET, timestamp, key, window,
                         query if signed is None else signed)
        headers = {"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": str(timestamp),
                   "X-BAPI-RECV-WINDOW": str(window), "X-BAPI-SIGN": signature}
        async with http.get(f"{base}/v5/account/wallet-balance?{query}",
                            headers=headers) as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body

    query = "accountType=UNIFIED&coin=USDT"
    ok = await get(query, now)
    assert ok["retCode"] == 0
    assert ok["result"]["list"][0]["coin"][0]["walletBalance"] == "100000"
    assert (await get(query, now - 4_999))["retCode"] == 0  # inside the 5 s window
    assert (await get(query, now - 5_001))["retCode"] == 10002
    assert (await get(query, now - 9_000, window=10_000))["retCode"] == 0
    assert (await get(query, now + 999))["retCode"] == 0
    assert (await get(query, now + 1_000))["retCode"] == 10002  # from the future
    # the signature covers the query exactly as sent
    assert (await get(query, now, signed="coin=USDT&accountType=UNIFIED"))["retCode"] == 10004
    assert (await get(query, now, key="nobody"))["retCode"] == 10003
    assert (await get("accountType=CONTRACT", now))["retCode"] == 10001

    body = json.dumps({"category": "linear", "symbol": "BTCUSDT", "side": "Buy",
                       "orderType": "Market", "qty": "0.001", "orderLinkId": "raw-1"})
    headers = {"X-BAPI-API-KEY": TEST_API_KEY, "X-BAPI-TIMESTAMP": str(now),
               "X-BAPI-RECV-WINDOW": "5000", "Content-Type": "application/json",
               "X-BAPI-SIGN": sign(TEST_API_SECRET, now, TEST_API_KEY, 5000, body)}
    async with http.post(f"{base}/v5/order/create", data=body, headers=headers) as response:
        created = await response.json()
    assert created["retCode"] == 0
    assert created["result"]["orderLinkId"] == "raw-1"
    tampered = body.replace("0.001", "0.002")
    async with http.post(f"{base}/v5/order/create", data=tampered, headers=headers) as response:
        assert (await response.json())["retCode"] == 10004
    assert server.create_requests("raw-1") == 1  # the forged request never reached trading
    async with http.get(f"{base}/v5/order/create") as response:
        assert response.status == 404  # create is POST only
