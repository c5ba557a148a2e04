"""Fake exchange server (Bybit v5 + Binance spot/USDT-M public APIs) for tests and benchmarks.

It serves the shared CSV market data through the same REST and WebSocket endpoints ccxt and
ccxt.pro call, driven by a controllable clock, with injectable faults (rate limits, 5xx, slow
answers, dropped/duplicated/reordered pushes, corrected candles). Point ccxt at it with
meridian_common.ccxt_urls.reroute_urls(exchange, server.base_url).
"""

from meridian_fake_exchange.clock import FakeClock
from meridian_fake_exchange.faults import Stats
from meridian_fake_exchange.market import Correction
from meridian_fake_exchange.server import FakeExchange

__all__ = ["Correction", "FakeClock", "FakeExchange", "Stats"]
