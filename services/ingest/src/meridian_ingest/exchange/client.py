"""Market data from one exchange through ccxt's async client: the only module that calls ccxt.

Values stay decimal strings end to end: ccxt is told to keep numbers as the strings the exchange
sent (`number = str`), so no price ever passes through a float.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import ccxt
import ccxt.pro

from meridian_common.ccxt_urls import reroute_urls
from meridian_common.marketdata import RawCandle, timeframe_ms
from meridian_ingest.exchange.profiles import Profile, profile_for
from meridian_ingest.exchange.retry import Budget, ExchangeCallError, RetryPolicy, RetryStats, call
from meridian_ingest.ingest_metrics import IngestMetrics
from meridian_ingest.settings import IngestSettings

log = logging.getLogger(__name__)


# What a broken stream raises: ccxt's network family, a client closed under a pending watch, and
# transport errors that escape ccxt while it (re)subscribes on a connection being torn down.
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    ccxt.NetworkError, ccxt.ExchangeClosedByUser, aiohttp.ClientError, OSError)


class ConfigurationError(ValueError):
    """The exchange, symbol, market type or timeframe asked for does not exist there."""


def _num(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float | int):
        return repr(value)
    raise ValueError(f"expected a number, got {value!r}")


def _raw(row: list[Any]) -> RawCandle:
    return RawCandle(int(row[0]), _num(row[1]), _num(row[2]), _num(row[3]), _num(row[4]),
                     _num(row[5]))


class MarketData:
    """REST and stream access for one exchange and market type."""

    def __init__(self, exchange_id: str, settings: IngestSettings,
                 metrics: IngestMetrics | None = None) -> None:
        if exchange_id not in ccxt.pro.exchanges:
            raise ConfigurationError(f"MERIDIAN_EXCHANGE={exchange_id!r} is not a ccxt.pro "
                                     "exchange id (e.g. bybit, binance)")
        self.exchange_id = exchange_id
        self.settings = settings
        self.profile: Profile = profile_for(exchange_id)
        if settings.market_type not in self.profile.market_types:
            raise ConfigurationError(f"MERIDIAN_INGEST_MARKET_TYPE={settings.market_type!r} "
                                     f"is not supported for {exchange_id}")
        self.policy = RetryPolicy(settings.retries, settings.backoff_s, settings.backoff_max_s)
        self.budget = Budget(settings.rate_budget)
        # failed calls reach the metrics' exchange-error counter (a no-op without metrics)
        self.stats = RetryStats(metrics.exchange_error if metrics is not None else None)
        self.rest = self._new_client()
        self.stream = self._new_client()
        self._symbols: dict[str, str] = {}

    def _new_client(self) -> Any:
        config: dict[str, Any] = {
            "enableRateLimit": self.settings.ccxt_rate_limit,
            "options": self.profile.options(self.settings.market_type),
        }
        if self.settings.api_key is not None:
            config["apiKey"] = self.settings.api_key.get_secret_value()
        if self.settings.api_secret is not None:
            config["secret"] = self.settings.api_secret.get_secret_value()
        client = getattr(ccxt.pro, self.exchange_id)(config)
        client.number = str
        # Market data needs markets, not currency metadata; with credentials set, some exchanges
        # would fetch it from a private endpoint on every load_markets.
        client.has = {**client.has, "fetchCurrencies": False}
        if self.settings.api_base_url:
            reroute_urls(client, self.settings.api_base_url)
        return client

    async def _call(self, what: str, fn: Any) -> Any:
        return await call(what, fn, self.policy, self.budget, self.stats)

    async def open(self, symbols: tuple[str, ...], timeframe: str) -> None:
        """Load markets and check every symbol and the timeframe before any data moves."""
        await self._call(f"{self.exchange_id} load_markets", self.rest.load_markets)
        self.stream.set_markets(self.rest.markets, self.rest.currencies)
        offered = getattr(self.rest, "timeframes", None) or {}
        if offered and timeframe not in offered:
            raise ConfigurationError(
                f"MERIDIAN_INGEST_TIMEFRAME={timeframe!r} is not offered by {self.exchange_id} "
                f"(offered: {', '.join(offered)})")
        for symbol in symbols:
            self._symbols[symbol] = self._unified(symbol)

    def _unified(self, symbol: str) -> str:
        want = self.settings.market_type
        by_id = self.rest.markets_by_id or {}
        for market in by_id.get(symbol, []):
            if market.get(want):  # ccxt flags each market 'spot' / 'linear'
                return str(market["symbol"])
        raise ConfigurationError(
            f"symbol {symbol!r} is not a {want} market on {self.exchange_id} "
            "(MERIDIAN_INGEST_SYMBOLS takes exchange ids such as BTCUSDT)")

    def unified(self, symbol: str) -> str:
        return self._symbols.get(symbol) or self._unified(symbol)

    async def server_time(self) -> int:
        return int(await self._call(f"{self.exchange_id} fetch_time", self.rest.fetch_time))

    async def candles(self, symbol: str, timeframe: str, since_ms: int,
                      limit: int | None = None) -> list[RawCandle]:
        """Candles with open time in [since, since + limit * tf), ascending, forming one included.

        The window is explicit (`until`), so a run of missing candles at the exchange is an
        empty window, not the end of the history.
        """
        page = min(limit or self.profile.ohlcv_page, self.profile.ohlcv_page)
        until = since_ms + page * timeframe_ms(timeframe) - 1
        unified = self.unified(symbol)
        rows = await self._call(
            f"{self.exchange_id} fetch_ohlcv {symbol} {timeframe} since={since_ms}",
            lambda: self.rest.fetch_ohlcv(unified, timeframe, since_ms, page, {"until": until}))
        out = sorted((_raw(r) for r in rows), key=lambda c: c.open_time_ms)
        return [c for c in out if since_ms <= c.open_time_ms <= until]

    async def funding(self, symbol: str, since_ms: int,
                      limit: int | None = None) -> list[tuple[int, str]]:
        """Funding settlements at or after `since`, ascending: (settlement ms, rate string)."""
        page = min(limit or self.profile.funding_page, self.profile.funding_page)
        unified = self.unified(symbol)
        rows = await self._call(
            f"{self.exchange_id} fetch_funding_rate_history {symbol} since={since_ms}",
            lambda: self.rest.fetch_funding_rate_history(unified, since_ms, page))
        out = sorted((int(r["timestamp"]), _num(r["fundingRate"])) for r in rows)
        return [(t, rate) for t, rate in out if t >= since_ms]

    async def watch(self, symbol: str, timeframe: str) -> list[RawCandle]:
        """The next stream updates (forming and closed candles alike, as the exchange sends)."""
        rows = await self.stream.watch_ohlcv(self.unified(symbol), timeframe)
        return [_raw(r) for r in rows]

    async def reset_stream(self) -> None:
        """Drop every stream connection and start over with a fresh client (markets kept)."""
        old, self.stream = self.stream, self._new_client()
        self.stream.set_markets(self.rest.markets, self.rest.currencies)
        try:
            await old.close()
        except Exception:  # a broken connection may fail to close; it is dropped either way
            log.debug("closing the old stream client failed", exc_info=True)

    async def close(self) -> None:
        for client in (self.stream, self.rest):
            try:
                await client.close()
            except Exception:
                log.debug("closing a ccxt client failed", exc_info=True)


__all__ = ["STREAM_ERRORS", "ConfigurationError", "ExchangeCallError", "MarketData"]
