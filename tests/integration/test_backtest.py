"""`meridian backtest` on an isolated run: the same inputs give byte-identical reports, in-process
and over Kafka alike, and the run leaves no topic behind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from meridian_cli import backtest
from meridian_cli.backtest_spec import make_spec
from meridian_ingest.sources import csv_rows

FILES = ("report.json", "trades.json", "report.html")


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()




@pytest.mark.usefixtures("backtest_db")
def test_same_run_same_report_in_process_and_over_kafka(kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    config = tmp_path / "bt.toml"
    config.write_text("[signals]\nallow_short = true\n[risk]\norder_notional = 800\n")
    spec = make_spec("BTCUSDT,ETHUSDT", "2021-01-01", "2021-02-15", str(config))
    runs = {}
    for name, kafka in (("first", False), ("second", False), ("kafka", True)):
        report, paths = backtest.run(spec, kafka=kafka, pg_dir=tmp_path / "pg",
                                     reports=tmp_path / name, mc_runs=200, mc_seed=7)
        assert paths["report.json"].parent == tmp_path / name / "trend" / spec.run_id()
        runs[name] = {f: paths[f].read_bytes() for f in FILES}
        assert json.loads(paths["run.json"].read_text())["bus"] == \
            ("kafka" if kafka else "inprocess")
    assert runs["first"] == runs["second"]
    assert runs["kafka"] == runs["first"]

    report = json.loads(runs["first"]["report.json"])
    trades = json.loads(runs["first"]["trades.json"])
    metrics = report["metrics"]
    assert report["config"] == {"signals": {"allow_short": True}, "risk": {"order_notional": 800}}
    assert metrics["trades"] == len(trades) > 10
    assert {t["side"] for t in trades} == {"long", "short"}  # the config file was applied
    assert report["fills"] >= 2 * len(trades)
    # every closed trade's PnL is in the final equity; what is left is the open position's
    closed = sum(t["net_pnl"] for t in trades)
    assert abs(metrics["final_equity"] - 10_000 - closed) <= 800 * 0.2
    ing = spec.settings().ingest
    hours = {raw.open_time_ms for symbol in spec.symbols
             for raw in csv_rows(ing.data_dir, symbol, "1h", ing.start_ms, ing.end_ms)}
    assert metrics["bars"] == len(hours)  # one account bar per hour the data has
    assert 0 <= metrics["max_drawdown"] < 1
    assert report["monte_carlo"]["runs"] == 200
    left = asyncio.run(_topics(kafka_bootstrap))
    assert not [t for t in left if t.startswith(f"bt.{spec.run_id()}.")]
