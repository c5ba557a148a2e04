"""The server: one aiohttp app on one port for REST, WebSocket and the admin route.

Requests arrive as `/<original host>/<original path>` (see meridian_common.ccxt_urls'
`reroute_urls`), so the first path segment picks the venue: api.bybit.com, stream.bybit.com,
api.binance.com, fapi.binance.com, stream.binance.com, fstream.binance.com. Bybit's signed
trading endpoints (GET and POST) go to bybit_private.py, its private stream to bybit_stream.py,
both over one matching engine (matching.py); Binance's USDT-M signed endpoints go to
binance_private.py, over a second engine of the same code with Binance's rules and accounts.
`/_admin/...` lets another process inject faults,
move the clock, read statistics and read the trading truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from meridian_common.marketdata import RawCandle, default_data_dir, timeframe_ms
from meridian_fake_exchange import binance_views
from meridian_fake_exchange.admin import admin_routes
from meridian_fake_exchange.auth import TEST_API_KEY, TEST_API_SECRET, Authenticator
from meridian_fake_exchange.binance import Binance, binance_spec
from meridian_fake_exchange.binance_private import BINANCE_RULES, BinancePrivate
from meridian_fake_exchange.bybit import Bybit, bybit_spec
from meridian_fake_exchange.bybit_private import BybitPrivate
from meridian_fake_exchange.bybit_stream import BybitPrivateSession
from meridian_fake_exchange.bybit_views import (
    execution_view,
    order_view,
    position_view,
    wallet_view,
)
from meridian_fake_exchange.clock import FakeClock
from meridian_fake_exchange.context import Context
from meridian_fake_exchange.data import FundingRow, MarketData
from meridian_fake_exchange.faults import Faults, RestFault, Stats
from meridian_fake_exchange.market import Correction, MarketView
from meridian_fake_exchange.matching import Engine
from meridian_fake_exchange.pricing import PricePath
from meridian_fake_exchange.specs import Spec
from meridian_fake_exchange.trading import Account, Fees
from meridian_fake_exchange.venue import Venue

log = logging.getLogger(__name__)
#: Binance USDT-M futures' non-VIP fees (spot fields unused: Binance trading is futures only)
BINANCE_FEES = Fees(linear_taker=Decimal("0.0005"), linear_maker=Decimal("0.0002"))
VENUES = ("bybit", "binance")


class FakeExchange:
    """A local Bybit v5 (public + private trading) and Binance (spot, USDT-M, public) API over
    the shared CSV data.

    >>> clock = FakeClock(start_ms=1_633_046_400_000, speed=3600.0)
    >>> server = FakeExchange(symbols=("BTCUSDT",), timeframes=("1h",), clock=clock)
    >>> await server.start(); server.base_url   # "http://127.0.0.1:PORT"
    >>> ...; await server.stop()

    Trading (Bybit v5 private API, linear USDT perpetuals and spot): every key of `api_keys`
    (default {TEST_API_KEY: TEST_API_SECRET}) is one unified account starting with `balances`
    (default 100000 USDT), leverage 10 and one-way mode. Fees: `fees` (Bybit's defaults:
    linear taker 0.00055 / maker 0.0002, spot 0.001). Signed timestamps are checked against the
    fake clock unless `check_timestamp=False`. Orders match against the forming candle's
    close of the finest served timeframe (see pricing.py, matching.py), on every private
    request and every `match_interval_s` real seconds.

    Binance USDT-M futures private API: the same keys open a SEPARATE Binance futures account
    each (same starting `balances`, leverage 20, one-way mode; fees `binance_fees`, default
    taker 0.0005 / maker 0.0002), matched by a second engine of the same code
    (`binance_engine`). The truth methods take `venue="binance"` for it.

    Fault injection (Python here, JSON through POST /_admin/faults): `rate_limit`,
    `server_error`, `slow`, `drop_ws`, `drop_ws_every`, `duplicate_ws`, `reorder_ws`,
    `correction`, `set_rate_limit_per_s`, and for order creates `reject_orders`,
    `accept_then_timeout`, `partial_fills`; `clear_faults` removes all. `stats` counts every
    request.

    Truth for assertions (also GET /_admin/orders, /_admin/executions, /_admin/positions,
    /_admin/wallet): `orders()`, `executions()`, `positions()`, `wallet()`,
    `create_requests(order_link_id)`; `match_now()` runs a matching step at once.
    """

    def __init__(self, symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT"),
                 timeframes: Iterable[str] = ("1h",), clock: FakeClock | None = None,
                 data_dir: Path | str | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, rate_limit_per_s: float | None = None, seed: int = 0,
                 ws_poll_interval_s: float = 0.01,
                 ws_update_fractions: tuple[float, ...] = (0.0, 0.5),
                 api_keys: Mapping[str, str] | None = None,
                 balances: Mapping[str, Decimal | str | int] | None = None,
                 fees: Fees | None = None, check_timestamp: bool = True,
                 match_interval_s: float = 0.05, binance_fees: Fees | None = None) -> None:
        if ws_poll_interval_s <= 0:
            raise ValueError(f"ws_poll_interval_s must be > 0, got {ws_poll_interval_s}")
        if match_interval_s <= 0:
            raise ValueError(f"match_interval_s must be > 0, got {match_interval_s}")
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
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        keys = dict(api_keys) if api_keys is not None else {TEST_API_KEY: TEST_API_SECRET}
        start_balances = {coin: Decimal(str(amount)) for coin, amount in
                          (balances if balances is not None else {"USDT": 100_000}).items()}
        path = PricePath(data)
        self.engine = Engine(path, self._spec, self.symbols, fees or Fees(),
                             self.faults.orders, keys, start_balances, seed)
        self.binance_engine = Engine(path, self._binance_spec, self.symbols,
                                     binance_fees or BINANCE_FEES, self.faults.orders, keys,
                                     start_balances, seed, rules=BINANCE_RULES)
        self._closing = asyncio.Event()
        auth = Authenticator(keys, check_timestamp=check_timestamp)
        self.private = BybitPrivate(self.ctx, self.engine, auth, self._spec,
                                    self.faults.orders, self._closing)
        self.binance_private = BinancePrivate(self.ctx, self.binance_engine, auth,
                                              self._binance_spec, self.faults.orders,
                                              self._closing)

        def private_stream(ctx: Context, request: web.Request,
                           ws: web.WebSocketResponse) -> BybitPrivateSession:
            return BybitPrivateSession(ctx, request, ws, self.engine, auth, self._spec)

        self.venues: list[Venue] = [Bybit(self.timeframes, private_stream),
                                    Binance(self.timeframes)]
        self.match_interval_s = match_interval_s
        self._matcher: asyncio.Task[None] | None = None

    def _spec(self, category: str, symbol: str) -> Spec:
        return bybit_spec(self.market.data, category, symbol)

    def _binance_spec(self, category: str, symbol: str) -> Spec:
        return binance_spec(self.market.data, category, symbol)

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
        self._closing.clear()
        self._matcher = asyncio.create_task(self._match_loop())
        log.info("fake exchange listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        self._closing.set()  # releases answers held back by accept_then_timeout
        if self._matcher is not None:
            self._matcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._matcher
            self._matcher = None
        for session in list(self.ctx.sessions):
            session.abort(fault=False)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _match_loop(self) -> None:
        """Fill resting orders and stops while the clock runs, even when nobody asks."""
        while True:
            await asyncio.sleep(self.match_interval_s)
            try:
                self.match_now()
            except Exception:  # a bug here must not silently stop all matching
                log.exception("matching step failed")

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

    # -- order faults --------------------------------------------------------------------------

    def reject_orders(self, code: int, msg: str, n: int = 1, status: int | None = None) -> None:
        """The next `n` authenticated order creates (either venue) answer `code` / `msg` and
        are not recorded. Bybit: retCode > 0 in an HTTP 200 envelope (e.g. 10006 rate limit,
        10016 system error, 110007 margin); Binance: code < 0 with HTTP `status` (default 400;
        e.g. -1008 server busy, -1007 timeout -> ccxt RequestTimeout, -2019 margin)."""
        if code == 0:
            raise ValueError("reject_orders needs a non-zero code")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"reject_orders status must be 4xx or 5xx, got {status}")
        orders = self.faults.orders
        orders.reject_left, orders.reject_code, orders.reject_msg = n, int(code), str(msg)
        orders.reject_status = status

    def accept_then_timeout(self, n: int = 1, delay_s: float = 30.0, *,
                            drop: bool = False) -> None:
        """The next `n` order creates that are accepted ARE recorded and matched, but the
        answer is held back `delay_s` real seconds (ccxt raises RequestTimeout when that is
        longer than its `timeout`), or with `drop` the connection is cut at once (ccxt:
        ExchangeNotAvailable). Rejected creates are answered normally and do not count."""
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        orders = self.faults.orders
        orders.timeout_left, orders.timeout_delay_s, orders.timeout_drop = n, delay_s, drop

    def partial_fills(self, pieces: int, n: int = 1) -> None:
        """The next `n` accepted orders fill in `pieces` equal parts (rounded down to the qty
        step, the last takes the rest), one part per matching step at a later clock time, so
        PartiallyFilled is observable; a market order keeps filling at each step's price."""
        if pieces < 2:
            raise ValueError(f"partial_fills needs pieces >= 2, got {pieces}")
        orders = self.faults.orders
        orders.partial_left, orders.partial_pieces = n, pieces

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

    # -- the trading truth ---------------------------------------------------------------------

    def match_now(self) -> None:
        """Run a matching step at the current fake time on both venues (requests and a
        background task do this anyway; the truth methods below call it first)."""
        now = self.clock.now_ms()
        self.engine.step(now)
        self.binance_engine.step(now)

    def create_requests(self, order_link_id: str, venue: str | None = None) -> int:
        """How many authenticated create requests named this client order id (Bybit
        orderLinkId, Binance newClientOrderId; accepted, rejected or duplicate alike), on
        both venues unless `venue` is given: 1 means the exchange saw the order once."""
        return sum(self._engine(v).create_requests[order_link_id]
                   for v in ([venue] if venue is not None else VENUES))

    def orders(self, api_key: str | None = None, venue: str = "bybit") -> list[dict[str, Any]]:
        """Every accepted order (oldest first) of one venue in its own order shape (Bybit's
        /v5/order/realtime item, or Binance's GET /fapi/v1/order answer), plus "category"
        and "account" (the API key); all accounts unless `api_key` is given."""
        self.match_now()
        if venue == "binance":
            return [{**binance_views.order_view(o, self._binance_spec("linear", o.symbol)),
                     "category": "linear", "account": a.api_key}
                    for a in self._accounts(api_key, venue) for o in a.orders]
        return [{**order_view(o, self._spec(o.category, o.symbol)), "category": o.category,
                 "account": a.api_key} for a in self._accounts(api_key, venue) for o in a.orders]

    def executions(self, api_key: str | None = None,
                   venue: str = "bybit") -> list[dict[str, Any]]:
        """Every fill (oldest first) in the venue's shape (Bybit execution / Binance
        userTrades item), plus "category", "account"."""
        self.match_now()
        if venue == "binance":
            return [{**binance_views.trade_view(e, self._binance_spec("linear", e.order.symbol)),
                     "category": "linear", "account": a.api_key}
                    for a in self._accounts(api_key, venue) for e in a.executions]
        return [{**execution_view(e, self._spec(e.order.category, e.order.symbol)),
                 "category": e.order.category, "account": a.api_key}
                for a in self._accounts(api_key, venue) for e in a.executions]

    def positions(self, api_key: str | None = None,
                  venue: str = "bybit") -> list[dict[str, Any]]:
        """Open (non-zero) linear positions in the venue's shape (Bybit position list item /
        Binance v3 positionRisk item), plus "account"."""
        self.match_now()
        engine = self._engine(venue)
        price_of = engine.price_of(self.clock.now_ms())
        out = []
        for a in self._accounts(api_key, venue):
            for p in sorted(a.positions.values(), key=lambda p: (p.symbol, p.idx)):
                if p.qty == 0:
                    continue
                if venue == "binance":
                    view = binance_views.position_view(a, p, price_of(p.symbol),
                                                       self._binance_spec("linear", p.symbol))
                else:
                    view = position_view(a, p, price_of(p.symbol), self._spec("linear", p.symbol))
                out.append({**view, "account": a.api_key})
        return out

    def wallet(self, api_key: str | None = None, venue: str = "bybit") -> dict[str, Any]:
        """One account's wallet: Bybit's UNIFIED wallet-balance shape (totals and a "coin"
        list with walletBalance, equity, unrealisedPnl, cumRealisedPnl, margins per coin), or
        Binance's GET /fapi/v3/account answer (totals, "assets", open "positions")."""
        self.match_now()
        accounts = self._accounts(api_key, venue)
        engine = self._engine(venue)
        if len(accounts) != 1:
            raise ValueError(f"wallet() needs api_key= with several accounts: "
                             f"{sorted(engine.accounts)}")
        now = self.clock.now_ms()
        if venue == "binance":
            return binance_views.account_view(accounts[0], engine.price_of(now), engine.fees,
                                              now)
        return wallet_view(accounts[0], engine.price_of(now), engine.fees)

    def _engine(self, venue: str) -> Engine:
        if venue not in VENUES:
            raise ValueError(f"venue must be one of {VENUES}, got {venue!r}")
        return self.binance_engine if venue == "binance" else self.engine

    def _accounts(self, api_key: str | None, venue: str = "bybit") -> list[Account]:
        accounts = self._engine(venue).accounts
        if api_key is None:
            return list(accounts.values())
        if api_key not in accounts:
            raise KeyError(f"no account for API key {api_key!r}")
        return [accounts[api_key]]

    # -- dispatch ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        host = request.match_info["host"]
        path = request.match_info["path"].strip("/")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, host, path)
        venue = next((v for v in self.venues if host in v.rest_hosts), None)
        private = isinstance(venue, Bybit) and self.private.handles(request.method, path)
        binance_private = isinstance(venue, Binance) and \
            self.binance_private.handles(host, request.method, path)
        if venue is None or (request.method != "GET" and not (private or binance_private)):
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
        if private:
            response, is_error = await self.private.handle(request, path)
        elif binance_private:
            response, is_error = await self.binance_private.handle(request, host, path)
        else:
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
                "speed": self.clock.speed, "paused": self.clock.paused,
                "accounts": sorted(self.engine.accounts),  # API keys only, never secrets
                "check_timestamp": self.private.auth.check_timestamp}


def _probability(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p}")
    return float(p)
