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
from meridian_signals.settings import SignalsSettings

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    config.CommonSettings, IngestSettings, FeaturesSettings, SignalsSettings, RiskSettings,
    ExecutionSettings, LedgerSettings,
)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    common: config.CommonSettings
    ingest: IngestSettings
    features: FeaturesSettings
    signals: SignalsSettings
    risk: RiskSettings
    execution: ExecutionSettings
    ledger: LedgerSettings

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None,
             **overrides: dict[str, Any]) -> PipelineSettings:
        """Load every settings class; `overrides` maps a section name to field overrides."""
        names = ("common", "ingest", "features", "signals", "risk", "execution", "ledger")
        values = {
            name: config.load(klass, environ, **overrides.get(name, {}))
            for name, klass in zip(names, SETTINGS_CLASSES, strict=True)
        }
        return cls(**values)  # type: ignore[arg-type]
