"""What a venue front-end provides to the server, and small helpers both venues share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import lru_cache

from aiohttp import web

from meridian_fake_exchange.context import Context
from meridian_fake_exchange.ws import PushSession

_HTML_ERRORS = {
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ParamError(Exception):
    """A request parameter the venue would reject; each venue renders it its own way."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class Venue(ABC):
    """One exchange: its REST hosts, WebSocket hosts, and how it answers faults."""

    rest_hosts: frozenset[str]
    ws_hosts: frozenset[str]

    @abstractmethod
    async def rest(self, ctx: Context, host: str, path: str,
                   query: Mapping[str, str]) -> tuple[web.Response, bool]:
        """Answer one GET; the flag says whether the answer is an exchange error."""

    @abstractmethod
    def rate_limited(self, ctx: Context, retry_after_s: int) -> web.Response:
        """The venue's own "too many requests" answer."""

    @abstractmethod
    def session(self, ctx: Context, host: str, path: str, request: web.Request,
                ws: web.WebSocketResponse) -> PushSession:
        """A push session for a WebSocket on `host`/`path` (call only if `ws_path_ok`)."""

    @abstractmethod
    def ws_path_ok(self, host: str, path: str) -> bool:
        """Whether the venue has a WebSocket endpoint at this path (else: 404 handshake)."""

    def server_error(self, status: int) -> web.Response:
        """A gateway error page, what a load balancer in front of either venue returns."""
        reason = _HTML_ERRORS.get(status, "Error")
        body = f"<html><head><title>{status} {reason}</title></head><body><center><h1>" \
               f"{status} {reason}</h1></center></body></html>"
        return web.Response(status=status, text=body, content_type="text/html")


def int_param(query: Mapping[str, str], name: str, error: ParamError) -> int | None:
    """An optional integer query parameter; `error` if present but not an integer."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise error from None


def bybit_interval(timeframe: str) -> str:
    """ccxt notation -> Bybit v5 interval: '1m' -> '1', '1h' -> '60', '1d' -> 'D'."""
    number, unit = int(timeframe[:-1]), timeframe[-1]
    if unit == "m":
        return str(number)
    if unit == "h":
        return str(number * 60)
    if unit in ("d", "w", "M") and number == 1:
        return {"d": "D", "w": "W", "M": "M"}[unit]
    raise ValueError(f"Bybit has no interval for timeframe {timeframe!r}")


@lru_cache(maxsize=262_144)
def quote_volume(high: str, low: str, close: str, volume: str) -> str:
    """Turnover in quote currency, estimated as volume * typical price (the files do not
    carry it; clients use base volume). Memoized: the same closed candles are served often."""
    typical = (float(high) + float(low) + float(close)) / 3.0
    return f"{float(volume) * typical:.8f}"


WEEK_MS = 7 * 24 * 3_600_000


def history_window(start: int | None, end: int | None, now: int) -> tuple[int, int]:
    """[start, end] of a trade/order history query as both venues default it: the last 7 days,
    or 7 days from whichever bound is given. Each venue checks the span with its own error."""
    if start is None and end is None:
        end = now
    if end is None:
        assert start is not None
        end = start + WEEK_MS
    if start is None:
        start = end - WEEK_MS
    return start, end
