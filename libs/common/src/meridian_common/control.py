"""Operator commands on control.v1: build a command, publish it, read the latest command per key.

One implementation for every operator front end: the `meridian control` command
(`meridian_cli.control`) and the control plane's HTTP API (`meridian_control`).

control.v1 is compacted and has one partition: the latest command per key is the state every
service reads on start (`Handler.restore_from`) and follows live. The kill switch is the key
`kill_switch`; while it is engaged the risk gate passes only reduce-only orders. The risk gate
announces its circuit-breaker level under the key `breaker`.

Everything here takes a `Bus`, so it runs over Kafka and, in tests, over the in-process bus.
`kafka_call` bounds a conversation with Kafka in time and turns its failures into a
`ControlError` with a one-line message naming the bootstrap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import json_format

from meridian.v1 import common_pb2, control_pb2
from meridian_common import codec, topics
from meridian_common.bus.base import Bus, Record
from meridian_common.clock import WallClock
from meridian_common.host import publish, topic_configs
from meridian_common.metrics import NullSensor

KILL_SWITCH_KEY = "kill_switch"
BREAKER_KEY = "breaker"

T = TypeVar("T")


class ControlError(Exception):
    """A failure to talk to the bus, as one line (no traceback) naming the bootstrap."""


# ------------------------------------------------------------------------------ commands


def kill_switch_command(engaged: bool, reason: str, actor: str, *, producer: str,
                        now_ms: int | None = None) -> control_pb2.Control:
    """A kill-switch command with the id `control:kill_switch:<ms>`; its event time is the wall
    clock (an operator's command is a live edge) unless `now_ms` is given."""
    now = WallClock().now_ms() if now_ms is None else now_ms
    return control_pb2.Control(
        meta=common_pb2.Meta(id=f"control:{KILL_SWITCH_KEY}:{now}", event_time_ms=now,
                             producer=producer),
        kill_switch=control_pb2.KillSwitch(engaged=engaged, reason=reason, actor=actor))


async def publish_command(bus: Bus, prefix: str, key: str, command: control_pb2.Control) -> None:
    """Publish one command on control.v1 and wait for the broker's ack.

    The topic is created (compacted, one partition, as the services create it) when it does not
    exist yet, so a switch engaged before any service ever started is kept the same way.
    """
    await ensure_topic(bus, prefix)
    producer = bus.producer(low_latency=True)
    try:
        await publish(producer, prefix, [(topics.CONTROL, key, command)], NullSensor())
        await producer.flush()
    finally:
        await producer.stop()


async def ensure_topic(bus: Bus, prefix: str) -> None:
    """Create control.v1 (and its dead-letter topic) as the services do, when missing."""
    await bus.ensure_topics(topic_configs([topics.CONTROL], prefix, 1))


# ------------------------------------------------------------------------------ status


@dataclass(frozen=True, slots=True)
class Entry:
    """The latest command of one key."""

    key: str
    command: control_pb2.Control
    partition: int
    offset: int


@dataclass(slots=True)
class Status:
    topic: str  # physical name (with the prefix)
    exists: bool = True
    records: int = 0  # records read (after compaction)
    unreadable: int = 0  # records that did not decode (services skip them too)
    latest: dict[str, Entry] = field(default_factory=dict)

    def command(self, key: str, kind: str) -> control_pb2.Control | None:
        """The latest command of `key` when it is of the oneof `kind`, else None."""
        entry = self.latest.get(key)
        if entry is None or command_kind(entry.command) != kind:
            return None
        return entry.command


async def read_status(bus: Bus, prefix: str) -> Status:
    """Read control.v1 from its beginning to its current end: the latest command per key.

    Folded as the services fold it on restore: later records win, a tombstone deletes its key,
    watermarks and records that do not decode are skipped.
    """
    status = Status(prefix + topics.CONTROL)
    try:
        ends = await bus.topic_ends(status.topic)
    except KeyError:
        status.exists = False
        return status
    for partition, end in enumerate(ends):
        for record in await bus.read_partition(status.topic, partition, 0, end):
            status.records += 1
            _fold(status, record)
    return status


def _fold(status: Status, record: Record) -> None:
    key = record.key.decode("utf-8", "replace") if record.key else ""
    if record.value is None:
        status.latest.pop(key, None)
        return
    try:
        message = codec.decode(topics.CONTROL, record.value, record.header(codec.TYPE_HEADER))
    except codec.MalformedMessage:
        status.unreadable += 1
        return
    if isinstance(message, control_pb2.Control):
        status.latest[key] = Entry(key, message, record.partition, record.offset)


def command_kind(command: control_pb2.Control) -> str | None:
    """The name of the oneof `command` field that is set (None: none this version knows)."""
    return command.WhichOneof("command")


def command_fields(command: control_pb2.Control) -> dict[str, Any]:
    """The fields of the command's body, by proto name, defaults included."""
    kind = command_kind(command)
    if kind is None:
        return {}
    return json_format.MessageToDict(getattr(command, kind), preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def kill_switch_engaged(status: Status) -> bool:
    command = status.command(KILL_SWITCH_KEY, "kill_switch")
    return command is not None and command.kill_switch.engaged


def utc(ms: int) -> str:
    """Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ------------------------------------------------------------------------------ Kafka errors


async def kafka_call(call: Awaitable[T], bootstrap: str, timeout_s: float, *, hint: str = "",
                     on_timeout: str = "") -> T:
    """Await a conversation with Kafka, bounded by `timeout_s`.

    An unreachable broker or no answer in time raises ControlError with one line naming the
    bootstrap (plus `hint` after "is it running?", or `on_timeout` after a time-out).
    """
    from aiokafka.errors import KafkaConnectionError, KafkaError

    try:
        return await asyncio.wait_for(call, timeout_s)
    except TimeoutError:
        raise ControlError(f"no answer from Kafka at {bootstrap} within {timeout_s:g}s"
                           + on_timeout) from None
    except (KafkaConnectionError, OSError) as exc:
        raise ControlError(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); "
                           "is it running?" + (f" {hint}" if hint else "")) from None
    except KafkaError as exc:
        raise ControlError(f"Kafka at {bootstrap}: {type(exc).__name__}: {exc}") from None
