"""The promoted config of the signals' strategy (active_configs.parameters): rule parameters and
barriers research optimized and `meridian promote` released.

Read at start (a row the rules cannot run stops the start-up, naming it: a service must not run
a strategy other than the promoted one without saying so) and again after a `config_promotion`
on control.v1 (then a bad row is refused and the running rules stay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from meridian_common.db import schema


@dataclass(frozen=True, slots=True)
class PromotedParameters:
    strategy: str
    version: str
    parameters: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.strategy}@{self.version}"


class ActiveStrategyStore:
    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        self.owns_engine = owns_engine  # the embedded pipeline shares one engine

    async def promoted(self, strategy: str) -> PromotedParameters | None:
        t = schema.active_configs
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(t.c.version, t.c.parameters)
                .where(t.c.strategy == strategy, t.c.promoted_at.is_not(None)))).first()
        return None if row is None else PromotedParameters(strategy, row[0], dict(row[1]))

    async def close(self) -> None:
        if self.owns_engine:
            await self.engine.dispose()
