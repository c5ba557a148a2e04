"""Bots host settings (prefix MERIDIAN_BOTS_).

The bots themselves live in a TOML file (`meridian_signals.bots.spec` documents the format):
a grid or DCA bot has a dozen parameters and its market's rules, more than environment
variables carry readably, and the file is reviewed and versioned as one piece.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BotsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_BOTS_", extra="forbid", frozen=True)

    config: str = Field(
        "", description="Path of the TOML file of bots ([[bots]] tables: bot_id, kind 'grid', "
                        "'dca' or 'funding-arb', exchange, symbol, the market's tick/lot/"
                        "min_qty/min_notional and the bot's parameters; see "
                        "meridian_signals.bots.spec). Empty = no bots: the service then refuses "
                        "to start.")
