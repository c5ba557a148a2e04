"""The handler contract: a service's logic, independent of how it is hosted.

A handler is synchronous and does no I/O in `handle`: it reads one decoded message, updates its
explicit state and writes outputs to an Outbox. Durable effects (database rows) are collected and
written in `flush`, which the host awaits before it publishes outputs and commits offsets. So the
same handler runs under Kafka, the in-process bus and plain unit tests.

A handler that must hold a message back (waiting for another input's watermark) reports it in
`retained()`: the host never commits past a retained record, so a crash replays it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from google.protobuf.message import Message

from meridian.v1 import common_pb2

if TYPE_CHECKING:
    import prometheus_client

Position = tuple[str, int, int]  # physical (topic, partition, offset)


class InvalidMessage(ValueError):
    """A well-formed record whose content the handler cannot accept; it goes to the DLQ."""


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str  # logical topic name
    key: str
    message: Message
    position: Position = ("", 0, -1)

    @property
    def is_watermark(self) -> bool:
        return isinstance(self.message, common_pb2.Watermark)

    @property
    def event_time_ms(self) -> int:
        m = self.message
        return m.event_time_ms if isinstance(m, common_pb2.Watermark) else m.meta.event_time_ms  # type: ignore[attr-defined]


class Outbox:
    """Outputs of one batch, published by the host in order after effects are durable."""

    __slots__ = ("items", "producer")

    def __init__(self, producer: str) -> None:
        self.producer = producer
        self.items: list[tuple[str, str, Message]] = []

    def emit(self, topic: str, key: str, message: Message) -> None:
        self.items.append((topic, key, message))

    def watermark(self, topic: str, key: str, event_time_ms: int) -> None:
        self.items.append(
            (topic, key, common_pb2.Watermark(key=key, event_time_ms=event_time_ms,
                                              producer=self.producer))
        )

    def drain(self) -> list[tuple[str, str, Message]]:
        items, self.items = self.items, []
        return items


class Handler:
    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]
    # True when the handler's state is a function of its inputs alone (and of no other store):
    # the host then rebuilds it on start by replaying every input partition up to the group's
    # committed offset, outputs discarded, so a restart resumes exactly where the state was.
    rebuild_from_inputs: ClassVar[bool] = False
    # Topics (inputs or the handler's own outputs) read whole on start and given to `restore`
    # before the first message: state that must survive a restart but is not a function of the
    # inputs' arrival order, e.g. the kill switch (control.v1, compacted) and the orders the
    # handler already approved (its own output, the record of its decisions).
    restore_from: ClassVar[tuple[str, ...]] = ()
    # Seconds between calls of `act` when no record arrives (None: only after batches). A
    # handler whose outputs also come from outside the bus (an exchange's fills) needs the tick.
    tick_s: ClassVar[float | None] = None

    def bind_metrics(self, registry: prometheus_client.CollectorRegistry) -> None:
        """Register the handler's own metrics in the registry the host exposes (called once,
        before `start`). A handler must work without it: unit tests never call it."""

    async def start(self) -> None:
        """Load state (e.g. from the database) before the first message."""

    def handle(self, msg: Inbound, out: Outbox) -> None:
        raise NotImplementedError

    def restore(self, msg: Inbound) -> None:
        """Take one record of a `restore_from` topic into the state (no outputs)."""
        raise NotImplementedError

    def restored(self) -> None:
        """Every `restore_from` record has been given to `restore`: finish the state (e.g.
        replay what was collected in event-time order)."""

    async def act(self, out: Outbox) -> None:
        """I/O whose answers are outputs (sending orders to an exchange, polling it for fills):
        called after each batch's `handle` calls, and every `tick_s` while the bus is idle.
        Its outputs are published with the batch, before the batch's offsets are committed."""

    async def flush(self) -> None:
        """Make the effects of the handled messages durable."""

    def retained(self) -> Mapping[tuple[str, int], int]:
        """Lowest offset still held back, per physical (topic, partition)."""
        return {}

    async def stop(self) -> None:
        """Release resources."""
