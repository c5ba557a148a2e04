"""Process entry point shared by the consumer services (`python -m meridian_<name>`).

Resolves settings once (a bad value exits with the variable named), sets up JSON logs, tracing
(off unless OTEL_* variables ask for it: `meridian_common.tracing`) and the metrics port
(/metrics, /healthz, /readyz: `meridian_common.health`), creates missing topics, and hosts the
handler on Kafka until SIGTERM or SIGINT, after which the current batch finishes, is made durable
and committed.

A service given MERIDIAN_DATABASE_URL is ready only while that database answers `SELECT 1`
(the `database` check), in addition to whatever its handler declares in `health_checks()`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from meridian_common import config, logs, metrics, tracing
from meridian_common.bus.base import Bus
from meridian_common.handler import Handler
from meridian_common.health import Check, Health, database_check
from meridian_common.host import ServiceHost, all_topic_configs

log = logging.getLogger(__name__)

HandlerFactory = Callable[[config.CommonSettings], Awaitable[Handler]]


def open_bus(common: config.CommonSettings, client_id: str) -> Bus:
    if common.bus == "kafka":
        from meridian_common.bus.kafka import KafkaBus

        return KafkaBus(common.kafka_bootstrap, client_id=client_id)
    raise config.ConfigError(
        "MERIDIAN_BUS=inprocess runs only inside one process: use `meridian run` (embedded)")


async def serve(name: str, factory: HandlerFactory, common: config.CommonSettings) -> None:
    handler = await factory(common)  # validates the service's settings before any connection
    bus = open_bus(common, f"meridian-{name}")
    await bus.ensure_topics(all_topic_configs(common.topic_prefix, common.partitions))
    sensor = metrics.PrometheusSensor(name)
    handler.bind_metrics(sensor.registry)
    probes = Health(name, stall_s=common.health_stall_s, checks=dependency_checks(common),
                    on_ready=sensor.ready)
    server = metrics.serve(common.metrics_port, sensor, health=probes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host = ServiceHost(handler, bus, prefix=common.topic_prefix, batch=common.consumer_batch,
                       sensor=sensor, health=probes)
    try:
        await host.run(stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    log.info("service stopped", extra={"handled": host.handled, "dead_letters": host.dead_letters})


def dependency_checks(common: config.CommonSettings) -> dict[str, Check]:
    """The readiness checks every service gets from the common settings: the database when
    one is configured."""
    if common.database_url is None:
        return {}
    return {"database": database_check(common.database_url.get_secret_value())}


def main(name: str, factory: HandlerFactory) -> None:
    try:
        common = config.load(config.CommonSettings)
    except config.ConfigError as exc:
        print(f"meridian-{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.setup(name, common.log_level)
    try:
        tracing.configure(name)
        asyncio.run(serve(name, factory, common))
    except config.ConfigError as exc:
        log.error("bad configuration: %s", exc)
        raise SystemExit(2) from None
    finally:
        tracing.shutdown()  # exports the spans still buffered
