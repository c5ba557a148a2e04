"""Execution settings (prefix MERIDIAN_EXECUTION_). Exchange keys are secrets."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExecutionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_EXECUTION_", extra="forbid",
                                      frozen=True)

    mode: Literal["paper"] = Field("paper", description="'paper' (live trading comes later).")
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
