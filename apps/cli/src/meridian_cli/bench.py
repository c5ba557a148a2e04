"""`meridian bench`: candles/s through the whole pipeline, embedded and over Kafka, in one run.

Each figure counts only if its result matches the fingerprint of the other (fills, trades and
final equity of the same slice): a faster wrong answer does not count. The Kafka figure runs the
five consumer services as separate processes against a local broker started by
scripts/localinfra.py; it is timed from the start of ingest until the ledger has marked every
candle (so it includes ingest's process start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from meridian_cli import embedded_db, report
from meridian_cli.kafka_run import KafkaPipeline
from meridian_cli.pipeline import run_inprocess
from meridian_cli.scripts import REPO, load_script
from meridian_cli.settings import PipelineSettings


def _fingerprint(url: str, capital: Any) -> tuple[int, int, str]:
    r = report.build(url, "paper", capital)
    return r["fills"], r["total"]["trades"], r["final_equity"]


def _kafka(env: dict[str, str], candles: int, capital: Any) -> tuple[float, tuple[int, int, str]]:
    infra = load_script("localinfra")
    state = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
    kafka = infra.start_kafka(state)
    pg = infra.start_postgres(state)
    try:
        admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("create database bench")
        url = f"postgresql://postgres@127.0.0.1:{pg.port}/bench"
        run_env = {**env, "MERIDIAN_KAFKA_BOOTSTRAP": kafka.bootstrap,
                   "MERIDIAN_DATABASE_URL": url, "MERIDIAN_TOPIC_PREFIX": "bench."}
        with KafkaPipeline(run_env, state / "logs") as pipeline:
            pipeline.start()
            pipeline.wait_started()
            started = time.perf_counter()
            pipeline.ingest()
            pipeline.wait_marked(url, "paper", candles, timeout_s=900)
            seconds = time.perf_counter() - started
        return seconds, _fingerprint(url, capital)
    finally:
        infra.stop_kafka(kafka)
        infra.stop_postgres(pg)


def main(ns: argparse.Namespace) -> int:
    env = {"MERIDIAN_INGEST_SYMBOLS": ns.symbols, "MERIDIAN_INGEST_START": ns.start,
           "MERIDIAN_INGEST_END": ns.end}
    settings = PipelineSettings.load(environ=env, common={"bus": "inprocess"})
    capital = settings.ledger.initial_capital
    server = embedded_db.start(REPO / ".local" / "embedded-pg")
    url = embedded_db.fresh_database(server, "meridian_bench")
    stats = asyncio.run(run_inprocess(settings, url))
    embedded_fp = _fingerprint(url, capital)
    rows = [("replay in-process (embedded bus)", stats.candles, stats.seconds)]
    print(f"slice: {ns.symbols} {ns.start} .. {ns.end}: {stats.candles:,} candles; fingerprint "
          f"(fills, trades, final equity) = {embedded_fp}")
    if not ns.no_kafka:
        seconds, kafka_fp = _kafka(env, stats.candles, capital)
        if kafka_fp != embedded_fp:
            print(f"FINGERPRINT MISMATCH: kafka {kafka_fp} != embedded {embedded_fp}; "
                  "the Kafka figure does not count", file=sys.stderr)
            return 1
        rows.append(("replay over kafka (6 processes)", stats.candles, seconds))
    base = rows[0][2]
    print(f"{'pipeline':<32}{'candles':>10}{'seconds':>10}{'candles/s':>12}{'vs embedded':>13}")
    for name, n, secs in rows:
        print(f"{name:<32}{n:>10,}{secs:>10.2f}{n / secs:>12,.0f}{base / secs:>12.2f}x")
    from meridian_cli import bench_research

    code = bench_research.main(replay_cps=stats.candles_per_second)
    if code:
        return code
    from meridian_cli import bench_features

    code = bench_features.main()
    if code:
        return code
    from meridian_cli import bench_model

    code = bench_model.main()
    if code:
        return code
    from meridian_cli import bench_risk

    code = bench_risk.main()
    if code:
        return code
    from meridian_cli import bench_execution

    code = bench_execution.main()
    if code:
        return code
    if not ns.no_kafka:
        from meridian_cli import bench_latency

        code = bench_latency.main()
    if code or ns.no_ingest:
        return code
    from meridian_cli import bench_ingest

    return bench_ingest.main(kafka=not ns.no_kafka)
