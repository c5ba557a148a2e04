"""`python -m meridian_ingest`: replay candles (shared CSV files or a DB range) onto Kafka.

`python -m meridian_ingest load-csv` upserts the CSV files into the candles table instead.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from meridian_common import config, logs, metrics
from meridian_common.host import all_topic_configs
from meridian_common.service import open_bus
from meridian_ingest import sources, store
from meridian_ingest.replay import replay
from meridian_ingest.settings import IngestSettings

log = logging.getLogger("meridian_ingest")


def candle_stream(common: config.CommonSettings, settings: IngestSettings):
    def rows(symbol: str):
        if settings.source == "csv":
            return sources.csv_rows(settings.data_dir, symbol, settings.timeframe,
                                    settings.start_ms, settings.end_ms)
        if common.database_url is None:
            raise config.ConfigError(
                "MERIDIAN_DATABASE_URL is required with MERIDIAN_INGEST_SOURCE=db")
        return store.db_rows(common.database_url.get_secret_value(), common.exchange, symbol,
                             settings.timeframe, settings.start_ms, settings.end_ms)

    return sources.merged(common.exchange, settings.timeframe,
                          {s: rows(s) for s in settings.symbols})


def _progress(sent: int, total: int | None, seconds: float) -> None:
    if sent % 10_000 < 1000:
        rate = round(sent / max(seconds, 1e-9))
        log.info("replay progress", extra={"candles": sent, "per_s": rate})


async def run(common: config.CommonSettings, settings: IngestSettings) -> int:
    bus = open_bus(common, "meridian-ingest")
    await bus.ensure_topics(all_topic_configs(common.topic_prefix, common.partitions))
    sensor = metrics.PrometheusSensor("ingest")
    metrics.serve(common.metrics_port, sensor.registry)
    producer = bus.producer()
    try:
        sent = await replay(candle_stream(common, settings), producer, common.topic_prefix,
                            progress=_progress, sensor=sensor)
    finally:
        await producer.stop()
    log.info("replay done", extra={"candles": sent, "symbols": list(settings.symbols)})
    return sent


def main() -> None:
    try:
        common = config.load(config.CommonSettings)
        settings = config.load(IngestSettings)
    except config.ConfigError as exc:
        print(f"meridian-ingest: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.setup("ingest", common.log_level)
    if sys.argv[1:2] == ["load-csv"]:
        if common.database_url is None:
            print("meridian-ingest: MERIDIAN_DATABASE_URL is required for load-csv",
                  file=sys.stderr)
            raise SystemExit(2)
        from meridian_common import db

        url = common.database_url.get_secret_value()
        db.migrate(url)
        n = store.load_csv(url, common.exchange, settings.symbols, settings.timeframe,
                           settings.data_dir, settings.start_ms, settings.end_ms)
        log.info("candles loaded", extra={"rows": n})
        return
    asyncio.run(run(common, settings))


if __name__ == "__main__":
    main()
