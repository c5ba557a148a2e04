"""`python -m meridian_fake_exchange` runs standalone and prints its base URL."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import ClientSession

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
