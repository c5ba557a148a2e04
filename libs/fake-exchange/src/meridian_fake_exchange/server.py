"""The server: one aiohttp app on one port for REST, WebSocket and the admin route.

Requests arrive as `/<original host>/<original path>` (see meridian_ingest's `reroute_urls`), so
the first path segment picks the venue: api.bybit.com, stream.bybit.com, api.binance.com,
fapi.binance.com, stream.binance.com, fstream.binance.com. `/_admin/...` lets another process
inject faults, move the clock and read statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from meridian_common.marketdata import RawCandle, default_data_dir, timeframe_ms
from meridian_fake_exchange.admin import admin_routes
from meridian_fake_exchange.binance import Binance
from meridian_fake_exchange.bybit import Bybit
from meridian_fake_exchange.clock import FakeClock
from meridian_fake_exchange.context import Context
from meridian_fake_exchange.data import FundingRow, MarketData
from meridian_fake_exchange.faults import Faults, RestFault, Stats
from meridian_fake_exchange.market import Correction, MarketView
from meridian_fake_exchange.venue import Venue

log = logging.getLogger(__name__)


class FakeExchange:
    """A local Bybit v5 + Binance (spot, USDT-M) public API over the shared CSV data.

    >>> clock = FakeClock(start_ms=1_633_046_400_000, speed=3600.0)
    >>> server = FakeExchange(symbols=("BTCUSDT",), timeframes=("1h",), clock=clock)
    >>> await server.start(); server.base_url   # "http://127.0.0.1:PORT"
    >>> ...; await server.stop()

    Fault injection (Python here, JSON through POST /_admin/faults): `rate_limit`,
    `server_error`, `slow`, `drop_ws`, `drop_ws_every`, `duplicate_ws`, `reorder_ws`,
    `correction`, `set_rate_limit_per_s`, `clear_faults`. `stats` counts every request.
    """

    def __init__(self, symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT"),
                 timeframes: Iterable[str] = ("1h",), clock: FakeClock | None = None,
                 data_dir: Path | str | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, rate_limit_per_s: float | None = None, seed: int = 0,
                 ws_poll_interval_s: float = 0.01,
                 ws_update_fractions: tuple[float, ...] = (0.0, 0.5)) -> None:
        if ws_poll_interval_s <= 0:
            raise ValueError(f"ws_poll_interval_s must be > 0, got {ws_poll_interval_s}")
        self.symbols = tuple(s.upper() for s in symbols)
        self.timeframes = tuple(timeframes)
        for tf in self.timeframes:
            timeframe_ms(tf)
        if not self.symbols or not self.timeframes:
            raise ValueError("FakeExchange needs at least one symbol and one timeframe")
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        data = MarketData.load(self.data_dir, self.symbols, self.timeframes)
        missing = [f"{s} {tf}" for s in self.symbols for tf in self.timeframes
                   if (s, tf) not in data.candles]
        if missing:  # served as markets without candles; say so, it is easy to overlook
            log.warning("no candle file for %s in %s: served as empty", missing, self.data_dir)
        if clock is None:
            first = min(s.times[0] for s in data.candles.values() if s.times)
            clock = FakeClock(first)
        self.clock = clock
        self.market = MarketView(data, clock, ws_update_fractions)
        self.stats = Stats()
        self.faults = Faults(seed=seed)
        self.faults.set_rate_limit_per_s(rate_limit_per_s)
        self.ctx = Context(self.market, self.faults, self.stats, ws_poll_interval_s)
        self.venues: list[Venue] = [Bybit(self.timeframes), Binance(self.timeframes)]
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._runner is None:
            raise RuntimeError("FakeExchange is not started; await start() first")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeExchange:
        app = web.Application()
        app.router.add_routes(admin_routes(self))
        app.router.add_route("*", "/{host}/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # port 0: read the one the OS picked
            self.port = server.sockets[0].getsockname()[1]
        log.info("fake exchange listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        for session in list(self.ctx.sessions):
            session.abort(fault=False)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeExchange:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- REST faults ---------------------------------------------------------------------------

    def rate_limit(self, n: int = 1) -> None:
        """The next `n` REST requests get the venue's rate-limit answer."""
        self.faults.rate_limit_left = n

    def server_error(self, n: int = 1, status: int = 503) -> None:
        """The next `n` REST requests get an HTTP `status` (5xx) gateway error page."""
        if not 500 <= status <= 599:
            raise ValueError(f"server_error status must be 5xx, got {status}")
        self.faults.server_error_left, self.faults.server_error_status = n, status

    def slow(self, seconds: float, n: int = 1) -> None:
        """The next `n` REST requests are answered only after `seconds` (real time)."""
        self.faults.slow_seconds, self.faults.slow_left = seconds, n

    def set_rate_limit_per_s(self, rate: float | None) -> None:
        """A token bucket over all REST requests (burst = one second); None switches it off."""
        self.faults.set_rate_limit_per_s(rate)

    # -- WebSocket faults ----------------------------------------------------------------------

    def drop_ws(self, after: int = 0) -> int:
        """Abort every open WebSocket after `after` more pushed messages; returns how many
        connections were armed."""
        sessions = list(self.ctx.sessions)
        for session in sessions:
            session.drop_after_pushes(after)
        return len(sessions)

    def drop_ws_every(self, k: int | None) -> None:
        """Abort every connection (now and future) after each `k` pushed messages; None: off."""
        if k is not None and k < 1:
            raise ValueError(f"drop_ws_every takes k >= 1 or None, got {k}")
        self.faults.drop_every = k

    def duplicate_ws(self, p: float) -> None:
        """Send each pushed message twice with probability `p` (seeded RNG)."""
        self.faults.duplicate_p = _probability(p)

    def reorder_ws(self, p: float) -> None:
        """With probability `p`, hold a pushed message back and send it after the next one."""
        self.faults.reorder_p = _probability(p)

    # -- data faults ---------------------------------------------------------------------------

    def correction(self, symbol: str, timeframe: str, open_time_ms: int,
                   values: Mapping[str, str] | None = None,
                   delay_ms: int | None = None) -> Correction:
        """Publish the candle at `open_time_ms` wrong (`values`, default: close +0.1 %), and
        correct it `delay_ms` (default: one interval) of fake time after its close: REST then
        serves the true values and subscribers get a message with them."""
        return self.market.add_correction(symbol.upper(), timeframe, open_time_ms, values,
                                          delay_ms)

    def clear_faults(self) -> None:
        """Remove every injected fault, the rate limiter and pending corrections."""
        self.faults.clear()
        self.market.clear_corrections()
        for session in self.ctx.sessions:
            session.drop_after = None

    # -- the truth, for assertions -------------------------------------------------------------

    def true_candles(self, symbol: str, timeframe: str, start_ms: int,
                     end_ms: int) -> list[RawCandle]:
        """The final CSV values with start <= open time <= end (no forming, no corrections)."""
        series = self.market.data.series(symbol.upper(), timeframe)
        return [] if series is None else series.between(start_ms, end_ms)

    def true_funding(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingRow]:
        series = self.market.data.funding.get(symbol.upper())
        return [] if series is None else series.between(start_ms, end_ms)

    # -- dispatch ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        host = request.match_info["host"]
        path = request.match_info["path"].strip("/")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, host, path)
        venue = next((v for v in self.venues if host in v.rest_hosts), None)
        if venue is None or request.method != "GET":
            return web.Response(status=404, text=f"no such endpoint: {host}/{path}")
        key = (host, path)
        self.stats.requests[key] += 1
        decision = self.faults.decide()
        if decision.delay_s > 0:
            self.stats.slowed[key] += 1
            await asyncio.sleep(decision.delay_s)
        if decision.fault is RestFault.RATE_LIMIT:
            self.stats.rate_limited[key] += 1
            return venue.rate_limited(self.ctx, decision.retry_after_s)
        if decision.fault is RestFault.SERVER_ERROR:
            self.stats.server_errors[key] += 1
            return venue.server_error(decision.status)
        response, is_error = await venue.rest(self.ctx, host, path, request.query)
        if is_error:
            self.stats.errors[key] += 1
        return response

    async def _websocket(self, request: web.Request, host: str,
                         path: str) -> web.StreamResponse:
        venue = next((v for v in self.venues if host in v.ws_hosts), None)
        if venue is None or not venue.ws_path_ok(host, path):
            return web.Response(status=404, text=f"no such stream endpoint: {host}/{path}")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = venue.session(self.ctx, host, path, request, ws)
        with contextlib.suppress(ConnectionError):
            await session.run()
        return ws

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "symbols": list(self.symbols),
                "timeframes": list(self.timeframes),
                "series": sorted(f"{s} {tf}" for s, tf in self.market.data.candles),
                "funding": sorted(self.market.data.funding), "now_ms": self.clock.now_ms(),
                "speed": self.clock.speed, "paused": self.clock.paused}


def _probability(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p}")
    return float(p)
