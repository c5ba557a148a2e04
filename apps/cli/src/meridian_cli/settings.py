"""All services' settings, loaded together, so an embedded run and a Kafka run configured by the
same environment are configured identically."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic_settings import BaseSettings

from meridian_common import config
from meridian_execution.settings import ExecutionSettings
from meridian_features.settings import FeaturesSettings
from meridian_ingest.settings import IngestSettings
from meridian_ledger.settings import LedgerSettings
from meridian_risk.settings import RiskSettings
from meridian_signals.bots.settings import BotsSettings
from meridian_signals.settings import SignalsSettings

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    config.CommonSettings, IngestSettings, FeaturesSettings, SignalsSettings, BotsSettings,
    RiskSettings, ExecutionSettings, LedgerSettings,
)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    common: config.CommonSettings
    ingest: IngestSettings
    features: FeaturesSettings
    signals: SignalsSettings
    bots: BotsSettings
    risk: RiskSettings
    execution: ExecutionSettings
    ledger: LedgerSettings

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None,
             **overrides: dict[str, Any]) -> PipelineSettings:
        """Load every settings class; `overrides` maps a section name to field overrides."""
        names = ("common", "ingest", "features", "signals", "bots", "risk", "execution",
                 "ledger")
        values = {
            name: config.load(klass, environ, **overrides.get(name, {}))
            for name, klass in zip(names, SETTINGS_CLASSES, strict=True)
        }
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check_bots()
        return settings

    def check_bots(self) -> None:
        """The gate must take intents exactly when bots run, or the run would stall (a gate
        waiting for a bots host that is not there) or dead-letter every bot order."""
        bots, intents = bool(self.bots.config), self.risk.intents
        if bots != intents:
            raise config.ConfigError(
                f"MERIDIAN_BOTS_CONFIG is {'set' if bots else 'empty'} but "
                f"MERIDIAN_RISK_INTENTS is {str(intents).lower()}: set both (bots through the "
                "gate) or neither")
