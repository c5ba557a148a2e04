"""Fake exchange server (Bybit v5 public + private trading, Binance spot/USDT-M public APIs and
USDT-M private trading) for tests and benchmarks.

It serves the shared CSV market data through the same REST and WebSocket endpoints ccxt and
ccxt.pro call, driven by a controllable clock, with injectable faults (rate limits, 5xx, slow
answers, dropped/duplicated/reordered pushes, corrected candles, rejected / timed-out /
partially filled orders), Bybit accounts that trade linear perpetuals and spot against the
same candles, and separate Binance USDT-M futures accounts on the same matching engine code
(TEST_API_KEY / TEST_API_SECRET by default, for both). Point ccxt at it with
meridian_common.ccxt_urls.reroute_urls(exchange, server.base_url).
"""

from meridian_fake_exchange.auth import TEST_API_KEY, TEST_API_SECRET, sign
from meridian_fake_exchange.clock import FakeClock
from meridian_fake_exchange.faults import Stats
from meridian_fake_exchange.market import Correction
from meridian_fake_exchange.server import FakeExchange
from meridian_fake_exchange.trading import Fees

__all__ = ["TEST_API_KEY", "TEST_API_SECRET", "Correction", "FakeClock", "FakeExchange", "Fees",
           "Stats", "sign"]
