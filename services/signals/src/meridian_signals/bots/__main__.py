"""`python -m meridian_signals.bots`: the bots host over Kafka.

It refuses to start without bots (MERIDIAN_BOTS_CONFIG empty, or a file with no [[bots]]): a
host with no bot would only forward candle times as intent watermarks, which no one needs
when no bot trades (run the risk gate without the bots' intent stream instead), and an
unset variable is far more likely a deployment mistake than a wish.
"""

from __future__ import annotations

from meridian_common import config, service
from meridian_signals.bots import spec
from meridian_signals.bots.handler import BotsHandler
from meridian_signals.bots.settings import BotsSettings


def load_specs(settings: BotsSettings) -> list[spec.BotSpec]:
    """The configured bots; ConfigError (a failed start, exit 2) naming what is wrong."""
    if not settings.config:
        raise config.ConfigError("MERIDIAN_BOTS_CONFIG is empty: name the TOML file of bots "
                                 "(a bots host with no bots has nothing to do)")
    try:
        specs = spec.load(settings.config)
    except spec.BotSpecError as exc:
        raise config.ConfigError(f"MERIDIAN_BOTS_CONFIG: {exc}") from None
    if not specs:
        raise config.ConfigError(f"MERIDIAN_BOTS_CONFIG: {settings.config} has no [[bots]] "
                                 "table (a bots host with no bots has nothing to do)")
    return specs


async def build(common: config.CommonSettings) -> BotsHandler:
    return BotsHandler(load_specs(config.load(BotsSettings)))


def main() -> None:
    service.main("bots", build)


if __name__ == "__main__":
    main()
