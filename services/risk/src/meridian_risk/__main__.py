"""`python -m meridian_risk`: the risk gate over Kafka."""

from __future__ import annotations

from meridian_common import config, service
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings


async def build(common: config.CommonSettings) -> RiskHandler:
    return RiskHandler(config.load(RiskSettings))


def main() -> None:
    service.main("risk", build)


if __name__ == "__main__":
    main()
