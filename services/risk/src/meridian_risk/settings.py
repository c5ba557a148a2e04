"""Risk gate settings (prefix MERIDIAN_RISK_). Money values are exact decimals."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RiskSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_RISK_", extra="forbid", frozen=True)

    order_notional: Decimal = Field(Decimal("1000"), gt=0,
                                    description="Quote-currency value of one entry (fixed sizing).")
    max_position_notional: Decimal = Field(Decimal("5000"), gt=0,
                                           description="Largest position value per symbol.")
    min_order_notional: Decimal = Field(Decimal("10"), ge=0,
                                        description="Smallest order value the exchange accepts.")
    quantity_step: Decimal = Field(Decimal("0.00001"), gt=0,
                                   description="Lot step orders are rounded down to.")

    @model_validator(mode="after")
    def _consistent(self) -> RiskSettings:
        if self.min_order_notional > self.order_notional:
            raise ValueError(f"min_order_notional ({self.min_order_notional}) exceeds "
                             f"order_notional ({self.order_notional})")
        return self
