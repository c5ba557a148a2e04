"""Bybit v5 public API: the part ccxt's `bybit` and `ccxt.pro.bybit` use for market data.

REST (host api.bybit.com):
  GET /v5/market/time               server time = the fake clock
  GET /v5/market/instruments-info   category=spot|linear (inverse/option: empty lists)
  GET /v5/market/kline              newest first, limit 1..1000 (default 200), start/end
  GET /v5/market/funding/history    linear only, newest first, limit 1..200 (default 200)
WebSocket (host stream.bybit.com): /v5/public/spot and /v5/public/linear with
  {"op":"subscribe","args":["kline.60.BTCUSDT"]}, unsubscribe and {"op":"ping"}; /v5/private
  is served by bybit_stream.py (the private REST API by bybit_private.py).

Every REST answer is HTTP 200 with the v5 envelope {"retCode","retMsg","result","retExtInfo",
"time"}; errors use retCode 10001 (ccxt: BadRequest, or BadSymbol for the message "Not
supported symbols") and rate limiting retCode 10006 (ccxt: RateLimitExceeded).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from meridian_fake_exchange.context import Context, dumps
from meridian_fake_exchange.data import MarketData
from meridian_fake_exchange.market import Event
from meridian_fake_exchange.specs import Spec, decimals, spec_for, split_symbol
from meridian_fake_exchange.venue import (
    ParamError,
    Venue,
    bybit_interval,
    int_param,
    quote_volume,
)
from meridian_fake_exchange.ws import PushSession, Subscription

PARAMS_ERROR = 10001
TOO_MANY_VISITS = 10006
BAD_SYMBOL = "Not supported symbols"
BAD_INTERVAL = "Invalid period!"
KLINE_MAX, KLINE_DEFAULT = 1000, 200
FUNDING_MAX, FUNDING_DEFAULT = 200, 200
INSTRUMENTS_MAX, INSTRUMENTS_DEFAULT = 1000, 500
PrivateSessionFactory = Callable[[Context, web.Request, web.WebSocketResponse], PushSession]


def envelope(ctx: Context, result: Any, code: int = 0, msg: str = "OK") -> web.Response:
    now = ctx.now_ms()
    body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now}
    return web.Response(text=dumps(body), content_type="application/json",
                        headers={"Timenow": str(now)})


def _limit(query: Mapping[str, str], default: int, maximum: int) -> int:
    limit = int_param(query, "limit", ParamError(PARAMS_ERROR, "params error: limit invalid"))
    if limit is None:
        return default
    if limit < 1:
        raise ParamError(PARAMS_ERROR, "params error: limit invalid")
    return min(limit, maximum)  # Bybit clips an over-large limit to its maximum


def _time_param(query: Mapping[str, str], name: str) -> int | None:
    return int_param(query, name, ParamError(PARAMS_ERROR, f"params error: {name} invalid"))


def bybit_spec(data: MarketData, kind: str, symbol: str) -> Spec:
    """The instrument rules Bybit publishes for `symbol` ("spot" or "linear")."""
    series = [s for (sym, _), s in data.candles.items() if sym == symbol]
    return spec_for("bybit", kind, symbol, max((s.price_dp for s in series), default=2))


class Bybit(Venue):
    rest_hosts = frozenset({"api.bybit.com", "api.bytick.com"})
    ws_hosts = frozenset({"stream.bybit.com"})

    def __init__(self, timeframes: tuple[str, ...],
                 private_session: PrivateSessionFactory | None = None) -> None:
        self.interval_to_tf = {bybit_interval(tf): tf for tf in timeframes}
        self.private_session = private_session

    # -- REST ----------------------------------------------------------------------------------

    async def rest(self, ctx: Context, host: str, path: str,
                   query: Mapping[str, str]) -> tuple[web.Response, bool]:
        handlers = {
            "v5/market/time": self._time,
            "v5/market/instruments-info": self._instruments,
            "v5/market/kline": self._kline,
            "v5/market/funding/history": self._funding,
        }
        handler = handlers.get(path)
        if handler is None:
            return web.Response(status=404, text=""), True
        try:
            return envelope(ctx, handler(ctx, query)), False
        except ParamError as exc:
            return envelope(ctx, {}, exc.code, exc.msg), True

    def rate_limited(self, ctx: Context, retry_after_s: int) -> web.Response:
        response = envelope(ctx, {}, TOO_MANY_VISITS, "Too many visits!")
        response.headers["X-Bapi-Limit-Status"] = "0"
        response.headers["X-Bapi-Limit-Reset-Timestamp"] = str(ctx.now_ms() + 1000 * retry_after_s)
        return response

    def _time(self, ctx: Context, query: Mapping[str, str]) -> dict[str, str]:
        now = ctx.now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def _instruments(self, ctx: Context, query: Mapping[str, str]) -> dict[str, Any]:
        category = query.get("category", "")
        wanted = query.get("symbol")
        _limit(query, INSTRUMENTS_DEFAULT, INSTRUMENTS_MAX)
        if category not in ("spot", "linear", "inverse", "option"):
            raise ParamError(PARAMS_ERROR, "params error: category invalid")
        symbols = [s for s in ctx.symbols if wanted in (None, s)]
        status = query.get("status")
        if category in ("inverse", "option") or status not in (None, "Trading"):
            symbols = []
        build = self._spot_item if category == "spot" else self._linear_item
        result: dict[str, Any] = {"category": category,
                                  "list": [build(ctx, s) for s in symbols]}
        if category != "spot":
            result["nextPageCursor"] = ""
        return result

    def _spot_item(self, ctx: Context, symbol: str) -> dict[str, Any]:
        base, quote = split_symbol(symbol)
        spec = bybit_spec(ctx.market.data, "spot", symbol)
        return {
            "symbol": symbol, "baseCoin": base, "quoteCoin": quote, "innovation": "0",
            "status": "Trading", "marginTrading": "utaOnly", "stTag": "0",
            "lotSizeFilter": {"basePrecision": spec.step, "quotePrecision": "0.00000001",
                              "minOrderQty": spec.min_qty, "maxOrderQty": spec.max_qty,
                              "minOrderAmt": spec.min_notional, "maxOrderAmt": "2000000"},
            "priceFilter": {"tickSize": spec.tick},
            "riskParameters": {"priceLimitRatioX": "0.005", "priceLimitRatioY": "0.01"},
        }

    def _linear_item(self, ctx: Context, symbol: str) -> dict[str, Any]:
        base, quote = split_symbol(symbol)
        spec = bybit_spec(ctx.market.data, "linear", symbol)
        return {
            "symbol": symbol, "contractType": "LinearPerpetual", "status": "Trading",
            "baseCoin": base, "quoteCoin": quote, "launchTime": str(spec.launch_ms),
            "deliveryTime": "0", "deliveryFeeRate": "", "priceScale": str(decimals(spec.tick)),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00",
                               "leverageStep": "0.01"},
            "priceFilter": {"minPrice": spec.tick, "maxPrice": "1999999.80",
                            "tickSize": spec.tick},
            "lotSizeFilter": {"maxOrderQty": spec.max_qty, "minOrderQty": spec.min_qty,
                              "qtyStep": spec.step, "postOnlyMaxOrderQty": spec.max_qty,
                              "maxMktOrderQty": spec.max_mkt_qty,
                              "minNotionalValue": spec.min_notional},
            "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": quote,
            "copyTrading": "both", "upperFundingRate": "0.005", "lowerFundingRate": "-0.005",
            "isPreListing": False, "preListingInfo": None,
        }

    def _symbol(self, ctx: Context, query: Mapping[str, str], categories: tuple[str, ...]) -> str:
        category = query.get("category", "")
        if category not in categories:
            raise ParamError(PARAMS_ERROR, "params error: category invalid")
        symbol = query.get("symbol", "")
        if not symbol:
            raise ParamError(PARAMS_ERROR, "params error: symbol is required")
        if symbol not in ctx.symbols or category == "inverse":
            raise ParamError(PARAMS_ERROR, BAD_SYMBOL)
        return symbol

    def _kline(self, ctx: Context, query: Mapping[str, str]) -> dict[str, Any]:
        symbol = self._symbol(ctx, query, ("spot", "linear", "inverse"))
        timeframe = self.interval_to_tf.get(query.get("interval", ""))
        if timeframe is None:
            raise ParamError(PARAMS_ERROR, BAD_INTERVAL)
        limit = _limit(query, KLINE_DEFAULT, KLINE_MAX)
        start, end = _time_param(query, "start"), _time_param(query, "end")
        rows = ctx.market.klines(symbol, timeframe, start, end, limit, align_start=True)
        out = [[str(c.open_time_ms), c.open, c.high, c.low, c.close, c.volume,
                quote_volume(c.high, c.low, c.close, c.volume)] for c, _ in reversed(rows)]
        return {"category": query["category"], "symbol": symbol, "list": out}

    def _funding(self, ctx: Context, query: Mapping[str, str]) -> dict[str, Any]:
        symbol = self._symbol(ctx, query, ("linear", "inverse"))
        limit = _limit(query, FUNDING_DEFAULT, FUNDING_MAX)
        start, end = _time_param(query, "startTime"), _time_param(query, "endTime")
        if start is not None and end is None:
            # documented: "Passing startTime only, it returns error."
            raise ParamError(PARAMS_ERROR, "params error: endTime is required with startTime")
        rows = ctx.market.funding(symbol, start, end, limit)
        out = [{"symbol": symbol, "fundingRate": r.rate, "fundingRateTimestamp": str(r.time_ms)}
               for r in reversed(rows)]
        return {"category": query["category"], "list": out}

    # -- WebSocket -----------------------------------------------------------------------------

    def ws_path_ok(self, host: str, path: str) -> bool:
        if path == "v5/private":
            return self.private_session is not None
        return path in ("v5/public/spot", "v5/public/linear", "v5/public/inverse",
                        "v5/public/option")

    def session(self, ctx: Context, host: str, path: str, request: web.Request,
                ws: web.WebSocketResponse) -> PushSession:
        if path == "v5/private" and self.private_session is not None:
            return self.private_session(ctx, request, ws)
        return BybitSession(ctx, request, ws, path.rsplit("/", 1)[-1], self.interval_to_tf)


class BybitSession(PushSession):
    """One v5 public connection; `channel` is spot, linear, inverse or option."""

    def __init__(self, ctx: Context, request: web.Request, ws: web.WebSocketResponse,
                 channel: str, interval_to_tf: dict[str, str]) -> None:
        super().__init__(ctx, request, ws)
        self.channel = channel
        self.interval_to_tf = interval_to_tf
        self.conn_id = uuid.uuid4().hex[:20]

    async def on_open(self) -> None:
        """Bybit has no streams in the URL; everything is subscribed by message."""

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
            op = message.get("op")
        except (ValueError, AttributeError):
            await self._reply({}, False, "error:invalid op", "")
            return
        if op == "ping":
            await self._pong(message)
        elif op == "subscribe":
            await self._subscribe(message)
        elif op == "unsubscribe":
            for topic in message.get("args") or []:
                self.unsubscribe(str(topic))
            await self._reply(message, True, "", "unsubscribe")
        else:
            await self._reply(message, False, f"error:invalid op {op}", str(op or ""))

    async def _reply(self, message: dict[str, Any], success: bool, ret_msg: str,
                     op: str) -> None:
        req_id = message.get("req_id")
        await self.send_control({"success": success, "ret_msg": ret_msg, "conn_id": self.conn_id,
                                 "req_id": "" if req_id is None else str(req_id), "op": op})

    async def _pong(self, message: dict[str, Any]) -> None:
        if self.channel == "spot":
            await self._reply(message, True, "pong", "ping")
        else:
            req_id = message.get("req_id")
            await self.send_control({"req_id": "" if req_id is None else str(req_id),
                                     "op": "pong", "args": [str(self.ctx.now_ms())],
                                     "conn_id": self.conn_id})

    def _parse_topic(self, topic: str) -> tuple[str, str] | str:
        """(symbol, timeframe) for a served kline topic, else the error message."""
        parts = topic.split(".")
        if len(parts) != 3 or parts[0] != "kline":
            return f"Invalid topic :[{topic}] (the fake exchange serves kline topics only)"
        timeframe = self.interval_to_tf.get(parts[1])
        symbol = parts[2]
        if symbol not in self.ctx.symbols or self.channel not in ("spot", "linear"):
            return f"Invalid symbol :[{topic}]"
        if timeframe is None:
            return f"Invalid topic :[{topic}] (interval not served)"
        return symbol, timeframe

    async def _subscribe(self, message: dict[str, Any]) -> None:
        topics = [str(t) for t in message.get("args") or []]
        parsed = [self._parse_topic(t) for t in topics]
        problems = [p for p in parsed if isinstance(p, str)]
        if problems or not topics:
            await self._reply(message, False, problems[0] if problems else "error:args empty",
                              "subscribe")
            return
        for topic, (symbol, timeframe) in zip(topics, parsed, strict=True):
            self.subscribe(topic, symbol, timeframe)
        await self._reply(message, True, "subscribe" if self.channel == "spot" else "",
                          "subscribe")
        await self.tick()  # the snapshot right after the ack, as the venue does

    def format_event(self, sub: Subscription, event: Event) -> str:
        candle, closed = event.served
        tf_ms = self.ctx.market.data.candles[(sub.symbol, sub.timeframe)].tf_ms
        interval = sub.topic.split(".")[1]
        return dumps({
            "topic": sub.topic,
            "data": [{
                "start": candle.open_time_ms, "end": candle.open_time_ms + tf_ms - 1,
                "interval": interval, "open": candle.open, "close": candle.close,
                "high": candle.high, "low": candle.low, "volume": candle.volume,
                "turnover": quote_volume(candle.high, candle.low, candle.close, candle.volume),
                "confirm": closed, "timestamp": event.time_ms,
            }],
            "ts": event.time_ms,
            "type": "snapshot",
        })
