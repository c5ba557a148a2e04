"""`python -m meridian_execution`: the paper executor over Kafka."""

from __future__ import annotations

from meridian_common import config, service
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings


async def build(common: config.CommonSettings) -> ExecutionHandler:
    return ExecutionHandler(config.load(ExecutionSettings))


def main() -> None:
    service.main("execution", build)


if __name__ == "__main__":
    main()
