"""`python -m meridian_signals`: the signals service over Kafka."""

from __future__ import annotations

from meridian_common import config, db, service
from meridian_signals.active import ActiveStrategyStore
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings


async def build(common: config.CommonSettings) -> SignalsHandler:
    # the database, when configured, holds which model version and which strategy config
    # (active_configs) are promoted
    url = common.database_url.get_secret_value() if common.database_url else None
    configs = ActiveStrategyStore(db.create_engine(url), owns_engine=True) if url else None
    return SignalsHandler(config.load(SignalsSettings), database_url=url, configs=configs)


def main() -> None:
    service.main("signals", build)


if __name__ == "__main__":
    main()
