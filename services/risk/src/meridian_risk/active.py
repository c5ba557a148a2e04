"""Per-strategy limits from `active_configs`: what research optimized and promoted (leverage,
margin mode, max position) overrides the settings for that strategy's signals.

Each promoted row becomes a full `RiskSettings` (the settings with the row's values), validated
by the same schema as the environment, so a bad row fails like a bad variable: at start-up, with
the strategy, version and field named. A promotion announced on control.v1 is re-read after the
batch that carried it; a row that fails then is refused and the previous limits stay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from meridian_common.config import ConfigError
from meridian_common.db import schema
from meridian_risk.settings import RiskSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActiveConfig:
    strategy: str
    version: str
    leverage: Decimal
    margin_mode: str
    max_position_notional: Decimal

    @property
    def label(self) -> str:
        return f"{self.strategy}@{self.version}"


def strategy_settings(base: RiskSettings, config: ActiveConfig) -> RiskSettings:
    """The settings with the config's limits, validated as a whole (the cross-field checks
    included, e.g. maintenance margin x leverage < 1)."""
    values = base.model_dump() | {"leverage": config.leverage,
                                  "margin_mode": config.margin_mode,
                                  "max_position_notional": config.max_position_notional}
    try:
        return RiskSettings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'limits'}: {e['msg']}"
            for e in exc.errors())
        raise ConfigError(f"active_configs {config.label}: {problems}") from None


def resolve(base: RiskSettings, configs: list[ActiveConfig]) -> dict[str, RiskSettings]:
    return {c.strategy: strategy_settings(base, c) for c in configs}


class ActiveConfigStore:
    """Reads the promoted row of every strategy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def promoted(self) -> list[ActiveConfig]:
        t = schema.active_configs
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.c.strategy, t.c.version, t.c.leverage, t.c.margin_mode,
                       t.c.max_position_notional)
                .where(t.c.promoted_at.is_not(None)).order_by(t.c.strategy))
            return [ActiveConfig(*r) for r in rows]
