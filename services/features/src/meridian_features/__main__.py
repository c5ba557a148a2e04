"""`python -m meridian_features`: the features service over Kafka."""

from __future__ import annotations

from meridian_common import config, service
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings


async def build(common: config.CommonSettings) -> FeaturesHandler:
    return FeaturesHandler(config.load(FeaturesSettings))


def main() -> None:
    service.main("features", build)


if __name__ == "__main__":
    main()
