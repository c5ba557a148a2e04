"""The control plane's HTTP API over the in-process bus: auth, validation, publish then read, the
breaker level, what the risk gate makes of a command, OpenAPI, and secrets kept out of sight."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from meridian.v1 import common_pb2, control_pb2
from meridian_common import codec, config, control, topics
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.host import ServiceHost, all_topic_configs
from meridian_control.app import create_app
from meridian_control.auth import Tokens
from meridian_control.settings import ControlSettings
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

PREFIX = "t."
WRITE = "write-token-0123456789abcdef"
READ = "read-token-fedcba9876543210"
T0 = 1_700_000_000_000


class FixedClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def now_ms(self) -> int:
        self.now += 1000
        return self.now


def _settings(**values: Any) -> ControlSettings:
    return config.load(ControlSettings, environ={}, **{"token": WRITE, "read_token": READ,
                                                       **values})


def _common() -> config.CommonSettings:
    return config.load(config.CommonSettings, environ={}, bus="inprocess", topic_prefix=PREFIX)


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


@pytest.fixture
def client(bus: InProcessBus) -> TestClient:
    return TestClient(create_app(_settings(), _common(), bus, clock=FixedClock()))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ENGAGE = {"engaged": True, "reason": "exchange outage", "actor": "alice"}


# ------------------------------------------------------------------------------ auth


def test_health_needs_no_token(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(("headers", "get", "post"), [
    ({}, 401, 401),
    ({"Authorization": "Bearer wrong-token"}, 401, 401),
    ({"Authorization": f"Basic {WRITE}"}, 401, 401),  # not a bearer token
    ({"Authorization": "Bearer"}, 401, 401),
    ({"Authorization": f"Bearer {WRITE}x"}, 401, 401),
    ({"Authorization": f"Bearer {WRITE[:-1]}"}, 401, 401),
    (_auth(READ), 200, 403),
    (_auth(WRITE), 200, 202),
    ({"Authorization": f"bearer {WRITE}"}, 200, 202),  # the scheme is case-insensitive
])
def test_auth_matrix(client: TestClient, headers: dict[str, str], get: int, post: int) -> None:
    response = client.get("/v1/kill-switch", headers=headers)
    assert response.status_code == get, response.text
    response = client.post("/v1/kill-switch", json=ENGAGE, headers=headers)
    assert response.status_code == post, response.text
    if post == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if post in (401, 403):
        assert set(response.json()) == {"detail"}


def test_without_a_read_token_only_the_write_token_reads(bus: InProcessBus) -> None:
    client = TestClient(create_app(_settings(read_token=None), _common(), bus))
    assert client.get("/v1/kill-switch", headers=_auth(READ)).status_code == 401
    assert client.get("/v1/kill-switch", headers=_auth(WRITE)).status_code == 200


def test_auth_comes_before_validation(client: TestClient) -> None:
    # a caller without the token learns nothing about the body the route expects
    for headers in ({}, _auth("nope")):
        response = client.post("/v1/kill-switch", json={"engaged": "?"}, headers=headers)
        assert response.status_code == 401
    response = client.post("/v1/kill-switch", json={"engaged": "?"}, headers=_auth(READ))
    assert response.status_code == 403


def test_a_refused_request_publishes_nothing(client: TestClient, bus: InProcessBus) -> None:
    for headers in ({}, _auth("nope"), _auth(READ)):
        client.post("/v1/kill-switch", json=ENGAGE, headers=headers)
    assert PREFIX + topics.CONTROL not in bus._logs  # not even created


def test_tokens_compare_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = secrets.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("meridian_control.auth.secrets.compare_digest", spy)
    tokens = Tokens(SecretStr(WRITE), SecretStr(READ))
    assert tokens.access(WRITE) == 2
    assert tokens.access(READ) == 1
    assert tokens.access("other") is None
    assert len(calls) == 6  # both tokens compared every time, whichever matches


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(("body", "field"), [
    ({"engaged": True, "reason": "   "}, "reason"),
    ({"engaged": True, "reason": ""}, "reason"),
    ({"engaged": True}, "reason"),
    ({"reason": "x"}, "engaged"),
    ({"engaged": "yes", "reason": "x"}, "engaged"),  # strict: no guessing at a kill switch
    ({"engaged": 1, "reason": "x"}, "engaged"),
    ({"engaged": True, "reason": "x", "actor": " "}, "actor"),
    ({"engaged": True, "reason": "x" * 1001}, "reason"),
    ({"engaged": True, "reason": "x", "engage": True}, "engage"),  # unknown field
])
def test_invalid_bodies_are_422_naming_the_field(client: TestClient, bus: InProcessBus,
                                                 body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/kill-switch", json=body, headers=_auth(WRITE))
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", field]], errors
    assert PREFIX + topics.CONTROL not in bus._logs


def test_blank_reason_message(client: TestClient) -> None:
    response = client.post("/v1/kill-switch", json={"engaged": True, "reason": " "},
                           headers=_auth(WRITE))
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "reason"]
    assert "must not be empty or blank" in error["msg"]


def test_a_body_that_is_not_json_is_422(client: TestClient) -> None:
    response = client.post("/v1/kill-switch", content=b"engage!", headers={
        **_auth(WRITE), "Content-Type": "application/json"})
    assert response.status_code == 422


# ------------------------------------------------------------------------------ publish and read


def test_never_set(client: TestClient) -> None:
    response = client.get("/v1/kill-switch", headers=_auth(READ))
    assert response.status_code == 200
    assert response.json() == {"engaged": False, "reason": None, "actor": None, "time": None,
                               "id": None, "producer": None, "breaker": None,
                               "topic": "t.control.v1"}


def test_publish_then_get(client: TestClient, bus: InProcessBus) -> None:
    response = client.post("/v1/kill-switch", json={"engaged": True,
                                                    "reason": "  exchange outage  ",
                                                    "actor": "alice"}, headers=_auth(WRITE))
    assert response.status_code == 202
    published = response.json()
    assert published == {"engaged": True, "reason": "exchange outage", "actor": "alice",
                         "time": "2023-11-14T22:13:21.000Z", "event_time_ms": T0 + 1000,
                         "id": f"control:kill_switch:{T0 + 1000}", "producer": "control",
                         "topic": "t.control.v1", "key": "kill_switch"}

    # on the topic: one Control under the key kill_switch, valid as every consumer checks it
    [record] = bus.read(PREFIX + topics.CONTROL)
    assert record.key == b"kill_switch"
    command = codec.decode(topics.CONTROL, record.value, record.header(codec.TYPE_HEADER))
    assert isinstance(command, control_pb2.Control)
    codec.validate(command)
    assert command.kill_switch.engaged is True
    assert len(bus.end_offsets(PREFIX + topics.CONTROL)) == 1  # created with one partition

    shown = client.get("/v1/kill-switch", headers=_auth(READ)).json()
    assert shown == {"engaged": True, "reason": "exchange outage", "actor": "alice",
                     "time": "2023-11-14T22:13:21.000Z", "id": published["id"],
                     "producer": "control", "breaker": None, "topic": "t.control.v1"}

    # clear, with the default actor; the latest command wins
    response = client.post("/v1/kill-switch", json={"engaged": False, "reason": "over"},
                           headers=_auth(WRITE))
    assert response.status_code == 202
    assert response.json()["actor"] == "api"
    shown = client.get("/v1/kill-switch", headers=_auth(WRITE)).json()
    assert (shown["engaged"], shown["reason"], shown["actor"]) == (False, "over", "api")
    assert shown["time"] == "2023-11-14T22:13:22.000Z"


def test_what_the_cli_published_is_shown(client: TestClient, bus: InProcessBus) -> None:
    command = control.kill_switch_command(True, "from the cli", "bob", producer="cli",
                                          now_ms=T0)
    asyncio.run(control.publish_command(bus, PREFIX, control.KILL_SWITCH_KEY, command))
    shown = client.get("/v1/kill-switch", headers=_auth(READ)).json()
    assert (shown["engaged"], shown["actor"], shown["producer"]) == (True, "bob", "cli")


def test_the_breaker_level_is_shown(client: TestClient, bus: InProcessBus) -> None:
    breaker = control_pb2.Control(
        meta=common_pb2.Meta(id=f"breaker:{T0}:pause", event_time_ms=T0, producer="risk"),
        breaker=control_pb2.BreakerState(level="pause", until_ms=T0 + 3_600_000,
                                         reason="portfolio.daily_loss 5.2% >= 5%"))
    asyncio.run(control.publish_command(bus, PREFIX, control.BREAKER_KEY, breaker))
    shown = client.get("/v1/kill-switch", headers=_auth(READ)).json()
    assert shown["engaged"] is False
    assert shown["breaker"] == {"level": "pause", "until_ms": T0 + 3_600_000,
                                "until": "2023-11-14T23:13:20.000Z",
                                "reason": "portfolio.daily_loss 5.2% >= 5%",
                                "time": "2023-11-14T22:13:20.000Z", "id": f"breaker:{T0}:pause"}
    normal = control_pb2.Control(
        meta=common_pb2.Meta(id=f"breaker:{T0 + 1}:normal", event_time_ms=T0 + 1,
                             producer="risk"),
        breaker=control_pb2.BreakerState(level="normal"))
    asyncio.run(control.publish_command(bus, PREFIX, control.BREAKER_KEY, normal))
    shown = client.get("/v1/kill-switch", headers=_auth(READ)).json()
    assert shown["breaker"]["level"] == "normal"
    assert shown["breaker"]["until"] is None


async def _restored_kill_switch(bus: InProcessBus) -> bool:
    """The kill switch of a risk gate started on these topics (restored from control.v1)."""
    await bus.ensure_topics(all_topic_configs(PREFIX, 3))
    handler = RiskHandler(RiskSettings())
    stop = asyncio.Event()
    stop.set()
    host = ServiceHost(handler, bus, prefix=PREFIX)
    await host.run(stop)
    assert host.ready.is_set()
    return handler.kill_switch


def test_a_risk_gate_holds_what_the_api_published(client: TestClient,
                                                  bus: InProcessBus) -> None:
    assert client.post("/v1/kill-switch", json=ENGAGE, headers=_auth(WRITE)).status_code == 202
    assert asyncio.run(_restored_kill_switch(bus)) is True
    client.post("/v1/kill-switch", json={"engaged": False, "reason": "over"},
                headers=_auth(WRITE))
    assert asyncio.run(_restored_kill_switch(bus)) is False


def test_an_unreachable_bus_is_503_in_one_line(bus: InProcessBus,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(*_: Any) -> list[int]:
        raise OSError("connection refused")

    monkeypatch.setattr(bus, "topic_ends", down)
    client = TestClient(create_app(_settings(), _common(), bus))
    response = client.get("/v1/kill-switch", headers=_auth(READ))
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "cannot reach Kafka" in detail
    assert "\n" not in detail


def test_a_publish_that_times_out_says_it_may_have_happened(
        bus: InProcessBus, monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow(*_: Any) -> None:
        await asyncio.sleep(5)

    monkeypatch.setattr(bus, "ensure_topics", slow)
    client = TestClient(create_app(_settings(kafka_timeout_s=0.05), _common(), bus))
    response = client.post("/v1/kill-switch", json=ENGAGE, headers=_auth(WRITE))
    assert response.status_code == 503
    assert "may or may not have been published" in response.json()["detail"]


# ------------------------------------------------------------------------------ OpenAPI


def test_openapi_documents_the_kill_switch(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    get = paths["/v1/kill-switch"]["get"]
    post = paths["/v1/kill-switch"]["post"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KillSwitchStatus"}
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KillSwitchPublished"}
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KillSwitchChange"}
    assert {"401", "403", "422", "503"} <= set(post["responses"])
    assert get["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "security" not in paths["/health"]["get"]
    schemas = doc["components"]["schemas"]
    assert schemas["KillSwitchChange"]["required"] == ["engaged", "reason"]
    assert {"engaged", "reason", "actor", "time", "breaker"} <= set(
        schemas["KillSwitchStatus"]["properties"])


# ------------------------------------------------------------------------------ secrets


def test_tokens_never_show(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings()
    for shown in (repr(settings), str(settings), repr(Tokens(settings.token, settings.read_token)),
                  str(settings.model_dump())):
        assert WRITE not in shown
        assert READ not in shown
    with caplog.at_level(logging.DEBUG):
        bodies = [client.post("/v1/kill-switch", json=ENGAGE, headers=_auth(t)).text
                  for t in (WRITE, READ, "guess-" + WRITE)]
        bodies.append(client.get("/v1/kill-switch", headers=_auth(WRITE)).text)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records) + "".join(bodies)
    assert "refused POST /v1/kill-switch" in caplog.text
    assert "kill switch ENGAGED" in caplog.text
    assert WRITE not in text
    assert READ not in text


def test_settings_errors_name_the_variable_not_the_token() -> None:
    with pytest.raises(config.ConfigError, match="MERIDIAN_CONTROL_TOKEN: Field required"):
        config.load(ControlSettings, environ={})
    with pytest.raises(config.ConfigError, match="MERIDIAN_CONTROL_READ_TOKEN") as exc:
        config.load(ControlSettings, environ={"MERIDIAN_CONTROL_TOKEN": WRITE,
                                              "MERIDIAN_CONTROL_READ_TOKEN": WRITE})
    assert WRITE not in str(exc.value)
    with pytest.raises(config.ConfigError, match="MERIDIAN_CONTROL_PORT"):
        config.load(ControlSettings, environ={"MERIDIAN_CONTROL_TOKEN": WRITE,
                                              "MERIDIAN_CONTROL_PORT": "http"})
    # surrounding whitespace (a token read from a file) is not part of the token
    loaded = config.load(ControlSettings, environ={"MERIDIAN_CONTROL_TOKEN": f" {WRITE}\n"})
    assert loaded.token.get_secret_value() == WRITE
    assert (loaded.host, loaded.port, loaded.read_token) == ("127.0.0.1", 8080, None)


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("### Control plane"):readme.index("## Market data")]
    for name in ControlSettings.model_fields:
        assert f"| `MERIDIAN_CONTROL_{name.upper()}` |" in section, name


def test_new_settings_have_defaults_and_bounds() -> None:
    loaded = config.load(ControlSettings, environ={"MERIDIAN_CONTROL_TOKEN": WRITE})
    assert (loaded.push_s, loaded.db_timeout_s, loaded.orders_scan) == (1.0, 5.0, 2000)
    assert str(loaded.initial_capital) == "10000"
    for variable, value in (("MERIDIAN_CONTROL_PUSH_S", "0"),
                            ("MERIDIAN_CONTROL_INITIAL_CAPITAL", "-1"),
                            ("MERIDIAN_CONTROL_ORDERS_SCAN", "0"),
                            ("MERIDIAN_CONTROL_DB_TIMEOUT_S", "0")):
        with pytest.raises(config.ConfigError, match=variable):
            config.load(ControlSettings, environ={"MERIDIAN_CONTROL_TOKEN": WRITE,
                                                  variable: value})


def test_the_service_prefix_is_not_unknown_to_the_common_settings() -> None:
    env = {"MERIDIAN_CONTROL_TOKEN": WRITE, "MERIDIAN_BUS": "kafka"}
    assert config.load(config.CommonSettings, environ=env).bus == "kafka"


# ------------------------------------------------------------------------------ start-up


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meridian_control"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", **env}, timeout=120,
                          check=False)


def test_start_without_a_token_is_refused_naming_the_variable() -> None:
    proc = _serve({})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "MERIDIAN_CONTROL_TOKEN" in lines[0]


def test_start_with_kafka_unreachable_is_one_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        bootstrap = f"127.0.0.1:{s.getsockname()[1]}"
    proc = _serve({"MERIDIAN_CONTROL_TOKEN": WRITE, "MERIDIAN_KAFKA_BOOTSTRAP": bootstrap})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach Kafka" in lines[0]
    assert bootstrap in lines[0]
    assert WRITE not in proc.stderr + proc.stdout


def test_start_refuses_the_in_process_bus() -> None:
    proc = _serve({"MERIDIAN_CONTROL_TOKEN": WRITE, "MERIDIAN_BUS": "inprocess"})
    assert proc.returncode == 2
    assert "MERIDIAN_BUS=kafka" in proc.stderr
