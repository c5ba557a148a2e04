"""`meridian bench` ingest figures, against the local fake exchange, each beside a baseline.

- Backfill with rate limits off (candles/s), against loading the same candles from the CSV
  files with COPY (the database's own ceiling for this table).
- Backfill under a realistic rate limit (the fake exchange enforces N requests/s, ingest keeps
  its budget at N): candles/s as a fraction of the limit's theoretical maximum
  (N requests/s x candles per page).
- Live publish latency, candle close at the exchange -> record acknowledged on the topic, p50
  and p99, against a bare produce-and-flush of one record on the same broker.

A figure counts only if the table equals the source files (row count and the sum of closes).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from meridian_cli.scripts import load_script
from meridian_common import config
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import all_topic_configs
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_fake_exchange import FakeClock, FakeExchange
from meridian_ingest import commands, store
from meridian_ingest.settings import IngestSettings, parse_time_ms

HOUR = 3_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")


def _source_fingerprint(symbols: tuple[str, ...], start_ms: int, end_ms: int) -> tuple[int, str]:
    rows = [r for s in symbols
            for r in CsvCandleSource(default_data_dir(), s, "1h").rows(start_ms, end_ms)]
    return len(rows), str(sum(Decimal(r.close) for r in rows))


def _table_fingerprint(url: str, venue: str) -> tuple[int, str]:
    with psycopg.connect(store.conninfo(url)) as conn:
        n, total = conn.execute("select count(*), coalesce(sum(close), 0) from candles "
                                "where exchange = %s", (venue,)).fetchone()  # type: ignore[misc]
    return int(n), str(Decimal(total).normalize()) if n else "0"


def _fresh(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")
        conn.execute(f"create database {name}")
    return admin.rsplit("/", 1)[0] + f"/{name}"


def _settings(server: FakeExchange, **over: Any) -> IngestSettings:
    return config.load(IngestSettings, environ={}, api_base_url=server.base_url,
                       ccxt_rate_limit=False, timeframe="1h", **over)


def _common(url: str, bootstrap: str = "127.0.0.1:1", prefix: str = "") -> config.CommonSettings:
    return config.load(config.CommonSettings, environ={}, exchange="bybit", database_url=url,
                       kafka_bootstrap=bootstrap, topic_prefix=prefix)


async def _backfill(admin: str, name: str, symbols: tuple[str, ...], start: str, end_ms: int,
                    rate: float | None) -> tuple[float, int, dict[str, Any]]:
    clock = FakeClock(end_ms + HOUR // 2, paused=True)
    server = FakeExchange(symbols=symbols, timeframes=("1h",), clock=clock,
                          rate_limit_per_s=rate)
    await server.start()
    try:
        url = _fresh(admin, name)
        settings = _settings(server, symbols=",".join(symbols), start=start, funding=False,
                             rate_budget=rate or 0.0)
        started = time.perf_counter()
        results = await commands.run_backfill(_common(url), settings)
        seconds = time.perf_counter() - started
        expected = _source_fingerprint(symbols, parse_time_ms(start), end_ms)
        got = _table_fingerprint(url, "bybit")
        if got[0] != expected[0] or Decimal(got[1]) != Decimal(expected[1]):
            raise RuntimeError(f"backfill fingerprint {got} != source {expected}: not counted")
        return seconds, sum(r.candles for r in results), server.stats.snapshot()
    finally:
        await server.stop()


def _csv_load(admin: str, symbols: tuple[str, ...], start: str, end_ms: int) -> float:
    url = _fresh(admin, "bench_csv")
    from meridian_common import db

    db.migrate(url)
    started = time.perf_counter()
    store.load_csv(url, "bybit", symbols, "1h", None, parse_time_ms(start), end_ms)
    return time.perf_counter() - started


async def _produce_baseline(bootstrap: str, n: int = 200) -> list[float]:
    bus = KafkaBus(bootstrap)
    await bus.ensure_topics(all_topic_configs("benchbase.", 3))
    producer = bus.producer(low_latency=True)
    out = []
    try:
        for partition_key in (b"k", b"warm-up-1", b"warm-up-2"):  # leaders elected before timing
            await producer.send("benchbase.md.candle.v1", partition_key, b"warm-up")
        await producer.flush()
        for i in range(n):
            started = time.monotonic()
            await producer.send("benchbase.md.candle.v1", b"k", str(i).encode())
            await producer.flush()
            out.append(time.monotonic() - started)
    finally:
        await producer.stop()
    return out


async def _live_latency(admin: str, bootstrap: str, seconds: float = 30.0,
                        speed: float = 2 * 3600) -> list[float]:
    symbols = ("BTCUSDT", "ETHUSDT")
    start = parse_time_ms("2022-06-01")
    clock = FakeClock(start + HOUR // 2, speed=speed, paused=True)
    server = FakeExchange(symbols=symbols, timeframes=("1h",), clock=clock)
    await server.start()
    url = _fresh(admin, "bench_live")
    stop = asyncio.Event()
    settings = _settings(server, mode="live", market_type="linear", symbols=",".join(symbols),
                         start="2022-06-01", funding=False, poll_s=1.0, grace_s=0.5)
    task = asyncio.create_task(commands.run_live(_common(url, bootstrap, "benchlive."),
                                                 settings, stop))
    try:
        while server.stats.ws_open == 0:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        resumed = time.monotonic()
        clock.resume()
        await asyncio.sleep(seconds)
        mono, fake = time.monotonic(), clock.now_ms()
        stop.set()
        live = await task
    finally:
        await server.stop()
    latencies = []
    for (_, open_ms), published_at in live.stats.published_at.items():
        close_wall = mono - (fake - (open_ms + HOUR)) / speed / 1000
        if close_wall > resumed:  # closed while streaming, not part of the start-up catch-up
            latencies.append(published_at - close_wall)
    return latencies


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def main(kafka: bool = True) -> int:
    infra = load_script("localinfra")
    state = Path(tempfile.mkdtemp(prefix="meridian-bench-ingest-"))
    pg = infra.start_postgres(state)
    kafka_handle = infra.start_kafka(state) if kafka else None
    admin = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    try:
        end_ms = parse_time_ms("2024-01-01")
        start = "2017-12-01"
        csv_s = _csv_load(admin, SYMBOLS, start, end_ms)
        seconds, candles, _ = asyncio.run(_backfill(admin, "bench_bf", SYMBOLS, start, end_ms,
                                                    None))
        print(f"\ningest backfill, {len(SYMBOLS)} symbols 1h {start} .. 2024-01-01, fake bybit, "
              f"{candles:,} candles (table equals the source files)")
        print(f"{'':<36}{'seconds':>10}{'candles/s':>12}{'vs COPY':>10}")
        print(f"{'CSV COPY load (baseline)':<36}{csv_s:>10.2f}{candles / csv_s:>12,.0f}"
              f"{1:>9.2f}x")
        print(f"{'backfill, rate limits off':<36}{seconds:>10.2f}{candles / seconds:>12,.0f}"
              f"{csv_s / seconds:>9.2f}x")
        rate = 10.0
        r_start = "2021-01-01"
        r_seconds, r_candles, stats = asyncio.run(_backfill(admin, "bench_rl", SYMBOLS, r_start,
                                                            end_ms, rate))
        ceiling = rate * 1000
        limited = sum(stats["rate_limited"].values())
        print(f"backfill at a {rate:.0f} req/s exchange limit ({r_candles:,} candles): "
              f"{r_candles / r_seconds:,.0f} candles/s = {r_candles / r_seconds / ceiling:.2f} of "
              f"the theoretical {ceiling:,.0f}/s (1000 candles/page); {limited} requests refused")
        if kafka_handle is not None:
            base = asyncio.run(_produce_baseline(kafka_handle.bootstrap))
            lat = asyncio.run(_live_latency(admin, kafka_handle.bootstrap))
            print(f"live publish latency, close at the exchange -> acknowledged on the topic "
                  f"({len(lat)} candles): p50 {_pct(lat, 50):.1f} ms, p99 {_pct(lat, 99):.1f} ms;"
                  f" baseline produce+flush of one record p50 {_pct(base, 50):.1f} ms, "
                  f"p99 {_pct(base, 99):.1f} ms -> {_pct(lat, 50) / _pct(base, 50):.1f}x at p50")
    finally:
        if kafka_handle is not None:
            infra.stop_kafka(kafka_handle)
        infra.stop_postgres(pg)
    return 0
