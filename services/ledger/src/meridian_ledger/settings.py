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
        False, description="Book funding payments from md.funding.v1 on perpetual keys (venue "
                           "<exchange>-linear): each perpetual candle is marked only once its "
                           "funding has reached its close. Spot keys never wait for funding "
                           "(a spot/perpetual pair can be booked in one ledger); a funding "
                           "record on a spot key goes to the dead-letter topic. A replayed "
                           "perpetual copied from spot candles "
                           "(MERIDIAN_INGEST_REPLAY_PERPETUALS) is marked at spot (basis 0) "
                           "and paid the stored settlements.")
