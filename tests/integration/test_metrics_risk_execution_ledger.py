"""The risk, execution and ledger domain series over real Kafka and PostgreSQL: the pipeline runs
as deployed (`python -m meridian_<name>`, each service's /metrics on its own port) over a
real-data slice; once drained, what each service's /metrics says agrees with the rows in the
database (risk decisions, fills, positions, the equity curve) and with the order events on the
bus; and a ledger restarted on that database reads the same account gauges before any record."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from meridian.v1 import candle_pb2, order_event_pb2
from meridian_cli.kafka_run import CONSUMERS, KafkaPipeline
from meridian_common import config, db, orders, testing, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.testing import free_port
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_ledger.store import SqlLedgerStore

pytestmark = pytest.mark.integration

SLICE = {
    "MERIDIAN_INGEST_SYMBOLS": "BTCUSDT,ETHUSDT",
    "MERIDIAN_INGEST_START": "2021-01-01",
    "MERIDIAN_INGEST_END": "2021-03-01",
    "MERIDIAN_CONSUMER_BATCH": "200",
}
SCRAPED = ("risk", "execution", "ledger")
CAPITAL = Decimal(10000)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]



def _scrape(port: int) -> Samples:
    """Every sample of a service's /metrics, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not exported"
    return samples[key]


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _eventually(check: Callable[[], None], timeout_s: float = 60) -> None:
    """The check passes once the last records in flight are handled (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _candles() -> int:
    common = config.load(config.CommonSettings, environ={})
    ingest = config.load(IngestSettings, environ={}, symbols="BTCUSDT,ETHUSDT",
                         start="2021-01-01", end="2021-03-01")
    return sum(1 for m in commands.candle_stream(common, ingest)
               if isinstance(m, candle_pb2.Candle))


def _check_risk(samples: Samples, url: str) -> None:
    decided = _rows(url, "select approved, failed_rules from risk_decisions")
    approved = sum(1 for ok, _ in decided if ok)
    rejected = [failed for ok, failed in decided if not ok]
    assert rejected
    assert _get(samples, "meridian_risk_decisions_total", outcome="rejected") == len(rejected)
    assert _get(samples, "meridian_risk_decisions_total", outcome="approved") + _get(
        samples, "meridian_risk_decisions_total", outcome="reduced") == approved
    deciding = Counter(failed[0] for failed in rejected)  # type: ignore[index]
    for rule, n in deciding.items():
        assert _get(samples, "meridian_risk_rejections_total", rule=rule) == n
    assert sum(v for (name, _), v in samples.items()
               if name == "meridian_risk_rejections_total") == len(rejected)
    assert _get(samples, "meridian_risk_kill_switch") == 0
    assert _get(samples, "meridian_risk_equity_quote") > 0


def _check_execution(samples: Samples, url: str, events: list[order_event_pb2.OrderEvent]) -> None:
    by_side = dict(_rows(url, "select side, count(*) from fills group by side"))
    assert _get(samples, "meridian_execution_fills_total", side="buy") == by_side[1]
    assert _get(samples, "meridian_execution_fills_total", side="sell") == by_side[2]
    (fees,) = _rows(url, "select sum(fee) from fills")[0]
    assert _get(samples, "meridian_execution_fees_quote_total") == pytest.approx(float(fees),
                                                                                rel=1e-9)
    states = Counter(orders.name(e.status).lower() for e in events)
    for state in ("pending_submit", "open", "filled", "canceled", "rejected", "expired",
                  "unknown"):
        assert _get(samples, "meridian_execution_orders_total", state=state) == states[state]
    last = {e.client_order_id: e.status for e in events}
    assert _get(samples, "meridian_execution_open_orders") == sum(
        1 for s in last.values() if s not in orders.TERMINAL)
    for kind in ("retryable", "fatal"):
        assert _get(samples, "meridian_execution_exchange_errors_total", kind=kind) == 0
    assert _get(samples, "meridian_execution_reconciliation_failures_total") == 0


def _check_ledger(samples: Samples, url: str) -> None:
    for symbol, n in _rows(url, "select symbol, count(*) from fills group by symbol"):
        assert _get(samples, "meridian_ledger_fills_total", symbol=str(symbol)) == n
    (fees,) = _rows(url, "select sum(fee) from fills")[0]
    assert _get(samples, "meridian_ledger_fees_quote_total") == pytest.approx(float(fees),
                                                                             rel=1e-9)
    latest = _rows(url, "select distinct on (symbol) net_pnl from equity "
                        "order by symbol, ts desc")
    equity = CAPITAL + sum((n for (n,) in latest), Decimal(0))  # type: ignore[misc]
    assert _get(samples, "meridian_ledger_equity_quote") == float(equity)
    realized, open_positions = _rows(
        url, "select sum(realized_pnl - fees_paid - funding_paid), "
             "count(*) filter (where quantity <> 0) from positions")[0]
    assert _get(samples, "meridian_ledger_realized_pnl_quote") == float(realized)  # type: ignore[arg-type]
    assert _get(samples, "meridian_ledger_open_positions") == open_positions
    # the drawdown of the account curve (each time: capital + every symbol's latest net PnL)
    latest_by_symbol: dict[object, Decimal] = {}
    curve: dict[object, Decimal] = {}
    for ts, symbol, net in _rows(url, "select ts, symbol, net_pnl from equity order by ts"):
        latest_by_symbol[symbol] = net  # type: ignore[assignment]
        curve[ts] = CAPITAL + sum(latest_by_symbol.values(), Decimal(0))
    points = list(curve.values())
    assert points[-1] == equity
    peak = max([CAPITAL, *points])
    assert peak > equity  # a drawdown to measure
    assert _get(samples, "meridian_ledger_drawdown_ratio") == pytest.approx(
        float((peak - equity) / peak), abs=1e-12)


async def _restarted_ledger(url: str) -> CollectorRegistry:
    """A ledger started on the database, as after a restart: its gauges before any record."""
    engine = db.create_engine(url)
    try:
        ledger = LedgerHandler(LedgerSettings(), SqlLedgerStore(engine))
        registry = CollectorRegistry()
        ledger.bind_metrics(registry)
        await ledger.start()
        return registry
    finally:
        await engine.dispose()


def test_domain_series_agree_with_the_database(
        kafka_bootstrap: str, new_database: Callable[[str], str], topic_prefix: str,
        tmp_path: Path) -> None:
    url = new_database("metrics")
    prefix = f"{topic_prefix}m."
    ports = {name: free_port() for name in SCRAPED}
    base = {**SLICE, "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "MERIDIAN_TOPIC_PREFIX": prefix, "MERIDIAN_DATABASE_URL": url}
    candles = _candles()
    with KafkaPipeline(base, tmp_path / "logs") as pipeline:
        for name in CONSUMERS:  # each service its own metrics port
            pipeline.env = {**base, "MERIDIAN_METRICS_PORT": str(ports.get(name, 0))}
            pipeline.start((name,))
        pipeline.env = base
        pipeline.ingest()
        pipeline.wait_marked(url, "paper", candles, timeout_s=300)
        pipeline.check_alive()
        bus = KafkaBus(kafka_bootstrap, client_id="it-metrics-reader")

        def agree() -> None:
            events = asyncio.run(testing.read_topic(bus, prefix, topics.ORDER_EVENT))
            _check_risk(_scrape(ports["risk"]), url)
            _check_execution(_scrape(ports["execution"]), url, [
                e for e in events if isinstance(e, order_event_pb2.OrderEvent)])
            _check_ledger(_scrape(ports["ledger"]), url)

        _eventually(agree)
        scraped = _scrape(ports["ledger"])
    restarted = asyncio.run(_restarted_ledger(url))
    for name in ("meridian_ledger_equity_quote", "meridian_ledger_realized_pnl_quote",
                 "meridian_ledger_open_positions", "meridian_ledger_drawdown_ratio",
                 "meridian_ledger_funding_quote_total"):
        assert restarted.get_sample_value(name) == pytest.approx(_get(scraped, name),
                                                                  abs=1e-9), name
