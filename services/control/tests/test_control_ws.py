"""/v1/ws/portfolio over the fake store: the book at once, then a message only when the book
changes (polls in between send nothing), each account's equity, and an `error` message (once)
while the database is down, then the book again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian_control.schemas import Position
from meridian_control.ws import account_equity

READ = "read-token-fedcba9876543210"
WS = "/v1/ws/portfolio"


def _wait_polls(store: Any, n: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while store.polls < n:
        assert time.monotonic() < deadline, f"only {store.polls} polls"
        time.sleep(0.01)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(push_s=0.05)


def test_pushes_the_book_then_only_changes(client: TestClient, fake_store: Any,
                                           make_position: Callable[..., Position]) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text(json.dumps({"token": READ}))
        first = ws.receive_json()
        assert first["type"] == "portfolio"
        assert [p["symbol"] for p in first["positions"]] == ["BTCUSDT"]
        assert first["equity"] == [{"account": "paper", "time": "2021-01-01T00:00:00Z",
                                    "net_pnl": "12.5", "equity": "10012.5"}]
        # several polls of an unchanged book send nothing: the next message is the change
        _wait_polls(fake_store, fake_store.polls + 4)
        later = fake_store.book[0].as_of + timedelta(hours=1)
        fake_store.book = [make_position(net="20", as_of=later),
                           make_position("ETHUSDT", "-2", net="-5", as_of=later)]
        second = ws.receive_json()
        assert [p["symbol"] for p in second["positions"]] == ["BTCUSDT", "ETHUSDT"]
        assert second["positions"][1]["side"] == "short"
        assert second["equity"] == [{"account": "paper", "time": "2021-01-01T01:00:00Z",
                                     "net_pnl": "15", "equity": "10015"}]


def test_a_database_outage_is_one_error_then_the_book_again(client: TestClient,
                                                            fake_store: Any) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text(json.dumps({"token": READ}))
        assert ws.receive_json()["type"] == "portfolio"
        fake_store.down = "PostgreSQL unavailable: connection refused (ConnectionRefusedError)"
        error = ws.receive_json()
        assert error == {"type": "error", "positions": [], "equity": [],
                         "detail": fake_store.down}
        _wait_polls(fake_store, fake_store.polls + 4)  # still down: nothing more is sent
        fake_store.down = None
        assert ws.receive_json()["type"] == "portfolio"


def test_no_database_configured_is_an_error_message(
        make_client: Callable[..., TestClient]) -> None:
    with make_client(store=None).websocket_connect(f"{WS}?token={READ}") as ws:
        message = ws.receive_json()
    assert message["type"] == "error"
    assert "MERIDIAN_DATABASE_URL" in message["detail"]


def test_a_client_leaving_stops_the_polls(client: TestClient, fake_store: Any) -> None:
    with client.websocket_connect(f"{WS}?token={READ}") as ws:
        ws.receive_json()
    time.sleep(0.3)
    polls = fake_store.polls
    time.sleep(0.3)
    assert fake_store.polls == polls


def test_account_equity_sums_each_accounts_symbols(
        make_position: Callable[..., Position]) -> None:
    book = [make_position(net="10"), make_position("ETHUSDT", net="-2.5"),
            make_position(account="live", net="1")]
    assert [(e.account, e.net_pnl, e.equity) for e in account_equity(book, Decimal(100))] == [
        ("live", Decimal(1), Decimal(101)), ("paper", Decimal("7.5"), Decimal("107.5"))]
    assert account_equity([], Decimal(100)) == []
