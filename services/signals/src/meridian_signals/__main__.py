"""`python -m meridian_signals`: the signals service over Kafka."""

from __future__ import annotations

from meridian_common import config, service
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings


async def build(common: config.CommonSettings) -> SignalsHandler:
    return SignalsHandler(config.load(SignalsSettings))


def main() -> None:
    service.main("signals", build)


if __name__ == "__main__":
    main()
