"""Risk gate settings (prefix MERIDIAN_RISK_). Money values are exact decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meridian_common.margin import MAX_LEVERAGE
from meridian_common.sizing import MarketRules

SizingMethod = Literal["fixed_notional", "fixed_fraction", "confidence_scaled",
                       "volatility_adjusted", "fractional_kelly"]
MarginMode = Literal["isolated", "cross"]


class RiskSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_RISK_", extra="forbid", frozen=True)

    # ---------------------------------------------------------------- sizing
    sizing: SizingMethod = Field(
        "fixed_notional",
        description="How entries are sized: fixed_notional (order_notional per entry), "
                    "fixed_fraction (sizing_fraction of initial_capital x leverage), "
                    "confidence_scaled (sizing_fraction x signal confidence, capped at "
                    "sizing_max_fraction), volatility_adjusted (lose risk_per_trade of "
                    "initial_capital at the signal's stop_loss) or fractional_kelly (Kelly "
                    "fraction of the strategy's last kelly_window trades x kelly_multiplier, "
                    "capped at sizing_max_fraction; sizing_fraction until kelly_min_trades).")
    order_notional: Decimal = Field(Decimal("1000"), gt=0,
                                    description="Quote-currency value of one entry (fixed sizing).")
    initial_capital: Decimal = Field(
        Decimal("10000"), gt=0,
        description="Equity the sizing methods and the margin rule work from (quote currency); "
                    "the breakers measure the gate's equity from it.")
    sizing_fraction: Decimal = Field(
        Decimal("0.1"), gt=0, le=1,
        description="Fraction of equity per entry (fixed_fraction; confidence_scaled base).")
    sizing_max_fraction: Decimal = Field(
        Decimal("0.25"), gt=0, le=1,
        description="Cap on the confidence-scaled fraction of equity per entry.")
    kelly_window: int = Field(50, ge=1, le=10_000,
                              description="Closed trades of a strategy fractional Kelly reads.")
    kelly_min_trades: int = Field(
        20, ge=1, description="Trades before fractional Kelly sizes (sizing_fraction until).")
    kelly_multiplier: Decimal = Field(
        Decimal("0.5"), gt=0, le=1,
        description="Fraction of full Kelly bet (0.5 = half Kelly: the estimate is noisy).")
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
    trailing_stop: Decimal = Field(
        Decimal("0"), ge=0, lt=1,
        description="Trailing stop put on every entry (ApprovedOrder.trailing_stop): the "
                    "executor closes the position when a candle's low (high, short) comes back "
                    "this fraction from the best price since entry, and the gate books it on "
                    "the same candle; 0 = off.")
    require_stop_loss: bool = Field(
        True, description="Reject entries whose signal carries no usable stop_loss (the "
                          "signals service attaches one to every entry).")

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

    # ---------------------------------------------------------------- portfolio
    max_asset_notional: Decimal = Field(
        Decimal("10000"), gt=0,
        description="Largest sum of position values in one base asset over every venue and "
                    "contract (BTC on binance and bybit together; exits are exempt).")
    max_correlated_notional: Decimal = Field(
        Decimal("25000"), gt=0,
        description="Largest sum of position values over symbols whose returns correlate at "
                    "or above correlation_min with the symbol of an entry (that symbol "
                    "included): correlated positions share one budget (exits are exempt).")
    correlation_min: float = Field(
        0.8, gt=-1, le=1,
        description="Return correlation at which two symbols share the correlated budget.")
    correlation_window: int = Field(
        168, ge=10, le=10_000,
        description="Candles of returns the correlations are measured over (168 = a week "
                    "of hourly candles); fewer than half of them in common: not correlated.")

    # ---------------------------------------------------------------- circuit breakers
    max_drawdown: Decimal = Field(
        Decimal("0.25"), gt=0, le=1,
        description="Breaker: largest fall of the gate's equity below its peak, a fraction "
                    "(1 = off). Equity: initial_capital + PnL of the approved trades at "
                    "reference prices + open positions at the last close.")
    daily_loss_limit: Decimal = Field(
        Decimal("0.05"), gt=0, le=1,
        description="Breaker: largest fall of equity below its value at the first candle of "
                    "the UTC day, a fraction (1 = off).")
    price_spike_pct_per_min: Decimal = Field(
        Decimal("1"), ge=0,
        description="Breaker: largest move of a close from the previous close, in percent "
                    "per minute between them (0 = off). On hourly candles 1 %/min is a 60% "
                    "hourly move; live on 1m candles it is a 1% minute.")
    error_rate_max: Decimal = Field(
        Decimal("0.5"), gt=0, le=1,
        description="Breaker: largest share of rejected or unknown orders among the last "
                    "error_rate_window order outcomes (order.event.v1; 1 = off).")
    error_rate_window: int = Field(20, ge=1, le=10_000,
                                   description="Order outcomes the error rate is measured over.")
    pause_hours: Decimal = Field(
        Decimal("24"), gt=0,
        description="Event-time hours entries are paused after a breaker trips.")
    reduce_hours: Decimal = Field(
        Decimal("24"), gt=0,
        description="Event-time hours of reduced sizing when a breaker is still tripped at "
                    "the end of a pause; still tripped after it: close all and stop.")
    reduce_factor: Decimal = Field(
        Decimal("0.5"), gt=0, lt=1,
        description="Factor entry sizes are multiplied by while reducing.")
    flatten_on_kill: bool = Field(
        False, description="When an operator engages the kill switch, also close every "
                           "position (reduce-only orders). A breaker's close-all always does.")
    max_data_lag_s: float = Field(
        0.0, ge=0,
        description="Stale data guard: refuse entries from a signal whose event time is more "
                    "than this many wall-clock seconds old (0 = off, as in replays; set it "
                    "live, e.g. 300 with hourly candles).")

    # ---------------------------------------------------------------- inputs
    signals: bool = Field(
        True, description="Take signal.v1 from the signals service and wait, per symbol, for "
                          "its signals or Watermarks before deciding (false: a bots-only "
                          "deployment; signals that still arrive, e.g. from the webhook, are "
                          "decided as they come).")
    intents: bool = Field(
        False, description="Take bots' orders from order.intent.v1 (meridian_signals.bots) and "
                           "wait, per symbol, for the bots host's intents or Watermarks; "
                           "publish risk.decision.v1 Watermarks for it. Bots place no stops: "
                           "set require_stop_loss false for them (or per strategy).")

    # ---------------------------------------------------------------- event-time merge
    merge_grace_s: float = Field(
        0.0, ge=0,
        description="Wall-clock seconds the gate waits for a symbol whose candles or signals "
                    "lag before deciding without it (0 = wait: exact replays; set it live so "
                    "one stalled symbol cannot hold every decision, exits included).")
    hold_warning_s: float = Field(
        60.0, gt=0,
        description="Log the symbols the gate waits for once a signal has waited this long.")

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
        if not (self.signals or self.intents):
            raise ValueError("signals and intents are both false: the gate would decide "
                             "nothing")
        if self.sizing == "fixed_notional" and self.min_order_notional > self.order_notional:
            raise ValueError(f"min_order_notional ({self.min_order_notional}) exceeds "
                             f"order_notional ({self.order_notional})")
        if self.kelly_min_trades > self.kelly_window:
            raise ValueError(f"kelly_min_trades ({self.kelly_min_trades}) exceeds kelly_window "
                             f"({self.kelly_window}): Kelly sizing would never start")
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
