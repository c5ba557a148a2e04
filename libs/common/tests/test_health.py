"""/healthz and /readyz on the metrics port: status codes and JSON bodies of the contract
(docs/observability.md) for a service starting, ready, stalled and failing a dependency check,
served over real HTTP next to /metrics. No credential ever reaches a body."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from meridian_common import host
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.health import Health, database_check, describe
from meridian_common.host import ServiceHost, all_topic_configs
from meridian_common.metrics import PrometheusSensor, serve
from meridian_common.testing import Running, until
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings

SECRET = "s3cr3t-Pa55word"
# nothing listens on port 1: the connect is refused at once
FAILING_DB = f"postgresql://meridian:{SECRET}@127.0.0.1:1/meridian"


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "POLL_TIMEOUT_S", 0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def _aget(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET from a thread: the readiness checks run on this test's loop, which must keep turning."""
    status, body = await asyncio.to_thread(_get, port, path)
    return status, json.loads(body)


@pytest.fixture
def port() -> int:
    return _free_port()


async def test_a_hosted_service_is_live_while_starting_and_ready_once_running(port: int) -> None:
    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs("", 3))
    sensor = PrometheusSensor("features")
    h = ServiceHost(FeaturesHandler(FeaturesSettings()), bus, sensor=sensor,
                    health=Health("features", on_ready=sensor.ready))
    server = serve(port, sensor, "127.0.0.1", health=h.health)
    assert server is not None
    try:
        assert await _aget(port, "/healthz") == (
            200, {"service": "features", "status": "starting", "checks": {"loop": "starting"}})
        status, body = await _aget(port, "/readyz")
        assert (status, body["status"]) == (503, "starting")
        async with Running(h):
            assert await _aget(port, "/healthz") == (
                200, {"service": "features", "status": "ok", "checks": {"loop": "ok"}})
            assert await _aget(port, "/readyz") == (
                200, {"service": "features", "status": "ok", "checks": {"state": "ok"}})
            metrics = (await asyncio.to_thread(_get, port, "/metrics"))[1]
            assert 'meridian_ready{service="features"} 1.0' in metrics
        status, body = await _aget(port, "/readyz")  # stopped
        assert (status, body["status"]) == (503, "not_ready")
        assert 'meridian_ready{service="features"} 0.0' in _get(port, "/metrics")[1]
    finally:
        server.shutdown()
        server.server_close()


def test_liveness_fails_when_the_loop_has_not_polled_within_the_stall_limit() -> None:
    clock = Clock()
    health = Health("risk", stall_s=60, clock=clock)
    clock.now += 3600  # starting (a long rebuild) is never a stall
    assert health.live().status == 200
    health.set_phase("running")
    clock.now += 59
    assert (health.live().status, health.live().state) == (200, "ok")
    health.beat()
    clock.now += 61
    answer = health.live()
    assert (answer.status, answer.state) == (503, "stalled")
    assert json.loads(answer.body()) == {
        "service": "risk", "status": "stalled",
        "checks": {"loop": "no progress for 61 s (limit 60 s)"}}
    health.beat()  # polling again makes it live again
    assert health.live().status == 200


async def test_a_failing_database_check_makes_readyz_503_without_the_password(port: int) -> None:
    sensor = PrometheusSensor("ledger")
    health = Health("ledger", checks={"database": database_check(FAILING_DB, timeout_s=1)},
                    on_ready=sensor.ready)
    health.attach(asyncio.get_running_loop())
    health.set_phase("running")
    server = serve(port, sensor, "127.0.0.1", health=health)
    assert server is not None
    try:
        status, raw = await asyncio.to_thread(_get, port, "/readyz")
    finally:
        server.shutdown()
        server.server_close()
    body = json.loads(raw)
    assert status == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["state"] == "ok"
    error = body["checks"]["database"]
    assert error != "ok"
    assert error.split(":")[0].endswith("Error")  # the exception's type first
    assert SECRET not in raw
    assert "postgresql://" not in raw
    assert sensor.registry.get_sample_value("meridian_ready", {"service": "ledger"}) == 0.0


async def test_a_passing_check_and_a_failing_one_are_each_named() -> None:
    async def fine() -> None:
        return None

    async def broken() -> None:
        raise ConnectionError(f"cannot reach redis://user:{SECRET}@cache:6379/0")

    health = Health("signals", checks={"cache": broken, "models": fine})
    health.set_phase("running")
    results = await health.evaluate()
    assert results == {"state": "ok", "cache": "ConnectionError: cannot reach <url>",
                       "models": "ok"}


def test_describe_scrubs_urls_passwords_and_given_secrets() -> None:
    exc = ValueError(f"connect failed: host=db password={SECRET} via postgresql://u:{SECRET}@db")
    text = describe(exc)
    assert SECRET not in text
    assert text.startswith("ValueError: connect failed")
    assert SECRET not in describe(RuntimeError(f"token {SECRET} refused"), (SECRET,))
    assert len(describe(RuntimeError("x" * 1000))) < 200


async def test_serve_without_a_host_is_ready_once_its_loop_runs(port: int) -> None:
    """Ingest serves its metrics without a ServiceHost: ready as soon as its loop turns."""
    sensor = PrometheusSensor("ingest")
    server = serve(port, sensor, "127.0.0.1", stall_s=30)
    assert server is not None
    try:
        await until(lambda: sensor.registry.get_sample_value(
            "meridian_ready", {"service": "ingest"}) == 1.0)
        assert await _aget(port, "/readyz") == (
            200, {"service": "ingest", "status": "ok", "checks": {"state": "ok"}})
        assert await _aget(port, "/healthz") == (
            200, {"service": "ingest", "status": "ok", "checks": {"loop": "ok"}})
        assert (await asyncio.to_thread(_get, port, "/metrics"))[0] == 200
    finally:
        server.shutdown()
        server.server_close()


async def test_handler_checks_join_the_readiness_of_a_hosted_service() -> None:
    class Checked(FeaturesHandler):
        def health_checks(self) -> dict[str, Any]:
            return {"database": database_check(FAILING_DB, timeout_s=1)}

    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs("", 3))
    h = ServiceHost(Checked(FeaturesSettings()), bus)
    async with Running(h):
        status, body = await _aget_answer(h.health)
    assert status == 503
    assert set(body["checks"]) == {"state", "database"}
    assert SECRET not in json.dumps(body)


async def _aget_answer(health: Health) -> tuple[int, dict[str, Any]]:
    answer = await asyncio.to_thread(health.ready)
    return answer.status, json.loads(answer.body())
