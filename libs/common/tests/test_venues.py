"""Venue names: spot keeps the exchange id, other market types get a suffix, and the market
type and perpetual-ness read back from a name or an "exchange:symbol" key."""

from __future__ import annotations

import pytest

from meridian_common import topics
from meridian_common.venues import is_perpetual, is_perpetual_key, market_type, venue


def test_spot_keeps_the_exchange_id_others_get_a_suffix() -> None:
    assert venue("binance", "spot") == "binance"
    assert venue("binance", "linear") == "binance-linear"
    assert venue("bybit", "linear") == "bybit-linear"


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx", "gate-io"])
@pytest.mark.parametrize("kind", ["spot", "linear"])
def test_market_type_reads_back_what_venue_wrote(exchange: str, kind: str) -> None:
    assert market_type(venue(exchange, kind)) == kind
    assert is_perpetual(venue(exchange, kind)) is (kind == "linear")


@pytest.mark.parametrize(("name", "kind"), [
    ("binance", "spot"), ("binance-linear", "linear"), ("linear", "spot"),
    ("binance-linearx", "spot"), ("binance_linear", "spot"), ("", "spot")])
def test_market_type_needs_the_exact_suffix(name: str, kind: str) -> None:
    assert market_type(name) == kind


@pytest.mark.parametrize(("key", "perpetual"), [
    (topics.market_key("binance", "BTCUSDT"), False),
    (topics.market_key("binance-linear", "BTCUSDT"), True),
    ("bybit-linear:ETHUSDT", True),
    ("binance:BTC-linear", False),  # the symbol's text does not count
    ("binance:X:y-linear", False),  # the exchange ends at the first ':'
    ("binance-linear:X:y", True),
    ("binance-linear", True),  # no symbol: the whole text is the exchange
])
def test_is_perpetual_key_looks_at_the_exchange_part_only(key: str, perpetual: bool) -> None:
    assert is_perpetual_key(key) is perpetual
