"""Execution settings (prefix MERIDIAN_EXECUTION_). Exchange keys are secrets."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExecutionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_EXECUTION_", extra="forbid",
                                      frozen=True)

    mode: Literal["paper", "live"] = Field(
        "paper", description="'paper' fills at candle prices; 'live' trades on the exchange "
        "named by MERIDIAN_EXCHANGE through ccxt.")
    taker_fee: Decimal = Field(Decimal("0.001"), ge=-0.01, le=0.01,
                               description="Taker fee rate (0.001 = 10 bps).")
    maker_fee: Decimal = Field(Decimal("0.001"), ge=-0.01, le=0.01,
                               description="Maker fee rate.")
    slippage_bps: Decimal = Field(Decimal("0"), ge=0, le=1000,
                                  description="Paper market-order slippage in basis points.")
    candle_buffer: int = Field(50_000, ge=10,
                               description="Candles kept per symbol for orders that arrive late.")
    fee_currency: str = Field("USDT", min_length=1, description="Currency fees are charged in.")
    api_key: SecretStr | None = Field(None, description="Exchange API key (live mode). Secret.")
    api_secret: SecretStr | None = Field(None, description="Exchange API secret. Secret.")
    # -- live mode --
    symbols: str = Field("", pattern=r"^[A-Z0-9,]*$",
                         description="Live: the exchange symbols traded, comma-separated "
                         "(BTCUSDT,ETHUSDT); their fills, positions and open orders are "
                         "reconciled and their fill watermarks advanced.")
    market_type: Literal["linear", "spot"] = Field(
        "linear", description="Live: USDT linear perpetuals or spot. Also the venue name of "
        "its orders and fills, as ingest names the market: <exchange>-linear:SYMBOL or "
        "<exchange>:SYMBOL.")
    position_mode: Literal["oneway", "hedge"] = Field(
        "oneway", description="Live: the account's position mode (hedge: positionIdx 1/2).")
    leverage: Decimal | None = Field(
        None, ge=1, le=125, description="Live: the exchange leverage set on every traded "
        "symbol at start (unset: the account's own).")
    exchange_url: str = Field("", description="Live: send every request to this base URL "
                              "instead of the exchange (a local fake exchange, a proxy).")
    request_timeout_ms: int = Field(10_000, ge=100, le=120_000,
                                    description="Live: ccxt request timeout.")
    poll_s: float = Field(1.0, gt=0, le=60,
                          description="Live: seconds between exchange polls for fills and "
                          "order states while no order arrives.")
    resend_after_s: float = Field(30.0, ge=0, le=3600,
                                  description="Live: an UNKNOWN order not found by its client "
                                  "id this long after the submit is sent again (same id).")
    reconcile_s: float = Field(60.0, gt=0, le=86_400,
                               description="Live: seconds between reconciliations of open "
                               "orders, positions and fills with what was published.")
    markets_refresh_s: float = Field(3600.0, gt=0, le=86_400,
                                     description="Live: markets and clock offset reload.")
    max_retries: int = Field(5, ge=0, le=100,
                             description="Live: retries of a submit the exchange answered with "
                             "a retryable error (rate limit, clock skew) before rejecting it.")
    fill_lag_ms: int = Field(2_000, ge=0, le=600_000,
                             description="Live: the fill watermark trails the exchange time "
                             "of the last complete fills poll by this much.")

    @model_validator(mode="after")
    def _live_needs(self) -> ExecutionSettings:
        if self.mode == "live":
            missing = [name for name, value in (
                ("MERIDIAN_EXECUTION_SYMBOLS", self.symbols),
                ("MERIDIAN_EXECUTION_API_KEY", self.api_key),
                ("MERIDIAN_EXECUTION_API_SECRET", self.api_secret)) if not value]
            if missing:
                raise ValueError(f"MERIDIAN_EXECUTION_MODE=live needs {', '.join(missing)}")
        return self

    def symbol_list(self) -> tuple[str, ...]:
        return tuple(s for s in self.symbols.split(",") if s)
