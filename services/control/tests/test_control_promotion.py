"""Promotions over the fake store and the in-process bus: the mark moves, then the command is on
control.v1 under model:<name> / config:<strategy>, decodable as every service decodes it; an
unknown version is 404 and announces nothing; a failed announcement says the mark was written."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian.v1 import control_pb2
from meridian_common import codec, control, ids, topics
from meridian_common.bus.inprocess import InProcessBus

WRITE = "write-token-0123456789abcdef"
PREFIX = "t."
W = {"Authorization": f"Bearer {WRITE}"}


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def _on_topic(bus: InProcessBus) -> list[tuple[str, control_pb2.Control]]:
    out = []
    for record in bus.read(PREFIX + topics.CONTROL):
        message = codec.decode(topics.CONTROL, record.value, record.header(codec.TYPE_HEADER))
        assert isinstance(message, control_pb2.Control)
        codec.validate(message)
        out.append((record.key.decode() if record.key else "", message))
    return out


def test_promote_a_model(client: TestClient, bus: InProcessBus, fake_store: Any) -> None:
    response = client.post("/v1/models/meta-trend/promote", json={"version": " v2 "},
                           headers=W)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"kind": "model", "name": "meta-trend", "version": "v2",
                    "previous_version": "v1", "promoted_at": "2021-01-01T00:00:00Z",
                    "id": ids.digest("model_promotion", "meta-trend", "v2"),
                    "time": "2023-11-14T22:13:21.000Z", "event_time_ms": 1_700_000_001_000,
                    "producer": "control", "topic": "t.control.v1", "key": "model:meta-trend"}
    assert fake_store.models["meta-trend"] == {"v1": False, "v2": True}
    [(key, command)] = _on_topic(bus)
    assert key == "model:meta-trend"
    assert command.WhichOneof("command") == "model_promotion"
    assert (command.model_promotion.model_name, command.model_promotion.model_version) == (
        "meta-trend", "v2")
    assert command.meta.producer == "control"
    # what `meridian control status` and the services fold
    state = asyncio.run(control.read_status(bus, PREFIX))
    assert state.command("model:meta-trend", "model_promotion") is not None


def test_promote_a_config(client: TestClient, bus: InProcessBus, fake_store: Any) -> None:
    response = client.post("/v1/configs/trend/promote", json={"version": "c1"}, headers=W)
    assert response.status_code == 202, response.text
    assert response.json()["previous_version"] is None
    assert response.json()["key"] == "config:trend"
    [(key, command)] = _on_topic(bus)
    assert key == "config:trend"
    assert (command.config_promotion.config_name,
            command.config_promotion.config_version) == ("trend", "c1")
    assert fake_store.configs["trend"] == {"c1": True}


def test_promoting_again_announces_again(client: TestClient, bus: InProcessBus) -> None:
    for _ in range(2):
        assert client.post("/v1/configs/trend/promote", json={"version": "c1"},
                           headers=W).status_code == 202
    assert len(_on_topic(bus)) == 2
    second = client.post("/v1/configs/trend/promote", json={"version": "c1"}, headers=W)
    assert second.json()["previous_version"] == "c1"


@pytest.mark.parametrize(("path", "version"), [
    ("/v1/models/meta-trend/promote", "v9"),
    ("/v1/models/other/promote", "v1"),
    ("/v1/configs/trend/promote", "v1"),
])
def test_an_unknown_version_is_404_and_announces_nothing(
        client: TestClient, bus: InProcessBus, path: str, version: str) -> None:
    response = client.post(path, json={"version": version}, headers=W)
    assert response.status_code == 404
    assert version in response.json()["detail"] or "other" in response.json()["detail"]
    assert PREFIX + topics.CONTROL not in bus._logs


@pytest.mark.parametrize("body", [{}, {"version": ""}, {"version": "  "}, {"version": 3},
                                  {"version": "v" * 129}, {"version": "v1", "extra": 1}])
def test_bad_bodies_are_422(client: TestClient, fake_store: Any, body: dict[str, Any]) -> None:
    response = client.post("/v1/models/meta-trend/promote", json=body, headers=W)
    assert response.status_code == 422
    assert not fake_store.calls


def test_a_failed_announcement_says_the_mark_was_written(
        client: TestClient, bus: InProcessBus, fake_store: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(*_: Any) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(bus, "ensure_topics", down)
    response = client.post("/v1/models/meta-trend/promote", json={"version": "v2"}, headers=W)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "cannot reach Kafka" in detail
    assert "promoted in the database but not announced" in detail
    assert "repeat the request" in detail
    assert fake_store.models["meta-trend"]["v2"] is True


def test_a_database_down_writes_and_announces_nothing(
        client: TestClient, bus: InProcessBus, fake_store: Any) -> None:
    fake_store.down = "PostgreSQL unavailable: connection refused (ConnectionRefusedError)"
    response = client.post("/v1/configs/trend/promote", json={"version": "c1"}, headers=W)
    assert response.status_code == 503
    assert response.json()["detail"] == fake_store.down
    assert PREFIX + topics.CONTROL not in bus._logs
