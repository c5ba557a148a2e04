"""What differs between exchanges, in one place per exchange (one contract for all of them).

Everything else goes through ccxt's unified API. An exchange without a profile still works with
the generic one: conservative page sizes and ccxt's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Profile:
    ccxt_id: str
    # Most candles / funding rows one REST request may return (the exchange's documented max).
    ohlcv_page: int = 500
    funding_page: int = 100
    market_types: tuple[str, ...] = ("spot", "linear")
    # ccxt options per market type: load only the markets we trade (fewer, cheaper requests).
    type_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options(self, market_type: str) -> dict[str, Any]:
        return dict(self.type_options.get(market_type, {}))


PROFILES: dict[str, Profile] = {
    "bybit": Profile(
        "bybit", ohlcv_page=1000, funding_page=200,
        type_options={
            "spot": {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"},
            "linear": {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap",
                       "defaultSubType": "linear"},
        }),
    "binance": Profile(
        "binance", ohlcv_page=1000, funding_page=1000,
        type_options={
            "spot": {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot",
                     "fetchCurrencies": False},
            "linear": {"fetchMarkets": {"types": ["linear"]}, "defaultType": "future",
                       "fetchCurrencies": False},
        }),
}


def profile_for(ccxt_id: str) -> Profile:
    return PROFILES.get(ccxt_id, Profile(ccxt_id))
