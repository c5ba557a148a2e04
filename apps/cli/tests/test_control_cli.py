"""`meridian control`: argument parsing, the errors an operator sees without Kafka, and the
status fold and its JSON document (over the in-process bus, which the command itself refuses)."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from meridian.v1 import common_pb2, control_pb2
from meridian_cli import control
from meridian_cli.main import parser
from meridian_common import codec, topics
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.host import publish, topic_configs
from meridian_common.metrics import NullSensor

PREFIX = "t."
T0 = 1_700_000_000_000


def _parse(*args: str):  # type: ignore[no-untyped-def]
    return parser().parse_args(["control", *args])


def test_engage_and_clear_parse() -> None:
    ns = _parse("kill-switch", "engage", "--reason", "  exchange outage  ")
    assert ns.func is control.cmd_kill_switch
    assert ns.engaged is True
    assert ns.reason == "exchange outage"
    assert ns.actor is None  # resolved to the OS user name when the command runs
    assert ns.bootstrap is None
    assert ns.topic_prefix is None
    assert ns.timeout == control.DEFAULT_TIMEOUT_S
    ns = _parse("kill-switch", "clear", "--reason", "resolved", "--actor", "alice",
                "--bootstrap", "k:9092", "--topic-prefix", "live.", "--timeout", "5")
    assert ns.engaged is False
    assert (ns.actor, ns.bootstrap, ns.topic_prefix, ns.timeout) == ("alice", "k:9092", "live.", 5)


def test_status_parses() -> None:
    ns = _parse("status", "--json")
    assert ns.func is control.cmd_status
    assert ns.json is True
    assert _parse("status").json is False


@pytest.mark.parametrize("args", [
    ("kill-switch", "engage"),
    ("kill-switch", "clear", "--actor", "alice"),
    ("kill-switch", "engage", "--reason", "   "),
    ("kill-switch", "engage", "--reason", "x", "--actor", ""),
    ("kill-switch", "engage", "--reason", "x", "--timeout", "0"),
    ("kill-switch",),
    ("kill-switch", "toggle", "--reason", "x"),
])
def test_bad_arguments_are_rejected(args: tuple[str, ...],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(*args)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_missing_reason_is_rejected_as_a_user_runs_it(meridian) -> None:
    proc = meridian("control", "kill-switch", "engage", "--bootstrap", "127.0.0.1:1")
    assert proc.returncode == 2
    assert "the following arguments are required: --reason" in proc.stderr
    assert proc.stdout == ""


def test_the_in_process_bus_is_refused_with_what_to_set(meridian) -> None:
    for args in (("status",), ("kill-switch", "engage", "--reason", "x")):
        proc = meridian("control", *args, env={"MERIDIAN_BUS": "inprocess"})
        assert proc.returncode == 2
        assert "MERIDIAN_BUS=kafka" in proc.stderr
        assert "--bootstrap" in proc.stderr
        assert "Traceback" not in proc.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_kafka_is_one_line_naming_the_bootstrap(meridian) -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    for args in (("status", "--json"), ("kill-switch", "engage", "--reason", "x")):
        proc = meridian("control", *args, "--bootstrap", bootstrap)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert bootstrap in lines[0]
        assert "cannot reach Kafka" in lines[0]
        assert proc.stdout == ""


def test_a_bad_setting_is_named(meridian) -> None:
    proc = meridian("control", "status", env={"MERIDIAN_TOPIC_PREFIX": "no spaces"})
    assert proc.returncode == 2
    assert "MERIDIAN_TOPIC_PREFIX" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_kill_switch_command() -> None:
    command = control.kill_switch_command(True, "why", "ops", now_ms=T0)
    assert command.WhichOneof("command") == "kill_switch"
    assert command.meta.id == f"control:kill_switch:{T0}"
    assert command.meta.event_time_ms == T0
    assert command.meta.producer == "cli"
    assert (command.kill_switch.engaged, command.kill_switch.reason,
            command.kill_switch.actor) == (True, "why", "ops")
    codec.validate(command)  # what every consumer checks


def _meta(i: int) -> common_pb2.Meta:
    return common_pb2.Meta(id=f"m{i}", event_time_ms=T0 + i * 1000, producer="test")


async def _topic_with_history() -> InProcessBus:
    bus = InProcessBus()
    await control.publish_command(bus, PREFIX, "kill_switch",
                                  control.kill_switch_command(True, "first", "a", T0))
    items = [
        ("halt:execution", control_pb2.Control(
            meta=_meta(1), halt=control_pb2.Halt(service="execution", halted=True,
                                                 reason="maintenance"))),
        ("model:meta-trend", control_pb2.Control(
            meta=_meta(2), model_promotion=control_pb2.ModelPromotion(
                model_name="meta-trend", model_version="v7"))),
        ("config:risk", control_pb2.Control(
            meta=_meta(3), config_promotion=control_pb2.ConfigPromotion(
                config_name="risk", config_version="c2"))),
        ("gone", control_pb2.Control(meta=_meta(4), halt=control_pb2.Halt(service="x"))),
    ]
    producer = bus.producer()
    await publish(producer, PREFIX, [(topics.CONTROL, k, m) for k, m in items], NullSensor())
    physical = PREFIX + topics.CONTROL
    await producer.send(physical, b"gone", None)  # a tombstone deletes its key
    await producer.send(physical, b"kill_switch", b"\x0a\x00",  # no meta id: skipped, as risk does
                        ((codec.TYPE_HEADER, b"meridian.v1.Control"),))
    # a command kind this version's proto does not have (field 9): decodes, no known oneof set
    future = control_pb2.Control(meta=_meta(5)).SerializeToString() + b"\x4a\x00"
    await producer.send(physical, b"future", future, ((codec.TYPE_HEADER, b"meridian.v1.Control"),))
    await control.publish_command(bus, PREFIX, "kill_switch",
                                  control.kill_switch_command(False, "second", "b", T0 + 9000))
    await control.publish_command(bus, PREFIX, "kill_switch",
                                  control.kill_switch_command(True, "third", "c", T0 + 10_000))
    return bus


def test_the_topic_is_created_compacted_with_one_partition() -> None:
    bus = asyncio.run(_topic_with_history())
    wanted = {t.name: t for t in topic_configs([topics.CONTROL], PREFIX, 1)}
    assert wanted[PREFIX + topics.CONTROL].compacted
    assert len(bus.end_offsets(PREFIX + topics.CONTROL)) == 1
    assert bus.end_offsets(PREFIX + topics.CONTROL) == [10]


def test_status_json_shape() -> None:
    bus = asyncio.run(_topic_with_history())
    status = asyncio.run(control.read_status(bus, PREFIX))
    doc = orjson.loads(orjson.dumps(control.status_document(status, "k:9092")))
    assert set(doc) == {"topic", "bootstrap", "exists", "records", "unreadable",
                        "kill_switch_engaged", "commands"}
    assert doc["topic"] == "t.control.v1"
    assert doc["bootstrap"] == "k:9092"
    assert doc["exists"]
    assert doc["records"] == 10
    assert doc["unreadable"] == 1
    assert doc["kill_switch_engaged"] is True
    assert sorted(doc["commands"]) == ["config:risk", "future", "halt:execution", "kill_switch",
                                       "model:meta-trend"]
    ks = doc["commands"]["kill_switch"]
    assert ks == {
        "command": "kill_switch", "fields": {"engaged": True, "reason": "third", "actor": "c"},
        "summary": "kill switch ENGAGED: reason 'third', actor c", "state": "engaged",
        "time": "2023-11-14T22:13:30.000Z", "event_time_ms": T0 + 10_000,
        "id": f"control:kill_switch:{T0 + 10_000}", "producer": "cli", "partition": 0,
        "offset": 9}
    halt = doc["commands"]["halt:execution"]
    assert halt["command"] == "halt"
    assert halt["fields"] == {"service": "execution", "halted": True, "reason": "maintenance"}
    assert "state" not in halt
    assert doc["commands"]["model:meta-trend"]["fields"] == {"model_name": "meta-trend",
                                                             "model_version": "v7"}
    assert doc["commands"]["config:risk"]["summary"] == "config promotion: risk version c2"
    assert doc["commands"]["future"]["command"] is None
    assert doc["commands"]["future"]["fields"] == {}


def test_cleared_and_absent_switch() -> None:
    bus = InProcessBus()
    asyncio.run(control.publish_command(bus, PREFIX, "kill_switch",
                                        control.kill_switch_command(False, "ok", "a", T0)))
    status = asyncio.run(control.read_status(bus, PREFIX))
    doc = control.status_document(status, "k")
    assert doc["kill_switch_engaged"] is False
    assert doc["commands"]["kill_switch"]["state"] == "cleared"
    assert "kill switch cleared: reason 'ok', actor a" in control.render(status, "k")
    missing = asyncio.run(control.read_status(InProcessBus(), PREFIX))
    assert not missing.exists
    assert control.status_document(missing, "k")["kill_switch_engaged"] is False
    assert "does not exist yet" in control.render(missing, "k")


def test_status_text() -> None:
    bus = asyncio.run(_topic_with_history())
    text = control.render(asyncio.run(control.read_status(bus, PREFIX)), "k:9092")
    lines = text.splitlines()
    assert lines[0] == ("t.control.v1 at k:9092: 10 record(s), 5 key(s), "
                        "1 unreadable record(s) skipped")
    assert any(line.startswith("  kill_switch: kill switch ENGAGED: reason 'third', actor c "
                               "(at 2023-11-14T22:13:30.000Z, producer cli") for line in lines)
    assert any("halt execution: HALTED, reason 'maintenance'" in line for line in lines)
    assert any("model promotion: meta-trend version v7" in line for line in lines)
    assert any(line.startswith("  future: no command this version") for line in lines)


def test_unknown_command_kinds_are_shown_generically(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kind without a summary of its own (as a `breaker` added to the proto would be) is shown
    # by its oneof name and text form, and its fields in the JSON document.
    monkeypatch.delitem(control._SUMMARIES, "halt")
    command = control_pb2.Control(meta=_meta(1), halt=control_pb2.Halt(service="risk",
                                                                       halted=True))
    assert control.summary(command) == 'halt: service: "risk" halted: true'
    status = control.Status("t.control.v1", latest={"halt:risk": control.Entry(
        "halt:risk", command, 0, 0)})
    item = control.status_document(status, "k")["commands"]["halt:risk"]
    assert item["command"] == "halt"
    assert item["fields"] == {"service": "risk", "halted": True, "reason": ""}


def test_actor_defaults_to_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "operator7")
    assert control.os_user() == "operator7"
