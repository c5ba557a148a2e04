"""`Venue` over ccxt's async clients: markets, precision, the clock offset, error meanings.

One class per exchange (Hummingbot's rule: one connector, one file contract): the generic part
lives here; `BybitVenue` adds what ccxt's unified API leaves to each exchange (querying an order
by client id, recognising a duplicate client id, reading exact decimals from the raw answer).

Secrets: ccxt holds the key and secret; every error that leaves this module is rebuilt from the
exception's class and the exchange's code and message, and passed through `redact`, so neither
can reach a log line or an order event's reason.
"""

from __future__ import annotations

import json
import logging
import re
from decimal import ROUND_DOWN, Decimal
from typing import Any

import ccxt.async_support as ccxt

from meridian_common import orders
from meridian_common.ccxt_urls import reroute_urls
from meridian_common.money import dec
from meridian_execution.live.venue import (
    Ambiguous,
    Duplicate,
    Fatal,
    OrderRequest,
    Rejected,
    Retryable,
    VenueError,
    VenueFill,
    VenueOrder,
)
from meridian_execution.settings import ExecutionSettings

log = logging.getLogger(__name__)
# ccxt logs every request with its headers at DEBUG, the API key among them: never below INFO
logging.getLogger("ccxt").setLevel(logging.INFO)

_JSON_TAIL = re.compile(r"(\{.*\})\s*$", re.S)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def exchange_message(exc: Exception) -> tuple[str, str]:
    """(code, message) from a ccxt exception: the exchange's own code and text when the
    exception carries its JSON answer, else the exception's class name and text."""
    raw = str(exc)
    match = _JSON_TAIL.search(raw)
    if match:
        try:
            body = json.loads(match.group(1))
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = body.get("retCode", body.get("code"))
            message = body.get("retMsg", body.get("msg"))
            if code is not None:
                return str(code), str(message or "")
    return type(exc).__name__, raw


