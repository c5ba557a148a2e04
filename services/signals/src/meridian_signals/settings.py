"""Signals service settings (prefix MERIDIAN_SIGNALS_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SignalsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_SIGNALS_", extra="forbid", frozen=True)

    strategy: str = Field("ema_cross", pattern=r"^ema_cross$",
                          description="Primary rule set (only 'ema_cross' for now).")
    rsi_overbought: float = Field(70.0, gt=50, le=100,
                                  description="No long entry when RSI is at or above this.")
    allow_short: bool = Field(False, description="Short on a downward cross instead of closing.")
