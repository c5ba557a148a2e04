"""`python -m meridian_risk`: the risk gate over Kafka (MERIDIAN_DATABASE_URL optional)."""

from __future__ import annotations

from meridian_common import config, db, service
from meridian_risk.active import ActiveConfigStore
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings


async def build(common: config.CommonSettings) -> RiskHandler:
    """With MERIDIAN_DATABASE_URL, per-strategy limits come from active_configs too."""
    settings = config.load(RiskSettings)
    if common.database_url is None:
        return RiskHandler(settings)
    url = common.database_url.get_secret_value()
    db.migrate(url)
    return RiskHandler(settings, configs=ActiveConfigStore(db.create_engine(url)))


def main() -> None:
    service.main("risk", build)


if __name__ == "__main__":
    main()
