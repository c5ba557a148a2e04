"""`python -m meridian_fake_exchange` runs standalone and prints its base URL."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import ClientSession

from meridian_fake_exchange import sign

OCT_1_2021 = 1_633_046_400_000


async def test_standalone_server_prints_url_and_serves() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meridian_fake_exchange", "--port", "0", "--symbols", "BTCUSDT",
        "--timeframes", "1h", "--start", "2021-10-01", "--speed", "3600",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        base_url = line.decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        async with ClientSession() as http:
            async with http.post(f"{base_url}/_admin/clock", json={"pause": True}) as response:
                paused_at = (await response.json())["now_ms"]
            assert OCT_1_2021 <= paused_at < OCT_1_2021 + 3_600_000 * 30
            async with http.get(f"{base_url}/api.bybit.com/v5/market/time") as response:
                assert (await response.json())["time"] == paused_at
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_standalone_server_trades_with_a_configured_key() -> None:
    """Another process places an order with its own key and reads the truth over HTTP."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meridian_fake_exchange", "--port", "0", "--symbols", "BTCUSDT",
        "--timeframes", "1h", "--start", "2021-10-01", "--paused", "--api-key", "k1:s1",
        "--usdt", "5000", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        base_url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        body = json.dumps({"category": "linear", "symbol": "BTCUSDT", "side": "Buy",
                           "orderType": "Market", "qty": "0.01", "orderLinkId": "cli-1"})
        headers = {"X-BAPI-API-KEY": "k1", "X-BAPI-TIMESTAMP": str(OCT_1_2021),
                   "X-BAPI-RECV-WINDOW": "5000",
                   "X-BAPI-SIGN": sign("s1", OCT_1_2021, "k1", 5000, body)}
        async with ClientSession() as http:
            async with http.post(f"{base_url}/api.bybit.com/v5/order/create", data=body,
                                 headers=headers) as response:
                assert (await response.json())["retCode"] == 0
            async with http.get(f"{base_url}/_admin/orders") as response:
                truth = await response.json()
            async with http.get(f"{base_url}/_admin/wallet") as response:
                wallet = (await response.json())["wallet"]
        assert truth["create_requests"] == {"cli-1": 1}
        assert [(o["orderLinkId"], o["orderStatus"]) for o in truth["orders"]] == \
            [("cli-1", "Filled")]
        assert float(wallet["coin"][0]["walletBalance"]) < 5000
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