class CcxtVenue:
    """The generic part; subclasses set `ccxt_id` and the exchange-specific hooks."""

    ccxt_id = ""
    duplicate_codes: frozenset[str] = frozenset()
    unchanged_codes: frozenset[str] = frozenset()  # "already so" answers to account settings
    # codes by which the exchange says it does not know what became of the request
    ambiguous_codes: frozenset[str] = frozenset()
    attaches_stops = True  # stop-loss / take-profit ride on the order

    def __init__(self, settings: ExecutionSettings, exchange: str) -> None:
        self.exchange = exchange
        self.settings = settings
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        secret = settings.api_secret.get_secret_value() if settings.api_secret else ""
        self._secrets = (key, secret)
        self.client: Any = getattr(ccxt, self.ccxt_id)({
            "apiKey": key, "secret": secret, "enableRateLimit": True,
            "timeout": settings.request_timeout_ms,
            "options": {"defaultType": "swap" if settings.market_type == "linear" else "spot",
                        "adjustForTimeDifference": True,
                        "fetchMarkets": {"types": [settings.market_type]}},
        })
        if settings.exchange_url:
            reroute_urls(self.client, settings.exchange_url)
        self._markets: dict[str, dict[str, Any]] = {}

    # -- errors --------------------------------------------------------------------------------

    def _error(self, exc: Exception, *, submit: bool) -> VenueError:
        """What a ccxt exception means for the order (see venue.py's table)."""
        code, message = exchange_message(exc)
        text = redact(f"{code}: {message}", self._secrets)
        if isinstance(exc, ccxt.InvalidNonce):
            return Retryable(text, 0.0, resync_clock=True)
        if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
            return Retryable(text, 1.0)
        if isinstance(exc, ccxt.NetworkError):
            # a timeout or a gateway error may hide an accepted order; a read is only retried
            return Ambiguous(text) if submit else Retryable(text, 1.0)
        if isinstance(exc, ccxt.AuthenticationError):
            return Fatal(text)
        if code in self.duplicate_codes:
            return Duplicate(text)
        if code in self.ambiguous_codes:
            return Ambiguous(text) if submit else Retryable(text, 1.0)
        if isinstance(exc, ccxt.BaseError):
            return Rejected(code, redact(message, self._secrets))
        return Ambiguous(text) if submit else Retryable(text, 1.0)

    async def _call(self, what: str, coro: Any, *, submit: bool = False) -> Any:
        try:
            return await coro
        except Exception as exc:  # every failure is classified below, none is ignored
            error = self._error(exc, submit=submit)
            log.debug("venue call %s failed: %s", what, error)
            raise error from None

    # -- markets and clock ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        if self.settings.market_type == "linear":
            await self._account_settings()

    async def _account_settings(self) -> None:
        """The position mode and leverage the settings ask for, per traded symbol. Bybit
        answers an unchanged value with an error (110025 mode, 110043 leverage): that is the
        wanted state, not a failure."""
        unchanged = self.unchanged_codes
        hedged = self.settings.position_mode == "hedge"
        for symbol in self.settings.symbol_list():
            unified = self._market(symbol)["symbol"]
            calls = [("set_position_mode", self.client.set_position_mode(hedged, unified))]
            if self.settings.leverage is not None:
                calls.append(("set_leverage", self.client.set_leverage(
                    float(self.settings.leverage), unified)))
            for what, call in calls:
                try:
                    await self._call(what, call)
                except Rejected as exc:
                    if exc.code not in unchanged:
                        raise

    async def refresh(self) -> None:
        # the clock first: loading markets already signs private calls (account mode)
        await self._call("load_time_difference", self.client.load_time_difference())
        markets = await self._call("load_markets", self.client.load_markets(reload=True))
        wanted = self.settings.market_type
        self._markets = {m["id"]: m for m in markets.values()
                         if (m.get("linear") if wanted == "linear" else m.get("spot"))}

    def _market(self, symbol: str) -> dict[str, Any]:
        market = self._markets.get(symbol)
        if market is None:
            raise Rejected("symbol", f"{symbol} is not a {self.settings.market_type} market "
                           f"on {self.exchange}")
        return market

    def round_quantity(self, symbol: str, quantity: Decimal) -> Decimal:
        step = dec(str(self._market(symbol)["precision"]["amount"]), "precision.amount")
        return (quantity / step).to_integral_value(ROUND_DOWN) * step

    def round_price(self, symbol: str, price: Decimal) -> Decimal:
        tick = dec(str(self._market(symbol)["precision"]["price"]), "precision.price")
        return (price / tick).to_integral_value() * tick

    async def server_time_ms(self) -> int:
        return int(await self._call("fetch_time", self.client.fetch_time()))

    async def close(self) -> None:
        await self.client.close()

    # -- orders --------------------------------------------------------------------------------

    def _params(self, request: OrderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {"clientOrderId": request.client_order_id}
        if request.reduce_only:
            params["reduceOnly"] = True
        if self.settings.position_mode == "hedge":
            params["hedged"] = True
        if request.stop_loss is not None:
            params["stopLoss"] = {"triggerPrice": str(request.stop_loss)}
        if request.take_profit is not None:
            params["takeProfit"] = {"triggerPrice": str(request.take_profit)}
        return params

    async def submit(self, request: OrderRequest) -> VenueOrder:
        market = self._market(request.symbol)
        price = None if request.limit_price is None else str(request.limit_price)
        order = await self._call("create_order", self.client.create_order(
            market["symbol"], request.order_type, request.side, str(request.quantity), price,
            self._params(request)), submit=True)
        return VenueOrder(request.client_order_id, str(order.get("id") or ""), request.symbol,
                          _status(order), _filled(order), _average(order))


    async def open_orders(self, symbol: str) -> list[VenueOrder]:
        market = self._market(symbol)
        found = await self._call("fetch_open_orders",
                                 self.client.fetch_open_orders(market["symbol"]))
        return [self._order(symbol, o) for o in found]

    def _order(self, symbol: str, order: dict[str, Any]) -> VenueOrder:
        return VenueOrder(str(order.get("clientOrderId") or ""), str(order.get("id") or ""),
                          symbol, _status(order), _filled(order), _average(order))

    async def position(self, symbol: str) -> Decimal | None:
        market = self._market(symbol)
        if market.get("spot"):
            return None  # a spot balance also moves by deposits and withdrawals: not compared
        rows = await self._call("fetch_positions",
                                self.client.fetch_positions([market["symbol"]]))
        total = Decimal(0)
        for row in rows:
            size = dec(str(row.get("contracts") or 0), "position.contracts")
            total += size if row.get("side") == "long" else -size
        return total


def _status(order: dict[str, Any]) -> int:
    status = order.get("status")
    filled = _filled(order)
    if status == "open" or status is None:
        return orders.PARTIALLY_FILLED if filled > 0 else orders.OPEN
    return {"closed": orders.FILLED, "canceled": orders.CANCELED, "rejected": orders.REJECTED,
            "expired": orders.EXPIRED}.get(str(status), orders.OPEN)


def _filled(order: dict[str, Any]) -> Decimal:
    return dec(str(order.get("filled") or 0), "order.filled")


def _average(order: dict[str, Any]) -> Decimal | None:
    value = order.get("average")
    return None if value in (None, 0, "0") else dec(str(value), "order.average")


# how Bybit marks the orders it creates for a position's attached stop-loss / take-profit
PROTECTIVE_CREATE = ("CreateByStopLoss", "CreateByTakeProfit", "CreateByTrailingStop",
                     "CreateByPartialStopLoss", "CreateByPartialTakeProfit")
PROTECTIVE_STOP_TYPES = frozenset({"StopLoss", "TakeProfit", "TrailingStop", "PartialStopLoss",
                                   "PartialTakeProfit"})


class BybitVenue(CcxtVenue):
    """Bybit v5 (unified account): orderLinkId is the client id, 110072 its duplicate."""

    ccxt_id = "bybit"
    duplicate_codes = frozenset({"110072"})
    unchanged_codes = frozenset({"110025", "110043"})
    ambiguous_codes = frozenset({"10000", "10016"})  # server timeout, internal error

    def _category(self) -> str:
        return "linear" if self.settings.market_type == "linear" else "spot"

    async def query(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        """realtime answers open orders and recent closed ones by orderLinkId; history covers
        older closed ones. Raw fields, so quantities stay exact decimals."""
        market = self._market(symbol)
        request = {"category": self._category(), "symbol": symbol,
                   "orderLinkId": client_order_id}
        for call in ("privateGetV5OrderRealtime", "privateGetV5OrderHistory"):
            answer = await self._call(call, getattr(self.client, call)(request))
            rows = (answer.get("result") or {}).get("list") or []
            if rows:
                return self._raw_order(symbol, rows[0], market)
        return None

    def _raw_order(self, symbol: str, row: dict[str, Any],
                   market: dict[str, Any]) -> VenueOrder:
        status = {"New": orders.OPEN, "Created": orders.OPEN, "Untriggered": orders.OPEN,
                  "PartiallyFilled": orders.PARTIALLY_FILLED, "Filled": orders.FILLED,
                  "Cancelled": orders.CANCELED, "PartiallyFilledCanceled": orders.CANCELED,
                  "Deactivated": orders.CANCELED, "Rejected": orders.REJECTED,
                  "Expired": orders.EXPIRED}.get(str(row.get("orderStatus")), orders.OPEN)
        filled = dec(str(row.get("cumExecQty") or "0"), "cumExecQty")
        avg_raw = str(row.get("avgPrice") or "")
        average = dec(avg_raw, "avgPrice") if avg_raw not in ("", "0") else None
        reason = str(row.get("rejectReason") or "")
        return VenueOrder(str(row.get("orderLinkId") or ""), str(row.get("orderId") or ""),
                          symbol, status, filled, average,
                          "" if reason in ("EC_NoError", "") else reason)

    async def cancel(self, symbol: str, client_order_id: str) -> None:
        """By orderLinkId (ccxt's cancel_order would send orderId=None along)."""
        self._market(symbol)
        await self._call("privatePostV5OrderCancel", self.client.privatePostV5OrderCancel(
            {"category": self._category(), "symbol": symbol, "orderLinkId": client_order_id}))

    async def fills(self, symbol: str, since_ms: int) -> list[VenueFill]:
        market = self._market(symbol)
        trades = await self._call("fetch_my_trades", self.client.fetch_my_trades(
            market["symbol"], since_ms, 100, {"paginate": True}))
        out = [self._fill(symbol, t) for t in trades]
        out.sort(key=lambda f: (f.time_ms, f.exec_id))
        return out

    async def order_fills(self, symbol: str, client_order_id: str) -> list[VenueFill]:
        """Every execution of one order (Bybit keeps 7 days without a start time)."""
        market = self._market(symbol)
        trades = await self._call("fetch_my_trades", self.client.fetch_my_trades(
            market["symbol"], None, 100, {"orderLinkId": client_order_id}))
        out = [self._fill(symbol, t) for t in trades]
        out.sort(key=lambda f: (f.time_ms, f.exec_id))
        return out

    def _fill(self, symbol: str, trade: dict[str, Any]) -> VenueFill:
        info = trade.get("info") or {}
        fee = trade.get("fee") or {}
        return VenueFill(
            exec_id=str(info.get("execId") or trade.get("id")),
            client_order_id=str(info.get("orderLinkId") or ""),
            exchange_order_id=str(info.get("orderId") or trade.get("order") or ""),
            symbol=symbol, side=str(trade.get("side")),
            quantity=dec(str(info.get("execQty") or trade.get("amount")), "execQty"),
            price=dec(str(info.get("execPrice") or trade.get("price")), "execPrice"),
            fee=dec(str(info.get("execFee") or fee.get("cost") or 0), "execFee"),
            fee_currency=str(fee.get("currency") or self._market(symbol).get("settle") or ""),
            maker=str(info.get("isMaker")).lower() == "true"
            or trade.get("takerOrMaker") == "maker",
            time_ms=int(info.get("execTime") or trade.get("timestamp") or 0),
            protective=str(info.get("createType", "")).startswith(PROTECTIVE_CREATE)
            or str(info.get("stopOrderType", "")) in PROTECTIVE_STOP_TYPES)


class BinanceVenue(CcxtVenue):
    """Binance USDT-M futures: newClientOrderId is the client id, -4116 its duplicate, -2013
    "no such order". Its trades carry the exchange's order id only: each is joined to its
    client id through the orders this connector has seen (an unseen one is queried once).
    Binance has no stop-loss / take-profit riding on an order (they are separate conditional
    orders), so `attaches_stops` is False and the handler refuses orders that carry them."""

    ccxt_id = "binanceusdm"
    duplicate_codes = frozenset({"-4116"})
    unchanged_codes = frozenset({"-4059"})
    ambiguous_codes = frozenset({"-1000", "-1006", "-1007"})  # "execution status unknown"
    attaches_stops = False
    not_found = "-2013"

    def __init__(self, settings: ExecutionSettings, exchange: str) -> None:
        super().__init__(settings, exchange)
        self._client_ids: dict[str, str] = {}  # exchange order id -> client order id

    async def submit(self, request: OrderRequest) -> VenueOrder:
        order = await super().submit(request)
        self._client_ids[order.exchange_order_id] = request.client_order_id
        return order

    async def query(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        market = self._market(symbol)
        try:
            order = await self._call("fetch_order", self.client.fetch_order(
                None, market["symbol"], {"origClientOrderId": client_order_id}))
        except Rejected as exc:
            if exc.code == self.not_found:
                return None
            raise
        found = self._order(symbol, order)
        self._client_ids[found.exchange_order_id] = found.client_order_id
        return found

    async def cancel(self, symbol: str, client_order_id: str) -> None:
        market = self._market(symbol)
        await self._call("cancel_order", self.client.cancel_order(
            None, market["symbol"], {"origClientOrderId": client_order_id}))

    async def _client_id(self, symbol: str, order_id: str) -> str:
        known = self._client_ids.get(order_id)
        if known is None:
            order = await self._call("fetch_order", self.client.fetch_order(
                order_id, self._market(symbol)["symbol"]))
            known = self._client_ids[order_id] = str(order.get("clientOrderId") or "")
        return known

    async def fills(self, symbol: str, since_ms: int) -> list[VenueFill]:
        market = self._market(symbol)
        trades = await self._call("fetch_my_trades", self.client.fetch_my_trades(
            market["symbol"], since_ms, 1000))
        return await self._fills(symbol, trades)

    async def order_fills(self, symbol: str, client_order_id: str) -> list[VenueFill]:
        found = await self.query(symbol, client_order_id)
        if found is None:
            return []
        trades = await self._call("fetch_my_trades", self.client.fetch_my_trades(
            self._market(symbol)["symbol"], None, 1000, {"orderId": found.exchange_order_id}))
        return await self._fills(symbol, trades)

    async def _fills(self, symbol: str, trades: list[dict[str, Any]]) -> list[VenueFill]:
        out = []
        for trade in trades:
            info = trade.get("info") or {}
            order_id = str(info.get("orderId") or trade.get("order") or "")
            fee = trade.get("fee") or {}
            out.append(VenueFill(
                exec_id=str(info.get("id") or trade.get("id")),
                client_order_id=await self._client_id(symbol, order_id),
                exchange_order_id=order_id, symbol=symbol, side=str(trade.get("side")),
                quantity=dec(str(info.get("qty") or trade.get("amount")), "qty"),
                price=dec(str(info.get("price") or trade.get("price")), "price"),
                fee=dec(str(info.get("commission") or fee.get("cost") or 0), "commission"),
                fee_currency=str(info.get("commissionAsset") or fee.get("currency") or ""),
                maker=str(info.get("maker")).lower() == "true"
                or trade.get("takerOrMaker") == "maker",
                time_ms=int(info.get("time") or trade.get("timestamp") or 0)))
        out.sort(key=lambda f: (f.time_ms, f.exec_id))
        return out


VENUES: dict[str, type[CcxtVenue]] = {"bybit": BybitVenue, "binance": BinanceVenue}


def venue_for(settings: ExecutionSettings, exchange: str) -> CcxtVenue:
    cls = VENUES.get(exchange)
    if cls is None:
        raise ValueError(f"MERIDIAN_EXCHANGE={exchange!r}: live execution supports "
                         f"{sorted(VENUES)}")
    if cls is BinanceVenue and settings.market_type != "linear":
        raise ValueError("MERIDIAN_EXECUTION_MARKET_TYPE=spot: live Binance trades USDT-M "
                         "futures (linear) only")
    return cls(settings, exchange)
