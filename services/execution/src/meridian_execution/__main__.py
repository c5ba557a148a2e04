"""`python -m meridian_execution`: the paper or the live executor over Kafka."""

from __future__ import annotations

from meridian_common import config, service
from meridian_common.handler import Handler
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings


async def build(common: config.CommonSettings) -> Handler:
    settings = config.load(ExecutionSettings)
    if settings.mode == "paper":
        return ExecutionHandler(settings)
    from meridian_execution.live.ccxt_venue import venue_for
    from meridian_execution.live.handler import LiveExecutionHandler

    try:
        venue = venue_for(settings, common.exchange)
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None
    return LiveExecutionHandler(settings, venue)


def main() -> None:
    service.main("execution", build)


if __name__ == "__main__":
    main()
