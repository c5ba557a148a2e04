"""The read routes over a fake store (parameters, account choice, bounds, 503s), an unreachable
real database URL (one line, no password), GET /v1/status when a dependency is down, and
GET /v1/orders folding order.event.v1 read back from the in-process bus."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian.v1 import common_pb2, control_pb2, order_event_pb2
from meridian_common import codec, control, topics
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.host import topic_configs
from meridian_control.app import create_app
from meridian_control.store import describe

WRITE = "write-token-0123456789abcdef"
READ = "read-token-fedcba9876543210"
PREFIX = "t."
H = {"Authorization": f"Bearer {READ}"}


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


# ------------------------------------------------------------------------------ parameters


def test_positions_and_fills_pass_through(client: TestClient, fake_store: Any) -> None:
    body = client.get("/v1/positions", headers=H).json()
    [p] = body["positions"]
    assert (p["symbol"], p["quantity"], p["side"], p["net_pnl"]) == ("BTCUSDT", "0.5", "long",
                                                                     "12.5")
    fills = client.get("/v1/fills?symbol=BTCUSDT&limit=7", headers=H).json()["fills"]
    assert fills[0]["side"] == "buy"
    assert ("fills", ("BTCUSDT", 7)) in fake_store.calls
    client.get("/v1/fills", headers=H)
    assert ("fills", (None, 100)) in fake_store.calls


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", f"symbol={'X' * 65}"])
def test_fills_parameters_are_bounded(client: TestClient, query: str) -> None:
    assert client.get(f"/v1/fills?{query}", headers=H).status_code == 422


def test_decisions_parameters(client: TestClient, fake_store: Any) -> None:
    body = client.get("/v1/decisions?limit=5&approved=false&symbol=ETHUSDT", headers=H).json()
    assert body["decisions"][0]["failed_rules"] == [{"rule": "system.kill_switch",
                                                     "detail": "engaged"}]
    assert ("decisions", (5, False, "ETHUSDT")) in fake_store.calls
    client.get("/v1/decisions", headers=H)
    assert ("decisions", (100, None, None)) in fake_store.calls
    assert client.get("/v1/decisions?limit=1001", headers=H).status_code == 422
    assert client.get("/v1/decisions?approved=maybe", headers=H).status_code == 422


def test_equity_uses_the_only_account_and_utc(client: TestClient, fake_store: Any) -> None:
    body = client.get("/v1/equity?from=2021-01-01T00:00:00&to=2021-01-02T00:00:00%2B01:00"
                      "&max_points=50", headers=H).json()
    assert body["account"] == "paper"
    assert body["initial_capital"] == "10000"
    assert body["points_total"] == 3
    assert [p["equity"] for p in body["points"]] == ["10000", "10001", "10002"]
    [(_, args)] = [c for c in fake_store.calls if c[0] == "equity"]
    account, start, end, max_points, capital = args
    assert (account, max_points, capital) == ("paper", 50, Decimal(10000))
    assert start == datetime(2021, 1, 1, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2021, 1, 1, 23, tzinfo=UTC)


def test_equity_with_several_accounts_needs_one_named(client: TestClient,
                                                      fake_store: Any) -> None:
    fake_store.account_names = ["live", "paper"]
    response = client.get("/v1/equity", headers=H)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "account"]
    assert "live, paper" in error["msg"]
    assert client.get("/v1/equity?account=live", headers=H).json()["account"] == "live"


def test_equity_before_anything_was_marked(client: TestClient, fake_store: Any) -> None:
    fake_store.account_names = []
    body = client.get("/v1/equity", headers=H).json()
    assert body == {"account": None, "initial_capital": "10000", "points_total": 0,
                    "points": []}


def test_equity_capital_comes_from_the_setting(make_client: Callable[..., TestClient]) -> None:
    client = make_client(initial_capital="2500.5")
    body = client.get("/v1/equity", headers=H).json()
    assert body["initial_capital"] == "2500.5"
    assert body["points"][1]["equity"] == "2501.5"


@pytest.mark.parametrize("query", ["from=2021-02-01&to=2021-01-01", "max_points=1",
                                   "max_points=10001", "from=yesterday"])
def test_equity_bad_parameters_are_422(client: TestClient, query: str) -> None:
    assert client.get(f"/v1/equity?{query}", headers=H).status_code == 422


# ------------------------------------------------------------------------------ 503s

DB_ROUTES = ["/v1/positions", "/v1/fills", "/v1/equity", "/v1/decisions"]


@pytest.mark.parametrize("path", DB_ROUTES)
def test_a_database_that_fails_is_503_in_one_line(client: TestClient, fake_store: Any,
                                                  path: str) -> None:
    fake_store.down = "PostgreSQL unavailable: connection refused (ConnectionRefusedError)"
    response = client.get(path, headers=H)
    assert response.status_code == 503
    assert response.json() == {"detail": fake_store.down}


@pytest.mark.parametrize("path", DB_ROUTES)
def test_no_database_configured_is_503_naming_the_variable(
        make_client: Callable[..., TestClient], path: str) -> None:
    client = make_client(store=None)
    response = client.get(path, headers=H)
    assert response.status_code == 503
    assert "MERIDIAN_DATABASE_URL" in response.json()["detail"]
    # the kill switch does not need the database
    assert client.get("/v1/kill-switch", headers=H).status_code == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_database_never_shows_its_url_or_password(
        bus: InProcessBus, caplog: pytest.LogCaptureFixture) -> None:
    from meridian_common import config
    from meridian_control.settings import ControlSettings

    password = "pw-Zq8r3XtL0s"
    port = _closed_port()
    url = f"postgresql://meridian:{password}@127.0.0.1:{port}/ledgerdb"
    app = create_app(config.load(ControlSettings, environ={}, token=WRITE, read_token=READ),
                     config.load(config.CommonSettings, environ={}, bus="inprocess",
                                 topic_prefix=PREFIX, database_url=url), bus)
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        bodies = []
        for path in [*DB_ROUTES, "/v1/status"]:
            response = client.get(path, headers=H)
            bodies.append(response.text)
            if path != "/v1/status":
                assert response.status_code == 503, response.text
                detail = response.json()["detail"]
                assert "\n" not in detail
                assert detail.startswith("PostgreSQL unavailable: ")
                assert "MERIDIAN_DATABASE_URL" in detail
        promote = client.post("/v1/models/m/promote", json={"version": "v"},
                              headers={"Authorization": f"Bearer {WRITE}"})
        assert promote.status_code == 503
        bodies.append(promote.text)
        status = client.get("/v1/status", headers=H).json()
    assert status["database"]["reachable"] is False
    text = "".join(bodies) + caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (password, str(port), "ledgerdb", "meridian:"):
        assert secret not in text, secret
    assert repr(app.state.ctx.store) == "SqlStore(url=**********)"


def test_describe_names_a_missing_schema() -> None:
    class Undefined(Exception):
        sqlstate = "42P01"

    wrapped = RuntimeError("boom")
    wrapped.__cause__ = Undefined('relation "positions" does not exist')
    assert "no ledger schema yet" in describe(wrapped)
    refused = ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 5433)")
    line = describe(refused)
    assert "connection refused" in line
    assert "10.1.2.3" not in line


# ------------------------------------------------------------------------------ status


def test_status_with_every_dependency_up(client: TestClient, bus: InProcessBus) -> None:
    for key, command in [
        ("halt:execution", control_pb2.Control(
            meta=common_pb2.Meta(id="h1", event_time_ms=1, producer="execution"),
            halt=control_pb2.Halt(service="execution", halted=True, reason="mismatch"))),
        ("model:meta-trend", control_pb2.Control(
            meta=common_pb2.Meta(id="m1", event_time_ms=2, producer="cli"),
            model_promotion=control_pb2.ModelPromotion(model_name="meta-trend",
                                                       model_version="v0"))),
    ]:
        asyncio.run(control.publish_command(bus, PREFIX, key, command))
    body = client.get("/v1/status", headers=H).json()
    assert body["database"] == {"reachable": True, "detail": None}
    assert body["bus"] == {"reachable": True, "detail": None}
    services = {s["name"]: s for s in body["services"]}
    assert list(services) == ["ingest", "features", "signals", "risk", "execution", "ledger"]
    assert services["risk"]["last_event_time"] == "2021-01-01T00:00:00Z"
    assert services["ledger"]["last_event_time"] == "2021-01-01T01:00:00Z"
    assert services["features"]["last_event_time"] is None
    assert services["execution"]["halted"] is True
    assert services["execution"]["halt_reason"] == "mismatch"
    assert services["risk"]["halted"] is False
    assert body["kill_switch"] == {"engaged": False, "reason": None, "actor": None,
                                   "time": None}
    # promoted v1 in the table, v0 last announced: both shown, so the difference is visible
    assert body["models"] == [{"name": "meta-trend", "version": "v1",
                               "promoted_at": "2021-01-01T00:00:00Z",
                               "announced_version": "v0"}]
    assert body["configs"] == []


def test_status_with_the_database_down(client: TestClient, fake_store: Any) -> None:
    fake_store.down = "PostgreSQL unavailable: connection refused (ConnectionRefusedError)"
    response = client.get("/v1/status", headers=H)
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == {"reachable": False, "detail": fake_store.down}
    assert all(s["last_event_time"] is None for s in body["services"])
    assert body["kill_switch"]["engaged"] is False  # Kafka still answers


def test_status_with_kafka_down(client: TestClient, bus: InProcessBus,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(*_: Any) -> list[int]:
        raise OSError("connection refused")

    monkeypatch.setattr(bus, "topic_ends", down)
    body = client.get("/v1/status", headers=H).json()
    assert body["bus"]["reachable"] is False
    assert "cannot reach Kafka" in body["bus"]["detail"]
    assert body["kill_switch"] is None
    assert body["database"]["reachable"] is True
    assert body["services"][3]["last_event_time"] == "2021-01-01T00:00:00Z"


# ------------------------------------------------------------------------------ orders

S = order_event_pb2


def _event(client_id: str, seq: int, status: int, t: int, symbol: str = "BTCUSDT",
           filled: str = "0") -> order_event_pb2.OrderEvent:
    return S.OrderEvent(
        meta=common_pb2.Meta(id=f"{client_id}:{seq}", cause_id="a", event_time_ms=t,
                             producer="execution"),
        client_order_id=client_id, exchange="binance", symbol=symbol, status=status,
        side=common_pb2.SIDE_BUY, quantity="0.5", filled_quantity=filled,
        average_price="30000" if filled != "0" else "", sequence=seq,
        reason="margin" if status == S.ORDER_STATUS_REJECTED else "")


async def _publish(bus: InProcessBus, records: list[tuple[str, Any]]) -> None:
    await bus.ensure_topics(topic_configs([topics.ORDER_EVENT], PREFIX, 3))
    producer = bus.producer()
    for key, message in records:
        if isinstance(message, bytes):
            await producer.send(PREFIX + topics.ORDER_EVENT, key.encode(), message)
            continue
        value, mtype = codec.encode(message)
        await producer.send(PREFIX + topics.ORDER_EVENT, key.encode(), value,
                            ((codec.TYPE_HEADER, mtype),))
    await producer.flush()


def test_orders_are_the_latest_transition_of_each(client: TestClient,
                                                  bus: InProcessBus) -> None:
    btc, eth = "binance:BTCUSDT", "binance:ETHUSDT"
    asyncio.run(_publish(bus, [
        (btc, _event("a", 1, S.ORDER_STATUS_PENDING_SUBMIT, 1000)),
        (btc, _event("a", 2, S.ORDER_STATUS_OPEN, 1000)),
        (btc, common_pb2.Watermark(key=btc, event_time_ms=1500, producer="execution")),
        (btc, b"\x00not a message"),
        (btc, _event("a", 3, S.ORDER_STATUS_FILLED, 2000, filled="0.5")),
        (eth, _event("b", 1, S.ORDER_STATUS_PENDING_SUBMIT, 3000, symbol="ETHUSDT")),
        (eth, _event("b", 2, S.ORDER_STATUS_REJECTED, 3000, symbol="ETHUSDT")),
    ]))
    body = client.get("/v1/orders", headers=H).json()
    assert body["topic"] == "t.order.event.v1"
    assert body["scanned"] == 7
    assert [(o["client_order_id"], o["status"], o["sequence"]) for o in body["orders"]] == [
        ("b", "rejected", 2), ("a", "filled", 3)]
    filled = body["orders"][1]
    assert (filled["side"], filled["quantity"], filled["filled_quantity"],
            filled["average_price"], filled["time"]) == ("buy", "0.5", "0.5", "30000",
                                                         "1970-01-01T00:00:02Z")
    assert body["orders"][0]["reason"] == "margin"
    assert body["orders"][0]["average_price"] is None
    only_btc = client.get("/v1/orders?symbol=BTCUSDT&limit=1", headers=H).json()["orders"]
    assert [o["client_order_id"] for o in only_btc] == ["a"]


def test_orders_read_only_the_tail(make_client: Callable[..., TestClient],
                                   bus: InProcessBus) -> None:
    key = "binance:BTCUSDT"
    asyncio.run(_publish(bus, [(key, _event("old", 1, S.ORDER_STATUS_FILLED, 1)),
                               (key, _event("new", 1, S.ORDER_STATUS_OPEN, 2)),
                               (key, _event("new", 2, S.ORDER_STATUS_FILLED, 3))]))
    body = make_client(orders_scan=2).get("/v1/orders", headers=H).json()
    assert body["scanned"] == 2
    assert [o["client_order_id"] for o in body["orders"]] == ["new"]


def test_orders_before_any_execution_ran(client: TestClient) -> None:
    assert client.get("/v1/orders", headers=H).json() == {"topic": "t.order.event.v1",
                                                          "scanned": 0, "orders": []}
