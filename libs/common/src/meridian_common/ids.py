"""Deterministic identifiers.

Ids are derived from their inputs so that a replay reproduces every id bit for bit, and so that a
retried message or a restarted service produces the same id again (which is what lets downstream
unique keys drop duplicates).
"""

from __future__ import annotations

import hashlib

_CLIENT_ORDER_ID_PREFIX = "mrd-"


def digest(*parts: object, size: int = 16) -> str:
    """Hex digest of the parts, joined unambiguously."""
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        data = str(part).encode()
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()


def candle_id(exchange: str, symbol: str, timeframe: str, open_time_ms: int, revision: int) -> str:
    """Readable id of a candle revision."""
    return f"{exchange}:{symbol}:{timeframe}:{open_time_ms}:r{revision}"


def client_order_id(signal_id: str) -> str:
    """Client order id for the order a signal leads to.

    At most 36 characters of [a-z0-9-], which both Bybit (orderLinkId) and Binance
    (newClientOrderId) accept, and the same for the same signal every time, so a resend after a
    crash is recognised by the exchange and by the ledger instead of doubling the order.
    """
    return _CLIENT_ORDER_ID_PREFIX + digest("order", signal_id, size=16)


def fill_id(client_order_id: str, sequence: int) -> str:
    """Id of the n-th fill of an order (1-based)."""
    return f"{client_order_id}:f{sequence}"
