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
    configs = None
    if url:
        db.migrate(url)  # active_configs may not exist yet on a fresh database
        configs = ActiveStrategyStore(db.create_engine(url), owns_engine=True)
    return SignalsHandler(config.load(SignalsSettings), database_url=url, configs=configs)


def main() -> None:
    service.main("signals", build)


if __name__ == "__main__":
    main()
