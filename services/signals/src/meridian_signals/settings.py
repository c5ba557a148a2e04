"""Signals service settings (prefix MERIDIAN_SIGNALS_).

The rule parameters and barriers here are used only when no meta-model is loaded: a model
carries the ones it was trained next to in its manifest, and those win while it is served.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meridian_common.labels import Barriers
from meridian_common.strategy import TrendParams

_RULES = TrendParams()
_BARRIERS = Barriers()


class SignalsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_SIGNALS_", extra="forbid", frozen=True)

    strategy: Literal["trend"] = Field(
        "trend", description="Primary rule set: 'trend' (weighted EMA/MACD/RSI/4h votes).")
    allow_short: bool = Field(
        _RULES.allow_short,
        description="Rules-only: enter shorts on a bearish score (else bearish scores only exit).")
    entry_score: float = Field(
        _RULES.entry_score, gt=0.0, le=1.0,
        description="Rules-only: the score at or above which the rules go long (short at or below "
                    "its negative).")
    exit_score: float = Field(
        _RULES.exit_score, ge=-1.0, lt=1.0,
        description="Rules-only: a long exits when the score falls to this (a short when it rises "
                    "to its negative); below entry_score.")
    rsi_overbought: float = Field(
        _RULES.rsi_overbought, gt=50.0, le=100.0,
        description="Rules-only: no long entry when RSI is at or above this.")
    rsi_oversold: float = Field(
        _RULES.rsi_oversold, ge=0.0, lt=50.0,
        description="Rules-only: no short entry when RSI is at or below this.")
    model_dir: str = Field(
        ".local/models", min_length=1,
        description="Model registry directory (artefacts under <dir>/<name>/<version>/).")
    model_name: str = Field(
        "meta-trend", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Registered name of the meta-model to serve; promotions of this name on the "
                    "control topic are loaded live.")
    model_version: str = Field(
        "", description="Model version to serve; empty = the promoted one (the models table "
                        "when MERIDIAN_DATABASE_URL is set, else the registry's PROMOTED file). "
                        "A pinned version ignores live promotions.")
    threshold: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Meta-model probability an entry needs to be taken; empty = the threshold in "
                    "the model's manifest.")
    take_profit: float = Field(
        _BARRIERS.take_profit, gt=0.0,
        description="Rules-only suggested take-profit distance: a fraction of the price, or an ATR "
                    "multiple with use_atr.")
    stop_loss: float = Field(
        _BARRIERS.stop_loss, gt=0.0,
        description="Rules-only suggested stop-loss distance: a fraction of the price (< 1), or an "
                    "ATR multiple with use_atr.")
    use_atr: bool = Field(
        _BARRIERS.use_atr,
        description="Rules-only: take_profit and stop_loss are multiples of the ATR (atr_pct x "
                    "close) instead of fractions of the price.")
    max_holding: int = Field(
        _BARRIERS.max_holding, ge=1,
        description="Rules-only time barrier in candles, kept with the other barriers (signals "
                    "carry no time exit; it is logged with the barriers in use).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # the same checks the rule and barrier classes make, reported at configuration time
        _ = self.params, self.barriers
        return self

    @property
    def params(self) -> TrendParams:
        return TrendParams(entry_score=self.entry_score, exit_score=self.exit_score,
                           rsi_overbought=self.rsi_overbought, rsi_oversold=self.rsi_oversold,
                           allow_short=self.allow_short)

    @property
    def barriers(self) -> Barriers:
        return Barriers(take_profit=self.take_profit, stop_loss=self.stop_loss,
                        max_holding=self.max_holding, use_atr=self.use_atr)
