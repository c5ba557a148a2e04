"""`meridian control kill-switch engage|clear` and `meridian control status`: operator commands.

control.v1 is compacted and has one partition: the latest command per key is the state every
service reads on start (`Handler.restore_from`) and follows live. The kill switch is the key
`kill_switch`; while it is engaged the risk gate passes only reduce-only orders.

Building, publishing and reading the commands is `meridian_common.control` (shared with the
control plane's HTTP API); this module is the command line around it: arguments, the operator's
defaults, and the text and JSON forms of the status.

The commands talk to Kafka (MERIDIAN_KAFKA_BOOTSTRAP, MERIDIAN_TOPIC_PREFIX, or --bootstrap /
--topic-prefix); the in-process bus lives inside one process, so there is nothing to control there.
Any failure is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from google.protobuf import text_format
from google.protobuf.message import Message

from meridian.v1 import control_pb2
from meridian_common import config, control, logs, topics
from meridian_common.bus.base import Bus
from meridian_common.control import (
    KILL_SWITCH_KEY,
    ControlError,
    Status,
    command_fields,
    command_kind,
    kafka_call,
    kill_switch_engaged,
    publish_command,
    read_status,
    utc,
)
from meridian_common.control import Entry as Entry  # re-exported: the latest command of a key

PRODUCER = "cli"
CLIENT_ID = "meridian-cli"
DEFAULT_TIMEOUT_S = 30.0

T = TypeVar("T")


# ------------------------------------------------------------------------------ commands


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment and no passwd entry
        return "unknown"


def kill_switch_command(engaged: bool, reason: str, actor: str,
                        now_ms: int | None = None) -> control_pb2.Control:
    """The kill-switch command as this command line publishes it (producer `cli`)."""
    return control.kill_switch_command(engaged, reason, actor, producer=PRODUCER, now_ms=now_ms)


# ------------------------------------------------------------------------------ status


def _onoff(flag: bool, on: str, off: str) -> str:
    return on if flag else off


# One-line summaries of the commands this version knows; any other command (a kind added to the
# proto later, e.g. a breaker) is shown generically by its oneof name and text form.
_SUMMARIES: dict[str, Callable[[Any], str]] = {
    "kill_switch": lambda m: (f"kill switch {_onoff(m.engaged, 'ENGAGED', 'cleared')}: "
                              f"reason {m.reason!r}, actor {m.actor or '-'}"),
    "halt": lambda m: (f"halt {m.service or '-'}: {_onoff(m.halted, 'HALTED', 'resumed')}, "
                       f"reason {m.reason!r}"),
    "model_promotion": lambda m: f"model promotion: {m.model_name} version {m.model_version}",
    "config_promotion": lambda m: (f"config promotion: {m.config_name} "
                                   f"version {m.config_version}"),
}


def summary(command: control_pb2.Control) -> str:
    kind = command_kind(command)
    if kind is None:
        return ("no command this version of meridian knows "
                "(none of the oneof fields it reads is set)")
    body: Message = getattr(command, kind)
    known = _SUMMARIES.get(kind)
    if known is not None:
        return known(body)
    return f"{kind}: {text_format.MessageToString(body, as_one_line=True) or '(empty)'}"


def status_document(status: Status, bootstrap: str) -> dict[str, Any]:
    """The `status --json` document."""
    commands: dict[str, Any] = {}
    for key, entry in sorted(status.latest.items()):
        command, meta = entry.command, entry.command.meta
        kind = command_kind(command)
        item: dict[str, Any] = {"command": kind, "fields": command_fields(command),
                                "summary": summary(command)}
        if kind == "kill_switch":
            item["state"] = _onoff(command.kill_switch.engaged, "engaged", "cleared")
        item.update({"time": utc(meta.event_time_ms), "event_time_ms": meta.event_time_ms,
                     "id": meta.id, "producer": meta.producer,
                     "partition": entry.partition, "offset": entry.offset})
        commands[key] = item
    return {"topic": status.topic, "bootstrap": bootstrap, "exists": status.exists,
            "records": status.records, "unreadable": status.unreadable,
            "kill_switch_engaged": kill_switch_engaged(status), "commands": commands}


def render(status: Status, bootstrap: str) -> str:
    """The human form of `status`."""
    if not status.exists:
        return (f"{status.topic} at {bootstrap}: the topic does not exist yet; no command was "
                f"ever published (kill switch not engaged)")
    lines = [f"{status.topic} at {bootstrap}: {status.records} record(s), "
             f"{len(status.latest)} key(s)"
             + (f", {status.unreadable} unreadable record(s) skipped" if status.unreadable else "")]
    if KILL_SWITCH_KEY not in status.latest:
        lines.append(f"  {KILL_SWITCH_KEY}: never set (not engaged)")
    for key, entry in sorted(status.latest.items()):
        meta = entry.command.meta
        lines.append(f"  {key}: {summary(entry.command)} (at {utc(meta.event_time_ms)}, "
                     f"producer {meta.producer or '-'}, id {meta.id})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the CLI


def _common(ns: argparse.Namespace) -> config.CommonSettings:
    overrides: dict[str, object] = {}
    if ns.bootstrap:
        overrides.update(bus="kafka", kafka_bootstrap=ns.bootstrap)
    if ns.topic_prefix is not None:
        overrides["topic_prefix"] = ns.topic_prefix
    try:
        common = config.load(config.CommonSettings, **overrides)
    except config.ConfigError as exc:
        raise ControlError(str(exc)) from None
    if common.bus != "kafka":
        raise ControlError(
            f"MERIDIAN_BUS={common.bus}: the in-process bus lives inside one process, so there "
            "is no control topic to reach; set MERIDIAN_BUS=kafka (and MERIDIAN_KAFKA_BOOTSTRAP) "
            "or pass --bootstrap HOST:PORT")
    return common


def _bus(common: config.CommonSettings) -> Bus:
    from meridian_common.bus.kafka import KafkaBus

    return KafkaBus(common.kafka_bootstrap, client_id=CLIENT_ID)


def _run(coro: Coroutine[Any, Any, T], bootstrap: str, timeout_s: float,
         on_timeout: str = "") -> T:
    """Run a Kafka conversation; connection failures and time-outs become a ControlError."""
    return asyncio.run(kafka_call(
        coro, bootstrap, timeout_s, on_timeout=on_timeout,
        hint="Set MERIDIAN_KAFKA_BOOTSTRAP or pass --bootstrap HOST:PORT"))


def _quiet(verbose: bool) -> None:
    # aiokafka logs each failed connection attempt; the command reports the failure itself.
    logs.setup("meridian", "INFO" if verbose else "ERROR")
    if not verbose:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def cmd_kill_switch(ns: argparse.Namespace) -> int:
    _quiet(ns.verbose)
    name = f"meridian control kill-switch {ns.kill_switch_action}"
    try:
        common = _common(ns)
        actor = ns.actor or os_user()
        command = kill_switch_command(ns.engaged, ns.reason, actor)
        topic = common.topic_prefix + topics.CONTROL
        _run(publish_command(_bus(common), common.topic_prefix, KILL_SWITCH_KEY, command),
             common.kafka_bootstrap, ns.timeout,
             "; the command may or may not have been published: check `meridian control status`")
    except ControlError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    state = "ENGAGED" if ns.engaged else "cleared"
    print(f"published kill switch {state} (reason {ns.reason!r}, actor {actor}, "
          f"id {command.meta.id}) to {topic} key {KILL_SWITCH_KEY} at {common.kafka_bootstrap}")
    return 0


def cmd_status(ns: argparse.Namespace) -> int:
    _quiet(ns.verbose)
    try:
        common = _common(ns)
        status = _run(read_status(_bus(common), common.topic_prefix), common.kafka_bootstrap,
                      ns.timeout)
    except ControlError as exc:
        print(f"meridian control status: {exc}", file=sys.stderr)
        return 2
    if ns.json:
        doc = status_document(status, common.kafka_bootstrap)
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(status, common.kafka_bootstrap))
    return 0


def _text(what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        return value.strip()
    return parse


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return seconds


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    kafka = argparse.ArgumentParser(add_help=False)
    kafka.add_argument("--bootstrap", metavar="HOST:PORT",
                       help="Kafka bootstrap servers (default: MERIDIAN_KAFKA_BOOTSTRAP; "
                            "implies MERIDIAN_BUS=kafka)")
    kafka.add_argument("--topic-prefix", metavar="PREFIX",
                       help="topic prefix (default: MERIDIAN_TOPIC_PREFIX)")
    kafka.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                       help=f"give up after this long (default {DEFAULT_TIMEOUT_S:g})")
    kafka.add_argument("-v", "--verbose", action="store_true", help="Kafka client logs on stderr")

    control = sub.add_parser("control", help="operator commands on control.v1: kill switch, status")
    inner = control.add_subparsers(dest="control_command", required=True)
    switch = inner.add_parser("kill-switch", help="engage or clear the kill switch")
    actions = switch.add_subparsers(dest="kill_switch_action", required=True)
    helps = {"engage": "engage: the risk gate then passes only reduce-only orders",
             "clear": "clear: the risk gate approves new positions again"}
    for action, text in helps.items():
        p = actions.add_parser(action, help=text, parents=[kafka])
        p.add_argument("--reason", required=True, type=_text("--reason"),
                       help="why (required; kept with the command)")
        p.add_argument("--actor", type=_text("--actor"),
                       help="who (default: the OS user name)")
        p.set_defaults(func=cmd_kill_switch, engaged=action == "engage")
    status = inner.add_parser("status", parents=[kafka],
                              help="the latest command per key on control.v1")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
