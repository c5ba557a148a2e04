"""kill -9 of execution and the ledger at random moments, several times, during a multi-month
replay over Kafka: once drained, the fills, trades, positions and the whole PnL curve equal the
embedded run's row for row (nothing lost, nothing doubled), with two seeds."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from meridian_cli.kafka_run import KafkaPipeline
from meridian_cli.pipeline import run_inprocess
from meridian_cli.settings import PipelineSettings

pytestmark = pytest.mark.integration

SLICE = {
    "MERIDIAN_INGEST_SYMBOLS": "BTCUSDT,ETHUSDT",
    "MERIDIAN_INGEST_START": "2021-01-01",
    "MERIDIAN_INGEST_END": "2021-05-01",
    "MERIDIAN_CONSUMER_BATCH": "200",
}


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _state(url: str) -> dict[str, list[tuple[object, ...]]]:
    return {
        "fills": _rows(url, "select * from fills order by ts, fill_id"),
        "trades": _rows(url, "select * from trades order by symbol, entry_time"),
        "equity": _rows(url, "select * from equity order by symbol, ts"),
        "positions": _rows(url, "select * from positions order by symbol"),
    }


def _marked(url: str) -> int:
    try:
        return _rows(url, "select count(*) from equity")[0][0]  # type: ignore[return-value]
    except psycopg.errors.UndefinedTable:
        return 0


@pytest.mark.parametrize("seed", [3, 4])
def test_kill_9_execution_and_ledger_lose_and_double_nothing(
        kafka_bootstrap: str, new_database: Callable[[str], str], topic_prefix: str,
        tmp_path: Path, seed: int) -> None:
    embedded_db = new_database(f"crashemb{seed}")
    kafka_db = new_database(f"crashkafka{seed}")
    settings = PipelineSettings.load(environ=SLICE, common={"bus": "inprocess"})
    stats = asyncio.run(run_inprocess(settings, embedded_db))
    expected = _state(embedded_db)
    assert len(expected["trades"]) > 10
    candles = stats.candles

    rng = random.Random(seed)
    env = {**SLICE, "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": f"{topic_prefix}c{seed}.", "MERIDIAN_DATABASE_URL": kafka_db}
    kills = sorted(rng.uniform(0.1, 0.9) for _ in range(4))
    with KafkaPipeline(env, tmp_path / "logs") as pipeline:
        pipeline.start()
        pipeline.ingest()
        for at in kills:  # each kill when the curve has reached a random point
            victim = rng.choice(["execution", "ledger"])
            deadline = time.monotonic() + 240
            while _marked(kafka_db) < at * candles:
                pipeline.check_alive()
                assert time.monotonic() < deadline, f"stalled before the {victim} kill"
                time.sleep(0.05)
            pipeline.kill(victim)
            pipeline.start((victim,))
        pipeline.wait_marked(kafka_db, "paper", candles, timeout_s=300)
        pipeline.check_alive()
    got = _state(kafka_db)
    for table in ("fills", "trades", "positions", "equity"):
        assert got[table] == expected[table], f"{table} differ after the kills"
