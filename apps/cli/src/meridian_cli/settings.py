"""All services' settings, loaded together, so an embedded run and a Kafka run configured by the
same environment are configured identically."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic_settings import BaseSettings

from meridian_common import config, venues
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
        settings.check_pairs()
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

    def check_pairs(self) -> None:
        """A funding-arb pair trades the funding: its run must book it (the ledger's funding)
        and, in a replay, publish the pair's perpetual leg with its settlements (ingest's
        replay_perpetuals and funding), or the pair would wait for ever for a leg or report a
        PnL without the very thing it trades."""
        if not self.bots.config:
            return
        from meridian_signals.bots.__main__ import load_specs  # reads the file: only with bots

        pairs = [s for s in load_specs(self.bots) if s.kind == "funding-arb"]
        if not pairs:
            return
        if not self.ledger.funding:
            raise config.ConfigError(
                f"bots[{pairs[0].bot_id}] is a funding-arb pair: set MERIDIAN_LEDGER_FUNDING="
                "true ([ledger] funding = true), or its PnL leaves out the funding it earns")
        if self.ingest.mode != "replay":
            return
        from meridian_ingest.commands import replay_markets

        # a perpetual leg needs its settlements too: without funding it is not replayed for it
        replayed = {m.key for m in replay_markets(self.common, self.ingest)
                    if self.ingest.funding or not venues.is_perpetual(m.venue)}
        for pair in pairs:
            missing = [k for k in pair.keys if k not in replayed]
            if missing:
                raise config.ConfigError(
                    f"bots[{pair.bot_id}]: the replay publishes no {', '.join(missing)}; a "
                    "funding-arb pair needs its symbol in MERIDIAN_INGEST_SYMBOLS and in "
                    "MERIDIAN_INGEST_REPLAY_PERPETUALS with MERIDIAN_INGEST_FUNDING=true "
                    "([ingest] replay_perpetuals in a backtest config), the spot leg on "
                    f"{self.common.exchange} and the perpetual on "
                    f"{venues.venue(self.common.exchange, venues.LINEAR)}")
