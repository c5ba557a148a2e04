"""Point a ccxt exchange at another host (a local fake exchange, a proxy, a testnet mirror).

Every API URL `scheme://host[:port]/path` becomes `<base>/<host>/path`, with `wss` mapped to `ws`
and `https` to `http` when the base is plain http. Keeping the original host as the first path
segment lets one server tell `api.binance.com` from `fapi.binance.com` without guessing, and
touches only ccxt's public `urls` attribute, never its internals.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def _reroute(url: str, base: str, hostname: str | None) -> str:
    if hostname:
        url = url.replace("{hostname}", hostname)
    parts = urlsplit(url)
    target = urlsplit(base.rstrip("/"))
    secure = target.scheme == "https"
    if parts.scheme in ("ws", "wss"):
        scheme = "wss" if secure else "ws"
    else:
        scheme = "https" if secure else "http"
    return f"{scheme}://{target.netloc}{target.path}/{parts.hostname}{parts.path}"


def _walk(node: Any, base: str, hostname: str | None) -> Any:
    if isinstance(node, str):
        return _reroute(node, base, hostname) if "://" in node else node
    if isinstance(node, dict):
        return {key: _walk(value, base, hostname) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(value, base, hostname) for value in node]
    return node


def reroute_urls(exchange: Any, base_url: str, *, keep_error_maps: bool = True) -> None:
    """Rewrite `exchange.urls['api']` in place so every request goes to `base_url`.

    ccxt's binance picks its per-market error maps (USDT-M: -2019 InsufficientFunds, -4116
    duplicate client id, ...) by the request URL starting with `https://fapi.binance.com/`;
    rerouted, those codes would fall through to a bare ExchangeError. With `keep_error_maps`
    (the default) that lookup is given the original URL back; exchanges without per-URL maps
    (bybit) are untouched."""
    hostname = getattr(exchange, "hostname", None)
    exchange.urls = dict(exchange.urls)
    exchange.urls["api"] = _walk(exchange.urls["api"], base_url, hostname)
    original = getattr(exchange, "get_exceptions_by_url", None)
    if keep_error_maps and original is not None:
        prefix = base_url.rstrip("/") + "/"

        def by_original_url(url: str | None, exact_or_broad: str) -> Any:
            if url is not None and url.startswith(prefix):
                url = "https://" + url[len(prefix):]
            return original(url, exact_or_broad)

        exchange.get_exceptions_by_url = by_original_url
