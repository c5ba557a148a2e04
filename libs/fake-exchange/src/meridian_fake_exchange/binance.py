"""Binance spot and USDT-M futures public API: what ccxt's `binance` / `ccxt.pro.binance` use
(the USDT-M private trading routes are in binance_private.py).

REST
  api.binance.com  /api/v3/ping, /api/v3/time, /api/v3/exchangeInfo, /api/v3/klines
                   (klines: ascending, limit default 500, max 1000)
  fapi.binance.com /fapi/v1/ping, /fapi/v1/time, /fapi/v1/exchangeInfo, /fapi/v1/klines
                   (max 1500), /fapi/v1/fundingRate (ascending, default 100, max 1000)
  dapi.binance.com /dapi/v1/ping, /dapi/v1/time, /dapi/v1/exchangeInfo with no markets, so
                   ccxt's default fetchMarkets types (spot, linear, inverse) load too
WebSocket
  stream.binance.com  /ws, /ws/<stream>, /stream?streams=a/b  (ccxt.pro uses /ws/<n>)
  fstream.binance.com the same, also under /market/ and /public/ (ccxt.pro: /market/ws/<n>)
  {"method":"SUBSCRIBE","params":["btcusdt@kline_1h"],"id":1} -> {"result":null,"id":1},
  then kline events {"e":"kline",...}; combined (/stream) connections wrap them in
  {"stream":..., "data":...}. WebSocket ping frames are answered by aiohttp.

Errors are HTTP 400 {"code":-1121,"msg":"Invalid symbol."} (ccxt: BadSymbol) and
{"code":-1120,"msg":"Invalid interval."} (ccxt: BadRequest); rate limiting is HTTP 429 with
Retry-After and code -1003 (ccxt: DDoSProtection, which binance raises for any 429).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web

from meridian_common.marketdata import timeframe_ms
from meridian_fake_exchange.context import Context, dumps
from meridian_fake_exchange.data import MarketData
from meridian_fake_exchange.market import Event
from meridian_fake_exchange.specs import Spec, decimals, spec_for, split_symbol
from meridian_fake_exchange.venue import ParamError, Venue, int_param, quote_volume
from meridian_fake_exchange.ws import PushSession, Subscription

INTERVALS = frozenset({"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h",
                       "12h", "1d", "3d", "1w", "1M"})
BAD_SYMBOL = ParamError(-1121, "Invalid symbol.")
BAD_INTERVAL = ParamError(-1120, "Invalid interval.")
SPOT_HOST, FAPI_HOST, DAPI_HOST = "api.binance.com", "fapi.binance.com", "dapi.binance.com"
PREFIXES = {SPOT_HOST: "api/v3/", FAPI_HOST: "fapi/v1/", DAPI_HOST: "dapi/v1/"}
FAR_FUTURE_MS = 4_133_404_800_000  # deliveryDate Binance gives perpetuals


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=dumps(obj), content_type="application/json")


def _mandatory(name: str) -> ParamError:
    return ParamError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                             "or malformed.")


def _int(query: Mapping[str, str], name: str) -> int | None:
    return int_param(query, name, ParamError(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is "
               "'^[0-9]{1,20}$'."))


def _limit(query: Mapping[str, str], default: int, maximum: int) -> int:
    limit = _int(query, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise ParamError(-1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, maximum)


def _range(query: Mapping[str, str]) -> tuple[int | None, int | None]:
    start, end = _int(query, "startTime"), _int(query, "endTime")
    if start is not None and end is not None and start > end:
        raise ParamError(-1023, "Start time is greater than end time.")
    return start, end


class Binance(Venue):
    rest_hosts = frozenset(PREFIXES)
    ws_hosts = frozenset({"stream.binance.com", "fstream.binance.com"})

    def __init__(self, timeframes: tuple[str, ...]) -> None:
        self.timeframes = frozenset(timeframes)

    # -- REST ----------------------------------------------------------------------------------

    async def rest(self, ctx: Context, host: str, path: str,
                   query: Mapping[str, str]) -> tuple[web.Response, bool]:
        prefix = PREFIXES[host]
        if not path.startswith(prefix):
            return web.Response(status=404, text=""), True
        handlers = {
            "ping": lambda c, q, h: {},
            "time": lambda c, q, h: {"serverTime": c.now_ms()},
            "exchangeInfo": self._exchange_info,
        }
        if host != DAPI_HOST:  # coin-M: no markets here, only what load_markets asks
            handlers["klines"] = self._klines
        if host == FAPI_HOST:
            handlers["fundingRate"] = self._funding
        handler = handlers.get(path[len(prefix):])
        if handler is None:
            return web.Response(status=404, text=""), True
        try:
            return _json(handler(ctx, query, host)), False
        except ParamError as exc:
            return _json({"code": exc.code, "msg": exc.msg}, status=400), True

    def rate_limited(self, ctx: Context, retry_after_s: int) -> web.Response:
        body = {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is "
                                      "6000 requests per minute. Please use WebSocket Streams "
                                      "for live updates to avoid polling the API."}
        response = _json(body, status=429)
        response.headers["Retry-After"] = str(retry_after_s)
        return response

    def _symbols(self, ctx: Context, query: Mapping[str, str]) -> list[str]:
        if "symbol" in query:
            wanted = [query["symbol"]]
        elif "symbols" in query:
            try:
                wanted = [str(s) for s in json.loads(query["symbols"])]
            except ValueError:
                raise BAD_SYMBOL from None
        else:
            return list(ctx.symbols)
        if any(s not in ctx.symbols for s in wanted):
            raise BAD_SYMBOL
        return wanted

    def _exchange_info(self, ctx: Context, query: Mapping[str, str],
                       host: str) -> dict[str, Any]:
        symbols = self._symbols(ctx, query)
        if host == SPOT_HOST:
            limits = [_rate_limit("REQUEST_WEIGHT", "MINUTE", 1, 6000),
                      _rate_limit("ORDERS", "SECOND", 10, 100),
                      _rate_limit("ORDERS", "DAY", 1, 200000),
                      _rate_limit("RAW_REQUESTS", "MINUTE", 5, 61000)]
            return {"timezone": "UTC", "serverTime": ctx.now_ms(), "rateLimits": limits,
                    "exchangeFilters": [],
                    "symbols": [_spot_symbol(s, self._spec(ctx, "spot", s)) for s in symbols]}
        if host == DAPI_HOST:
            symbols = []
        limits = [_rate_limit("REQUEST_WEIGHT", "MINUTE", 1, 2400),
                  _rate_limit("ORDERS", "MINUTE", 1, 1200),
                  _rate_limit("ORDERS", "SECOND", 10, 300)]
        return {"timezone": "UTC", "serverTime": ctx.now_ms(), "futuresType": "U_MARGINED",
                "rateLimits": limits, "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True,
                            "autoAssetExchange": "-10000"}],
                "symbols": [_linear_symbol(s, self._spec(ctx, "linear", s)) for s in symbols]}

    @staticmethod
    def _spec(ctx: Context, kind: str, symbol: str) -> Spec:
        return binance_spec(ctx.market.data, kind, symbol)

    def _klines(self, ctx: Context, query: Mapping[str, str], host: str) -> list[list[Any]]:
        symbol = query.get("symbol")
        if not symbol:
            raise _mandatory("symbol")
        if symbol not in ctx.symbols:
            raise BAD_SYMBOL
        interval = query.get("interval")
        if not interval:
            raise _mandatory("interval")
        if interval not in INTERVALS or interval not in self.timeframes:
            raise BAD_INTERVAL
        limit = _limit(query, 500, 1000 if host == SPOT_HOST else 1500)
        start, end = _range(query)
        tf_ms = timeframe_ms(interval)  # served intervals were validated at construction
        rows = ctx.market.klines(symbol, interval, start, end, limit)
        return [[c.open_time_ms, c.open, c.high, c.low, c.close, c.volume,
                 c.open_time_ms + tf_ms - 1, quote_volume(c.high, c.low, c.close, c.volume),
                 0, "0", "0", "0"] for c, _ in rows]

    def _funding(self, ctx: Context, query: Mapping[str, str],
                 host: str) -> list[dict[str, Any]]:
        symbol = query.get("symbol")
        if symbol is not None and symbol not in ctx.symbols:
            raise BAD_SYMBOL
        limit = _limit(query, 100, 1000)
        start, end = _range(query)
        rows = []
        for sym in [symbol] if symbol else list(ctx.symbols):
            rows.extend((r.time_ms, sym, r.rate) for r in ctx.market.funding(sym, start, end,
                                                                                limit))
        rows.sort()
        rows = rows[:limit] if start is not None else rows[-limit:]
        return [{"symbol": sym, "fundingRate": _rate8(rate), "fundingTime": ts,
                 "markPrice": self._mark(ctx, sym, ts)} for ts, sym, rate in rows]

    @staticmethod
    def _mark(ctx: Context, symbol: str, time_ms: int) -> str:
        """Mark price at a settlement: the open of the hour it falls in, if 1h data is served
        (the files carry no mark prices); "" as Binance sends for old settlements otherwise."""
        series = ctx.market.data.series(symbol, "1h")
        if series is None:
            return ""
        candle = series.get(time_ms - time_ms % series.tf_ms)
        return "" if candle is None else candle.open

    # -- WebSocket -----------------------------------------------------------------------------

    def ws_path_ok(self, host: str, path: str) -> bool:
        segments = path.split("/")
        return "ws" in segments or "stream" in segments

    def session(self, ctx: Context, host: str, path: str, request: web.Request,
                ws: web.WebSocketResponse) -> PushSession:
        segments = path.split("/")
        combined = "stream" in segments
        if combined:
            names = [n for n in request.query.get("streams", "").split("/") if n]
        else:
            names = segments[segments.index("ws") + 1:]
        return BinanceSession(ctx, request, ws, combined, names, self.timeframes)


def binance_spec(data: MarketData, kind: str, symbol: str) -> Spec:
    """The instrument rules Binance publishes for `symbol` ("spot" or "linear")."""
    dps = [s.price_dp for (sym, _), s in data.candles.items() if sym == symbol]
    return spec_for("binance", kind, symbol, max(dps, default=2))


def _rate_limit(kind: str, interval: str, num: int, limit: int) -> dict[str, Any]:
    return {"rateLimitType": kind, "interval": interval, "intervalNum": num, "limit": limit}


def _rate8(rate: str) -> str:
    """Binance prints funding rates with 8 decimals; keep more if the data has more."""
    value = Decimal(rate)
    return f"{value:.8f}" if value == Decimal(f"{value:.8f}") else rate


def _spot_symbol(symbol: str, spec: Spec) -> dict[str, Any]:
    base, quote = split_symbol(symbol)
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": spec.tick, "maxPrice": "1000000.00000000",
             "tickSize": spec.tick},
            {"filterType": "LOT_SIZE", "minQty": spec.min_qty, "maxQty": spec.max_qty,
             "stepSize": spec.step},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000",
             "maxQty": spec.max_mkt_qty, "stepSize": "0.00000000"},
            {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10,
             "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10,
             "maxTrailingBelowDelta": 2000},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5",
             "bidMultiplierDown": "0.2", "askMultiplierUp": "5", "askMultiplierDown": "0.2",
             "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": spec.min_notional,
             "applyMinToMarket": True, "maxNotional": "9000000.00000000",
             "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _linear_symbol(symbol: str, spec: Spec) -> dict[str, Any]:
    base, quote = split_symbol(symbol)
    return {
        "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
        "deliveryDate": FAR_FUTURE_MS, "onboardDate": spec.launch_ms, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": base, "quoteAsset": quote, "marginAsset": quote,
        "pricePrecision": decimals(spec.tick), "quantityPrecision": decimals(spec.step),
        "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
        "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": spec.tick, "maxPrice": "4529764",
             "tickSize": spec.tick},
            {"filterType": "LOT_SIZE", "stepSize": spec.step, "maxQty": spec.max_qty,
             "minQty": spec.min_qty},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": spec.step, "maxQty": spec.max_mkt_qty,
             "minQty": spec.min_qty},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": spec.min_notional},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
             "multiplierDown": "0.9500", "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


class BinanceSession(PushSession):
    """One market-stream connection; `combined` connections wrap events with their stream."""

    def __init__(self, ctx: Context, request: web.Request, ws: web.WebSocketResponse,
                 combined: bool, url_streams: list[str], timeframes: frozenset[str]) -> None:
        super().__init__(ctx, request, ws)
        self.combined = combined
        self.url_streams = url_streams
        self.timeframes = timeframes

    async def on_open(self) -> None:
        for name in self.url_streams:  # names in the URL that are not klines are ignored
            parsed = self._parse(name)
            if isinstance(parsed, tuple):
                self.subscribe(name, *parsed)

    def _parse(self, name: str) -> tuple[str, str] | str | None:
        """(symbol, timeframe) for a served kline stream; None for a stream that exists but
        never has data here (unknown symbol); an error message for an invalid one."""
        market, _, channel = name.partition("@")
        if not channel.startswith("kline_"):
            return f"Invalid request: stream '{name}' (the fake exchange serves klines only)"
        interval = channel[len("kline_"):]
        if interval not in INTERVALS or interval not in self.timeframes:
            return f"Invalid request: unknown interval in stream '{name}'"
        symbol = market.upper()
        return (symbol, interval) if symbol in self.ctx.symbols else None

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
            method, request_id = message.get("method"), message.get("id")
        except (ValueError, AttributeError):
            await self.send_control({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        params = [str(p) for p in message.get("params") or []]
        if method == "SUBSCRIBE":
            await self._subscribe(params, request_id)
        elif method == "UNSUBSCRIBE":
            for name in params:
                self.unsubscribe(name)
            await self.send_control({"result": None, "id": request_id})
        elif method == "LIST_SUBSCRIPTIONS":
            await self.send_control({"result": sorted(self.subs), "id": request_id})
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            await self.send_control({"result": None if method == "SET_PROPERTY" else False,
                                     "id": request_id})
        else:
            await self.send_control({"error": {"code": 1, "msg": f"Invalid method {method}"},
                                     "id": request_id})

    async def _subscribe(self, params: list[str], request_id: Any) -> None:
        parsed = [self._parse(name) for name in params]
        problems = [p for p in parsed if isinstance(p, str)]
        if problems:
            await self.send_control({"error": {"code": 2, "msg": problems[0]}, "id": request_id})
            return
        for name, item in zip(params, parsed, strict=True):
            if isinstance(item, tuple):
                self.subscribe(name, *item)
        await self.send_control({"result": None, "id": request_id})
        await self.tick()

    def format_event(self, sub: Subscription, event: Event) -> str:
        candle, closed = event.served
        tf_ms = self.ctx.market.data.candles[(sub.symbol, sub.timeframe)].tf_ms
        data = {
            "e": "kline", "E": event.time_ms, "s": sub.symbol,
            "k": {
                "t": candle.open_time_ms, "T": candle.open_time_ms + tf_ms - 1, "s": sub.symbol,
                "i": sub.timeframe, "f": 0, "L": 0, "o": candle.open, "c": candle.close,
                "h": candle.high, "l": candle.low, "v": candle.volume, "n": 0, "x": closed,
                "q": quote_volume(candle.high, candle.low, candle.close, candle.volume),
                "V": "0", "Q": "0", "B": "0",
            },
        }
        return dumps({"stream": sub.topic, "data": data} if self.combined else data)
