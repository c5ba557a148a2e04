"""Ledger settings (prefix MERIDIAN_LEDGER_)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LedgerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_LEDGER_", extra="forbid", frozen=True)

    account: str = Field("paper", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                         description="Account the fills are booked to.")
    initial_capital: Decimal = Field(Decimal("10000"), gt=0,
                                     description="Starting equity in quote currency.")
    funding: bool = Field(
        False, description="Book funding payments from md.funding.v1 (perpetuals): each "
                           "candle is marked only once the symbol's funding has reached its "
                           "close. Off for spot replays, which publish no funding.")
