"""The embedded pipeline: the six services as tasks in one process over the in-process bus.

Same handlers, same host loop and same codec as the Kafka deployment; only the bus differs. Ingest
is throttled so the in-memory topics never run far ahead of the slowest consumer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from meridian_cli.settings import PipelineSettings
from meridian_common import db
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.handler import Handler
from meridian_common.host import ServiceHost, all_topic_configs
from meridian_execution.handler import ExecutionHandler
from meridian_features.handler import FeaturesHandler
from meridian_ingest.commands import candle_stream
from meridian_ingest.replay import replay
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.store import SqlLedgerStore
from meridian_risk.active import ActiveConfigStore
from meridian_risk.handler import RiskHandler
from meridian_signals.active import ActiveStrategyStore
from meridian_signals.bots.__main__ import load_specs
from meridian_signals.bots.handler import BotsHandler
from meridian_signals.handler import SignalsHandler

MAX_LAG = 20_000

Progress = Callable[[int, int | None, float], None]


@dataclass(frozen=True, slots=True)
class RunStats:
    candles: int
    seconds: float
    dead_letters: int

    @property
    def candles_per_second(self) -> float:
        return self.candles / self.seconds if self.seconds > 0 else 0.0


def consumers(settings: PipelineSettings) -> tuple[str, ...]:
    """The consumer services a run needs: features and signals unless the gate takes no
    signals (a bots-only run), the bots host when bots are configured, then the gate,
    execution and the ledger. The same list for the embedded run and the Kafka processes."""
    names: list[str] = []
    if settings.risk.signals:
        names += ["features", "signals"]
    if settings.bots.config:
        names.append("bots")
    return (*names, "risk", "execution", "ledger")


def build_handlers(settings: PipelineSettings, ledger_store: SqlLedgerStore | None,
                   configs: ActiveConfigStore | None = None,
                   engine: AsyncEngine | None = None) -> list[Handler]:
    names = consumers(settings)
    handlers: list[Handler] = []
    if "features" in names:
        handlers.append(FeaturesHandler(settings.features))
        handlers.append(SignalsHandler(
            settings.signals, configs=ActiveStrategyStore(engine) if engine is not None else None))
    if "bots" in names:
        handlers.append(BotsHandler(load_specs(settings.bots)))
    return [*handlers, RiskHandler(settings.risk, configs=configs),
            ExecutionHandler(settings.execution), LedgerHandler(settings.ledger, ledger_store)]


async def run_inprocess(settings: PipelineSettings, database_url: str,
                        progress: Progress | None = None, total: int | None = None) -> RunStats:
    """Replay the configured range through all services; return when the pipeline is drained."""
    common = settings.common
    db.migrate(database_url)
    engine = db.create_engine(database_url)
    bus = InProcessBus(common.partitions)
    await bus.ensure_topics(all_topic_configs(common.topic_prefix, common.partitions))
    handlers = build_handlers(settings, SqlLedgerStore(engine), ActiveConfigStore(engine),
                              engine)
    for handler in handlers:
        handler.bind_metrics(CollectorRegistry())  # one per handler: the series names repeat
    hosts = [
        ServiceHost(h, bus, prefix=common.topic_prefix, batch=common.consumer_batch)
        for h in handlers
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(h.run(stop), name=h.handler.name) for h in hosts]
    started = time.perf_counter()
    ready = asyncio.gather(*(h.ready.wait() for h in hosts))
    done, _ = await asyncio.wait([ready, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        _raise_failed(tasks)

    async def throttle() -> None:
        while bus.lag() > MAX_LAG:
            _raise_failed(tasks)
            await asyncio.sleep(0.002)

    try:
        producer = bus.producer()
        candles = await replay(candle_stream(common, settings.ingest), producer,
                               common.topic_prefix, total=total, throttle=throttle,
                               progress=progress)
        await _drained(bus, tasks)
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        for subs in bus._subscribers.values():
            for consumer in subs:
                consumer.wake.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()
    return RunStats(candles, seconds, sum(h.dead_letters for h in hosts))


def _raise_failed(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and task.exception() is not None:
            raise RuntimeError(f"service {task.get_name()} failed") from task.exception()


async def _drained(bus: InProcessBus, tasks: list[asyncio.Task[None]]) -> None:
    """Wait until every record is consumed and every service waits for input."""
    while True:
        _raise_failed(tasks)
        consumers = [c for subs in bus._subscribers.values() for c in subs]
        if bus.lag() == 0 and all(c.idle for c in consumers):
            return
        await asyncio.sleep(0.005)
