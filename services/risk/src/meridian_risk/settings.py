"""Risk gate settings (prefix MERIDIAN_RISK_). Money values are exact decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meridian_common.margin import MAX_LEVERAGE
from meridian_common.sizing import MarketRules

SizingMethod = Literal["fixed_notional", "fixed_fraction", "confidence_scaled",
                       "volatility_adjusted"]
MarginMode = Literal["isolated", "cross"]


class RiskSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_RISK_", extra="forbid", frozen=True)

    # ---------------------------------------------------------------- sizing
    sizing: SizingMethod = Field(
        "fixed_notional",
        description="How entries are sized: fixed_notional (order_notional per entry), "
                    "fixed_fraction (sizing_fraction of initial_capital x leverage), "
                    "confidence_scaled (sizing_fraction x signal confidence, capped at "
                    "sizing_max_fraction) or volatility_adjusted (lose risk_per_trade of "
                    "initial_capital at the signal's stop_loss).")
    order_notional: Decimal = Field(Decimal("1000"), gt=0,
                                    description="Quote-currency value of one entry (fixed sizing).")
    initial_capital: Decimal = Field(
        Decimal("10000"), gt=0,
        description="Equity the sizing methods and the margin rule work from (quote currency). "
                    "Realized PnL is not added yet: the gate does not consume fills.")
    sizing_fraction: Decimal = Field(
        Decimal("0.1"), gt=0, le=1,
        description="Fraction of equity per entry (fixed_fraction; confidence_scaled base).")
    sizing_max_fraction: Decimal = Field(
        Decimal("0.25"), gt=0, le=1,
        description="Cap on the confidence-scaled fraction of equity per entry.")
    risk_per_trade: Decimal = Field(
        Decimal("0.01"), gt=0, le=1,
        description="Fraction of equity lost if the stop is hit (volatility_adjusted).")

    # ---------------------------------------------------------------- margin
    leverage: Decimal = Field(Decimal("1"), ge=1, le=MAX_LEVERAGE,
                              description="Leverage orders are placed at (1 = unlevered).")
    margin_mode: MarginMode = Field("isolated",
                                    description="Margin mode for liquidation prices: isolated "
                                                "or cross.")
    maintenance_margin_rate: Decimal = Field(
        Decimal("0.005"), ge=0, lt=1,
        description="Maintenance margin rate (single tier) for liquidation prices.")

    # ---------------------------------------------------------------- limits
    max_order_notional: Decimal = Field(
        Decimal("10000"), gt=0,
        description="Largest value of a single order that opens or adds (exits are exempt).")
    max_position_notional: Decimal = Field(Decimal("5000"), gt=0,
                                           description="Largest position value per symbol.")
    max_portfolio_notional: Decimal = Field(
        Decimal("50000"), gt=0,
        description="Largest sum of position values over all symbols (exits are exempt).")
    max_open_positions: int = Field(
        20, ge=1, description="Most symbols with an open position at once (exits are exempt).")
    require_stop_loss: bool = Field(
        False, description="Reject entries whose signal carries no usable stop_loss.")

    # ---------------------------------------------------------------- strategy
    max_trades_per_day: int = Field(
        1000, ge=0,
        description="Most entries approved per strategy per UTC day of event time "
                    "(0 = unlimited; exits are exempt).")
    cooldown_losses: int = Field(
        0, ge=0,
        description="Consecutive losing closed trades of a strategy after which its entries "
                    "are refused for cooldown_hours (0 = off).")
    cooldown_hours: Decimal = Field(
        Decimal("24"), gt=0,
        description="Event-time hours a strategy's entries are refused after its last loss "
                    "once cooldown_losses is reached.")
    strategy_max_drawdown: Decimal = Field(
        Decimal("1"), gt=0, le=1,
        description="Largest drawdown (fraction of its peak) of a strategy's realized PnL "
                    "curve, from initial_capital, before its entries are refused (1 = off). "
                    "PnL is the gate's own estimate at reference prices, not fills.")

    # ---------------------------------------------------------------- exchange precision
    min_order_notional: Decimal = Field(Decimal("10"), ge=0,
                                        description="Smallest order value the exchange accepts.")
    quantity_step: Decimal = Field(Decimal("0.00001"), gt=0,
                                   description="Lot step orders are rounded down to.")
    price_tick: Decimal = Field(Decimal("0.00000001"), gt=0,
                                description="Price step the exchange accepts (reference "
                                            "prices must be multiples of it).")

    @model_validator(mode="after")
    def _consistent(self) -> RiskSettings:
        if self.sizing == "fixed_notional" and self.min_order_notional > self.order_notional:
            raise ValueError(f"min_order_notional ({self.min_order_notional}) exceeds "
                             f"order_notional ({self.order_notional})")
        if self.maintenance_margin_rate * self.leverage >= 1:
            raise ValueError(f"maintenance_margin_rate ({self.maintenance_margin_rate}) x "
                             f"leverage ({self.leverage}) must be below 1: positions would be "
                             "liquidated at entry")
        if self.max_position_notional > self.max_portfolio_notional:
            raise ValueError(f"max_position_notional ({self.max_position_notional}) exceeds "
                             f"max_portfolio_notional ({self.max_portfolio_notional})")
        if self.min_order_notional > self.max_order_notional:
            raise ValueError(f"min_order_notional ({self.min_order_notional}) exceeds "
                             f"max_order_notional ({self.max_order_notional})")
        return self

    def market_rules(self) -> MarketRules:
        """The exchange's precision as the gate knows it (min_qty: one lot)."""
        return MarketRules(tick=self.price_tick, lot=self.quantity_step,
                           min_qty=self.quantity_step, min_notional=self.min_order_notional,
                           max_leverage=MAX_LEVERAGE)
