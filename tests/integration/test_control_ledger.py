"""The control plane's read routes, promotions and portfolio WebSocket against real PostgreSQL
and Kafka, on tables filled by the embedded pipeline over real market data (BTCUSDT + ETHUSDT,
2021-01-01 .. 2021-01-18 20:00, which ends with ETH long and BTC flat): every route is checked
against the tables it reads, the curve against the report's definition, the promotions against
the table and control.v1 read back, and the WebSocket against a mark written as the ledger
writes one."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from meridian.v1 import common_pb2, order_event_pb2
from meridian_cli.pipeline import run_inprocess
from meridian_cli.settings import PipelineSettings
from meridian_common import codec, config, control, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import topic_configs
from meridian_control.app import create_app
from meridian_control.settings import ControlSettings

pytestmark = pytest.mark.integration

WRITE = "it-write-token-8c1d"
READ = "it-read-token-2b7e"
R = {"Authorization": f"Bearer {READ}"}
W = {"Authorization": f"Bearer {WRITE}"}
CAPITAL = Decimal("10000")
SLICE = {"MERIDIAN_INGEST_SYMBOLS": "BTCUSDT,ETHUSDT", "MERIDIAN_INGEST_START": "2021-01-01",
         "MERIDIAN_INGEST_END": "2021-01-18T20:00:00"}


def _ledger(url: str) -> str:
    settings = PipelineSettings.load(environ=SLICE, common={"bus": "inprocess"})
    stats = asyncio.run(run_inprocess(settings, url))
    assert stats.candles > 800
    return url


@pytest.fixture(scope="module")
def ledger(pg_port: int) -> Iterator[str]:
    """A database the embedded pipeline filled (read-only for the tests that use it)."""
    admin = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    name = f"t_ctlread_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    try:
        yield _ledger(f"postgresql://postgres@127.0.0.1:{pg_port}/{name}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def fresh_ledger(new_database: Callable[[str], str]) -> str:
    """A filled database of its own, for a test that writes."""
    return _ledger(new_database("ctlwrite"))


def _client(url: str, kafka_bootstrap: str, prefix: str, **values: Any) -> TestClient:
    settings = config.load(ControlSettings, environ={}, token=WRITE, read_token=READ, **values)
    common = config.load(config.CommonSettings, environ={}, bus="kafka",
                         kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
                         database_url=url)
    return TestClient(create_app(settings, common, KafkaBus(kafka_bootstrap)))


@pytest.fixture
def api(ledger: str, kafka_bootstrap: str, topic_prefix: str) -> Iterator[TestClient]:
    with _client(ledger, kafka_bootstrap, topic_prefix) as client:
        yield client


def _rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------ reads


def test_positions_are_the_table_with_the_latest_mark(api: TestClient, ledger: str) -> None:
    expected = _rows(ledger, """
        select p.symbol, p.quantity, p.average_price, p.realized_pnl, p.fees_paid,
               p.funding_paid, p.trades_closed, p.as_of, e.mark_price, e.unrealized_pnl,
               e.net_pnl
        from positions p join lateral (
            select * from equity e where e.account = p.account and e.exchange = p.exchange
              and e.symbol = p.symbol order by ts desc limit 1) e on true
        order by p.symbol""")
    body = api.get("/v1/positions", headers=R).json()["positions"]
    got = [(p["symbol"], Decimal(p["quantity"]), Decimal(p["average_price"]),
            Decimal(p["realized_pnl"]), Decimal(p["fees_paid"]), Decimal(p["funding_paid"]),
            p["trades_closed"], p["as_of"], Decimal(p["mark_price"]),
            Decimal(p["unrealized_pnl"]), Decimal(p["net_pnl"])) for p in body]
    assert got == [(*row[:7], _iso(row[7]), *row[8:]) for row in expected]
    sides = {p["symbol"]: p["side"] for p in body}
    assert sides == {"BTCUSDT": "flat", "ETHUSDT": "long"}  # the slice ends inside an ETH trade
    eth = next(p for p in body if p["symbol"] == "ETHUSDT")
    assert Decimal(eth["unrealized_pnl"]) != 0
    assert {p["account"] for p in body} == {"paper"}


def test_fills_newest_first_bounded_and_by_symbol(api: TestClient, ledger: str) -> None:
    newest = _rows(ledger, "select fill_id, ts, side, quantity, price, fee from fills "
                           "order by ts desc, fill_id desc limit 5")
    body = api.get("/v1/fills?limit=5", headers=R).json()["fills"]
    assert [(f["fill_id"], f["time"], f["side"], Decimal(f["quantity"]), Decimal(f["price"]),
             Decimal(f["fee"])) for f in body] == [
        (i, _iso(t), {1: "buy", 2: "sell"}[s], q, p, fee) for i, t, s, q, p, fee in newest]
    eth = _rows(ledger, "select fill_id from fills where symbol = 'ETHUSDT' "
                        "order by ts desc, fill_id desc")
    got = api.get("/v1/fills?symbol=ETHUSDT&limit=1000", headers=R).json()["fills"]
    assert [f["fill_id"] for f in got] == [r[0] for r in eth]
    assert len(eth) > 10


def _reference_curve(url: str) -> list[tuple[datetime, Decimal]]:
    """The account curve as the run report defines it: at each marked time, capital + the
    latest net PnL of every symbol marked so far."""
    latest: dict[tuple[str, str], Decimal] = {}
    curve: list[tuple[datetime, Decimal]] = []
    for exchange, symbol, ts, net in _rows(url, "select exchange, symbol, ts, net_pnl from "
                                                "equity where account = 'paper' order by ts"):
        latest[(exchange, symbol)] = net
        if curve and curve[-1][0] == ts:
            curve.pop()
        curve.append((ts, CAPITAL + sum(latest.values(), Decimal(0))))
    return curve


def test_equity_is_the_account_curve(api: TestClient, ledger: str) -> None:
    reference = _reference_curve(ledger)
    full = api.get("/v1/equity?max_points=10000", headers=R).json()
    assert full["account"] == "paper"
    assert full["points_total"] == len(reference) > 400
    assert [(p["time"], Decimal(p["equity"])) for p in full["points"]] == [
        (_iso(t), v) for t, v in reference]
    assert all(Decimal(p["equity"]) - Decimal(p["net_pnl"]) == CAPITAL for p in full["points"])

    # downsampled: the last point of each of 40 equal runs, exact values, newest point kept
    n, m = len(reference), 40
    keep = [i for i in range(1, n + 1) if i == n or (i - 1) * m // n != i * m // n]
    small = api.get(f"/v1/equity?account=paper&max_points={m}", headers=R).json()
    assert small["points_total"] == n
    assert len(small["points"]) == m
    assert [(p["time"], Decimal(p["equity"])) for p in small["points"]] == [
        (_iso(reference[i - 1][0]), reference[i - 1][1]) for i in keep]
    assert small["points"][-1]["time"] == _iso(reference[-1][0])

    start, end = datetime(2021, 1, 10, tzinfo=UTC), datetime(2021, 1, 12, tzinfo=UTC)
    ranged = api.get("/v1/equity?from=2021-01-10T00:00:00Z&to=2021-01-12T00:00:00Z",
                     headers=R).json()
    inside = [(t, v) for t, v in reference if start <= t <= end]
    assert ranged["points_total"] == len(inside) == 49
    assert [(p["time"], Decimal(p["equity"])) for p in ranged["points"]] == [
        (_iso(t), v) for t, v in inside]


def test_decisions_with_their_failed_rules(api: TestClient, ledger: str) -> None:
    rows = _rows(ledger, "select decision_id, approved, failed_rules, rules from "
                         "risk_decisions order by ts desc, decision_id desc")
    body = api.get("/v1/decisions?limit=1000", headers=R).json()["decisions"]
    assert [d["decision_id"] for d in body] == [r[0] for r in rows]
    for d, (_, approved, failed, rules) in zip(body, rows, strict=True):
        assert d["approved"] is approved
        assert [f["rule"] for f in d["failed_rules"]] == failed
        details = {r["rule"]: r["detail"] for r in rules}
        assert [f["detail"] for f in d["failed_rules"]] == [details[f] for f in failed]
    rejected = api.get("/v1/decisions?approved=false&limit=3", headers=R).json()["decisions"]
    assert len(rejected) == 3
    assert all(not d["approved"] and d["failed_rules"] for d in rejected)
    assert {r[0] for r in rows if not r[1]} >= {d["decision_id"] for d in rejected}


def test_status_shows_each_services_last_event(api: TestClient, ledger: str,
                                               kafka_bootstrap: str,
                                               topic_prefix: str) -> None:
    [(decision, fill, mark)] = _rows(ledger, "select (select max(ts) from risk_decisions), "
                                             "(select max(ts) from fills), "
                                             "(select max(ts) from equity)")
    command = control.kill_switch_command(True, "status test", "it", producer="it")
    asyncio.run(control.publish_command(KafkaBus(kafka_bootstrap), topic_prefix,
                                        control.KILL_SWITCH_KEY, command))
    body = api.get("/v1/status", headers=R).json()
    assert body["database"]["reachable"] is True
    assert body["bus"]["reachable"] is True
    times = {s["name"]: s["last_event_time"] for s in body["services"]}
    assert times == {"ingest": None, "features": None, "signals": None,
                     "risk": _iso(decision), "execution": _iso(fill), "ledger": _iso(mark)}
    assert body["kill_switch"]["engaged"] is True
    assert body["kill_switch"]["reason"] == "status test"
    assert body["models"] == []
    assert body["configs"] == []


def test_orders_from_order_events_on_kafka(api: TestClient, ledger: str, kafka_bootstrap: str,
                                           topic_prefix: str) -> None:
    fills = _rows(ledger, "select client_order_id, exchange, symbol, side, quantity, price, ts "
                          "from fills order by ts desc, fill_id desc limit 4")
    s = order_event_pb2

    async def publish() -> None:
        bus = KafkaBus(kafka_bootstrap)
        await bus.ensure_topics(topic_configs([topics.ORDER_EVENT], topic_prefix, 3))
        producer = bus.producer()
        try:
            for cid, exchange, symbol, side, qty, price, ts in reversed(fills):
                t = int(ts.timestamp() * 1000)
                for seq, status in enumerate((s.ORDER_STATUS_PENDING_SUBMIT,
                                              s.ORDER_STATUS_OPEN, s.ORDER_STATUS_FILLED), 1):
                    filled = status == s.ORDER_STATUS_FILLED
                    event = s.OrderEvent(
                        meta=common_pb2.Meta(id=f"{cid}:{seq}", cause_id=cid, event_time_ms=t,
                                             producer="execution"),
                        client_order_id=cid, exchange=exchange, symbol=symbol, status=status,
                        side=side, quantity=str(qty), sequence=seq,
                        filled_quantity=str(qty) if filled else "0",
                        average_price=str(price) if filled else "")
                    value, mtype = codec.encode(event)
                    await producer.send(topic_prefix + topics.ORDER_EVENT,
                                        f"{exchange}:{symbol}".encode(), value,
                                        ((codec.TYPE_HEADER, mtype),))
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(publish())
    body = api.get("/v1/orders?limit=10", headers=R).json()
    assert body["scanned"] == 12
    assert {o["client_order_id"] for o in body["orders"]} == {f[0] for f in fills}
    assert {o["status"] for o in body["orders"]} == {"filled"}
    by_id = {o["client_order_id"]: o for o in body["orders"]}
    for cid, _, symbol, _, qty, price, _ in fills:
        assert (by_id[cid]["symbol"], Decimal(by_id[cid]["filled_quantity"]),
                Decimal(by_id[cid]["average_price"])) == (symbol, qty, price)


def test_a_database_that_is_missing_or_empty_is_503(
        new_database: Callable[[str], str], kafka_bootstrap: str, topic_prefix: str) -> None:
    empty = new_database("ctlempty")
    missing = empty.rsplit("/", 1)[0] + "/t_no_such_database"
    for url, says in ((empty, "no ledger schema yet"), (missing, "does not exist")):
        with _client(url, kafka_bootstrap, topic_prefix) as client:
            response = client.get("/v1/positions", headers=R)
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert says in detail
        assert "t_no_such_database" not in detail
        assert "t_ctlempty" not in detail


# ------------------------------------------------------------------------------ promotions

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _seed_promotions(url: str) -> None:
    with psycopg.connect(url) as conn:
        for version, promoted in (("mt-1", T0), ("mt-2", None)):
            conn.execute(
                "insert into models (version, name, feature_set, feature_fingerprint, "
                "train_start, train_end, hyperparameters, metrics, threshold, content_hash, "
                "artifact_path, created_at, promoted_at) values (%s, 'meta-trend', "
                "'trend@2.0.0', 'f', %s, %s, %s, %s, 0.5, 'h', '/m', %s, %s)",
                (version, T0, T0, Jsonb({}), Jsonb({}), T0, promoted))
        conn.execute("insert into models (version, name, feature_set, feature_fingerprint, "
                     "train_start, train_end, hyperparameters, metrics, threshold, "
                     "content_hash, artifact_path, created_at) values ('other-1', 'other', "
                     "'trend@2.0.0', 'f', %s, %s, '{}', '{}', 0.5, 'h', '/o', %s)",
                     (T0, T0, T0))
        for version in ("c-1", "c-2"):
            conn.execute("insert into active_configs (strategy, version, leverage, margin_mode, "
                         "max_position_notional, created_at) values ('trend', %s, 2, "
                         "'isolated', 5000, %s)", (version, T0))


def _promoted(url: str, table: str, name_col: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in _rows(  # type: ignore[misc]
        url, f"select {name_col}, version from {table} where promoted_at is not null "
             f"order by 1")]


def test_promotions_write_the_table_and_announce(fresh_ledger: str, kafka_bootstrap: str,
                                                 topic_prefix: str) -> None:
    _seed_promotions(fresh_ledger)
    bus = KafkaBus(kafka_bootstrap)
    with _client(fresh_ledger, kafka_bootstrap, topic_prefix) as client:
        assert client.post("/v1/models/meta-trend/promote", json={"version": "mt-2"},
                           headers=R).status_code == 403
        model = client.post("/v1/models/meta-trend/promote", json={"version": "mt-2"},
                            headers=W)
        assert model.status_code == 202, model.text
        assert model.json()["previous_version"] == "mt-1"
        config_ = client.post("/v1/configs/trend/promote", json={"version": "c-1"}, headers=W)
        assert config_.status_code == 202, config_.text
        assert config_.json()["previous_version"] is None

        assert _promoted(fresh_ledger, "models", "name") == [("meta-trend", "mt-2")]
        assert _promoted(fresh_ledger, "active_configs", "strategy") == [("trend", "c-1")]
        state = asyncio.run(control.read_status(bus, topic_prefix))
        m = state.command("model:meta-trend", "model_promotion")
        c = state.command("config:trend", "config_promotion")
        assert m is not None
        assert c is not None
        assert (m.model_promotion.model_name, m.model_promotion.model_version) == (
            "meta-trend", "mt-2")
        assert (c.config_promotion.config_name, c.config_promotion.config_version) == (
            "trend", "c-1")
        assert m.meta.id == model.json()["id"]
        records = state.records

        # unknown versions, a version of another model: 404, nothing written or announced
        for path, version in (("/v1/models/meta-trend/promote", "mt-9"),
                              ("/v1/models/meta-trend/promote", "other-1"),
                              ("/v1/models/nobody/promote", "mt-1"),
                              ("/v1/configs/trend/promote", "mt-1")):
            response = client.post(path, json={"version": version}, headers=W)
            assert response.status_code == 404, (path, version, response.text)
        assert _promoted(fresh_ledger, "models", "name") == [("meta-trend", "mt-2")]
        assert asyncio.run(control.read_status(bus, topic_prefix)).records == records

        status = client.get("/v1/status", headers=R).json()
        assert [(p["name"], p["version"], p["announced_version"]) for p in status["models"]] \
            == [("meta-trend", "mt-2", "mt-2")]
        assert [(p["name"], p["version"]) for p in status["configs"]] == [("trend", "c-1")]

        # concurrent promotions of one name serialize: exactly one promoted row at the end,
        # and it is the version announced last (the one the signals service would load)
        def promote(version: str) -> int:
            return client.post("/v1/configs/trend/promote", json={"version": version},
                               headers=W).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(promote, ["c-1", "c-2"] * 4))
        assert codes == [202] * 8
        [(strategy, version)] = _promoted(fresh_ledger, "active_configs", "strategy")
        announced = asyncio.run(control.read_status(bus, topic_prefix)).command(
            "config:trend", "config_promotion")
        assert strategy == "trend"
        assert announced is not None
        assert announced.config_promotion.config_version == version


# ------------------------------------------------------------------------------ WebSocket


def test_the_websocket_pushes_a_new_mark(fresh_ledger: str, kafka_bootstrap: str,
                                         topic_prefix: str) -> None:
    with _client(fresh_ledger, kafka_bootstrap, topic_prefix, push_s=0.1) as client, \
            client.websocket_connect("/v1/ws/portfolio") as ws:
        ws.send_text(json.dumps({"token": READ}))
        first = ws.receive_json()
        assert first["type"] == "portfolio"
        assert first["positions"] == client.get("/v1/positions", headers=R).json()["positions"]
        [account] = first["equity"]
        curve = client.get("/v1/equity?max_points=2", headers=R).json()["points"]
        assert (account["time"], account["equity"]) == (curve[-1]["time"],
                                                        curve[-1]["equity"])

        # the ledger marks the next candle: equity rows and positions in one transaction
        with psycopg.connect(fresh_ledger) as conn:
            rows = conn.execute(
                "select distinct on (symbol) exchange, symbol, ts, quantity, mark_price, "
                "realized_pnl, fees_paid, funding_paid from equity order by symbol, ts desc"
            ).fetchall()
            for exchange, symbol, ts, qty, _, realized, fees, funding in rows:
                later, mark = ts + timedelta(hours=1), Decimal("2000")
                unrealized = Decimal("123.45") if qty else Decimal(0)
                net = realized + unrealized - fees - funding
                conn.execute(
                    "insert into equity (account, exchange, symbol, ts, quantity, mark_price, "
                    "realized_pnl, unrealized_pnl, fees_paid, net_pnl, funding_paid) values "
                    "('paper', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (exchange, symbol, later, qty, mark, realized, unrealized, fees, net,
                     funding))
                conn.execute("update positions set as_of = %s where symbol = %s",
                             (later, symbol))
        pushed = ws.receive_json()
        assert pushed["type"] == "portfolio"
        eth = next(p for p in pushed["positions"] if p["symbol"] == "ETHUSDT")
        assert (eth["mark_price"], eth["unrealized_pnl"]) == ("2000", "123.45")
        [account] = pushed["equity"]
        curve = client.get("/v1/equity?max_points=2", headers=R).json()["points"]
        assert (account["time"], account["equity"]) == (curve[-1]["time"],
                                                        curve[-1]["equity"])
        assert account["time"] == _iso(max(r[2] for r in rows) + timedelta(hours=1))
