"""Features service settings (prefix MERIDIAN_FEATURES_)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeaturesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_FEATURES_", extra="forbid", frozen=True)

    ema_fast: int = Field(20, ge=2, le=1000, description="Fast EMA period (candles).")
    ema_slow: int = Field(50, ge=3, le=2000, description="Slow EMA period (candles).")
    rsi_period: int = Field(14, ge=2, le=500, description="RSI period (candles).")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> FeaturesSettings:
        if self.ema_fast >= self.ema_slow:
            raise ValueError(
                f"ema_fast ({self.ema_fast}) must be smaller than ema_slow ({self.ema_slow})")
        return self

    @property
    def version(self) -> str:
        return f"v1:ema_fast={self.ema_fast},ema_slow={self.ema_slow},rsi={self.rsi_period}"
