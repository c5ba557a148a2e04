"""The six services as separate OS processes over real Kafka give exactly the risk decisions,
trades, fills, PnL curve and final equity of the embedded run over the in-process bus, on the same
slice. One open position at a time: the gate refuses the second symbol's entries while the first
is open, a cross-symbol decision that would follow partition interleaving if the gate did not
decide in event time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from meridian_cli import report
from meridian_cli.kafka_run import KafkaPipeline
from meridian_cli.pipeline import run_inprocess
from meridian_cli.settings import PipelineSettings

pytestmark = pytest.mark.integration

SLICE = {
    "MERIDIAN_INGEST_SYMBOLS": "BTCUSDT,ETHUSDT",
    "MERIDIAN_INGEST_START": "2021-01-01",
    "MERIDIAN_INGEST_END": "2021-04-01",
    "MERIDIAN_RISK_MAX_OPEN_POSITIONS": "1",
}
# 90 days x 24 h per symbol, less the exchange outages of 2021-02-11 and 2021-03-06 (one hour each).
EXPECTED_CANDLES = 2 * (90 * 24 - 2)


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _decisions(url: str) -> list[tuple[object, ...]]:
    return _rows(url, "select ts, decision_id, approved, client_order_id, side, quantity, "
                      "reference_price, reduce_only, failed_rules, rules::text "
                      "from risk_decisions order by ts, decision_id")


def _wait_decisions(url: str, expected: int, timeout_s: float = 60) -> None:
    """The audit rows trail the marks (another topic): wait until all are in."""
    deadline = time.monotonic() + timeout_s
    while len(_decisions(url)) < expected and time.monotonic() < deadline:
        time.sleep(0.2)


def _ledger_state(url: str) -> dict[str, list[tuple[object, ...]]]:
    return {
        "fills": _rows(url, "select * from fills order by ts, fill_id"),
        "trades": _rows(url, "select * from trades order by symbol, entry_time"),
        "equity": _rows(url, "select * from equity order by symbol, ts"),
        "positions": _rows(url, "select * from positions order by symbol"),
    }


def test_kafka_processes_match_embedded_run(kafka_bootstrap: str,
                                            new_database: Callable[[str], str],
                                            topic_prefix: str, tmp_path: Path) -> None:
    embedded_db = new_database("embedded")
    kafka_db = new_database("kafka")

    settings = PipelineSettings.load(environ=SLICE, common={"bus": "inprocess"})
    stats = asyncio.run(run_inprocess(settings, embedded_db))
    assert stats.candles == EXPECTED_CANDLES
    assert stats.dead_letters == 0

    env = {
        **SLICE,
        "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MERIDIAN_TOPIC_PREFIX": topic_prefix,
        "MERIDIAN_DATABASE_URL": kafka_db,
        "MERIDIAN_LOG_LEVEL": "INFO",
    }
    with KafkaPipeline(env, tmp_path / "logs") as pipeline:
        pipeline.start()
        pipeline.ingest()
        pipeline.wait_marked(kafka_db, "paper", EXPECTED_CANDLES, timeout_s=240)
        _wait_decisions(kafka_db, len(_decisions(embedded_db)))
        pipeline.check_alive()

    embedded = _ledger_state(embedded_db)
    over_kafka = _ledger_state(kafka_db)
    assert len(embedded["trades"]) > 10, "the slice must trade, or the comparison proves nothing"
    assert len(embedded["equity"]) == EXPECTED_CANDLES
    for table in ("fills", "trades", "positions", "equity"):
        assert over_kafka[table] == embedded[table], f"{table} differ between Kafka and embedded"
    decisions = _decisions(embedded_db)
    refused = [d for d in decisions if "portfolio.max_open_positions" in d[8]]
    assert refused, "no entry was refused for the open-positions limit: the slice proves nothing"
    assert _decisions(kafka_db) == decisions

    a = report.build(embedded_db, "paper", settings.ledger.initial_capital)
    b = report.build(kafka_db, "paper", settings.ledger.initial_capital)
    assert b["final_equity"] == a["final_equity"]
    assert b["total"]["trades"] == a["total"]["trades"]
