"""What a venue name means: the one place that maps (exchange, market type) to the name used in
keys ("exchange:symbol") and tables, and back.

A spot market keeps the ccxt id ("binance"); any other market type gets it as a suffix
("binance-linear"), so a spot and a perpetual market of the same symbol at the same exchange
never share a key, a partition or a row. Services that treat the two differently (the ledger
pays funding on perpetuals only) ask here instead of parsing names themselves, so the naming
rule cannot drift between the writer (ingest) and the readers.
"""

from __future__ import annotations

SPOT = "spot"
LINEAR = "linear"  # USDT-margined perpetual swaps
_PERPETUAL_SUFFIX = f"-{LINEAR}"


def venue(exchange: str, market_type: str) -> str:
    """The venue name of a market: the ccxt id for spot, `<id>-<market type>` otherwise."""
    if market_type == SPOT:
        return exchange
    return f"{exchange}-{market_type}"


def market_type(venue_name: str) -> str:
    """The market type a venue name stands for: "linear" for a `-linear` name, else "spot"
    (the only two market types ingest writes)."""
    return LINEAR if venue_name.endswith(_PERPETUAL_SUFFIX) else SPOT


def is_perpetual(venue_name: str) -> bool:
    """Whether the venue trades perpetual swaps, i.e. settles funding."""
    return market_type(venue_name) == LINEAR


def is_perpetual_key(key: str) -> bool:
    """Whether an "exchange:symbol" key names a perpetual market (exchange = before the first
    ':', so a symbol with a ':' in it cannot change the answer)."""
    exchange, _, _ = key.partition(":")
    return is_perpetual(exchange)
