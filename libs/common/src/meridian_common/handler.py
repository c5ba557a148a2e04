"""The handler contract: a service's logic, independent of how it is hosted.

A handler is synchronous and does no I/O in `handle`: it reads one decoded message, updates its
explicit state and writes outputs to an Outbox. Durable effects (database rows) are collected and
written in `flush`, which the host awaits before it publishes outputs and commits offsets. So the
same handler runs under Kafka, the in-process bus and plain unit tests.

A handler that must hold a message back (waiting for another input's watermark) reports it in
`retained()`: the host never commits past a retained record, so a crash replays it.

Tracing (`meridian_common.tracing`) needs nothing from a handler in the common case: an output
continues the trace of the record being handled. A handler that emits on behalf of an EARLIER
input (it held a candle for a join, an order waits for its candle) keeps that input's
`Inbound.trace_context` with it and emits inside `tracing.caused_by(context)`, or passes
`cause=context` to `emit`, so the output joins the trace of what caused it.

While the host rebuilds the state from the inputs (`rebuild_from_inputs`: at start and after a
rebalance) or restores it (`restore_from`), `replaying` is True: the outputs are discarded and
the events were counted when they first happened, so a handler counts no domain metric then.

Several replicas of a `rebuild_from_inputs` handler may share one consumer group: when the
group moves partitions to this replica, its state of those keys is older than their committed
offsets, so the host calls `reset_state()` and rebuilds every partition up to the committed
offsets before handling the records of the new assignment.

Side inputs (`side_keys`): a replica sees only its partitions' records, so a handler that joins
one key's stream into every other key's output names that key; the host then feeds its records
to every replica (`meridian_common.side_inputs`), and publishes what they release only for the
keys the replica owns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from meridian.v1 import common_pb2

if TYPE_CHECKING:
    import prometheus_client

Position = tuple[str, int, int]  # physical (topic, partition, offset)
Item = tuple[str, str, Message]  # (logical topic, key, message)


class InvalidMessage(ValueError):
    """A well-formed record whose content the handler cannot accept; it goes to the DLQ."""


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str  # logical topic name
    key: str
    message: Message
    position: Position = ("", 0, -1)
    # The record's trace while it is handled (its consumer span), None when tracing is off: what
    # a handler keeps to emit a later output as part of this record's trace (`tracing.caused_by`).
    trace_context: Context | None = field(default=None, compare=False, repr=False)

    @property
    def is_watermark(self) -> bool:
        return isinstance(self.message, common_pb2.Watermark)

    @property
    def event_time_ms(self) -> int:
        m = self.message
        return m.event_time_ms if isinstance(m, common_pb2.Watermark) else m.meta.event_time_ms  # type: ignore[attr-defined]


class Outbox:
    """Outputs of one batch, published by the host in order after effects are durable.

    A traced outbox (the host makes one when tracing is on) also keeps, per output, the trace
    context it was emitted in: the current one (the consumer span of the record being handled)
    or the `cause` given. `items` stays a list of (topic, key, message) either way, so
    handlers and tests read it as before; add outputs only through `emit` and `watermark`, which
    keep the two lists in step.
    """

    __slots__ = ("causes", "items", "producer", "traced")

    def __init__(self, producer: str, *, traced: bool = False) -> None:
        self.producer = producer
        self.items: list[Item] = []
        self.traced = traced
        self.causes: list[Context] = []  # causes[i] is items[i]'s context when traced

    def emit(self, topic: str, key: str, message: Message, cause: Context | None = None) -> None:
        self.items.append((topic, key, message))
        if self.traced:
            self.causes.append(otel_context.get_current() if cause is None else cause)

    def watermark(self, topic: str, key: str, event_time_ms: int,
                  cause: Context | None = None) -> None:
        self.emit(topic, key, common_pb2.Watermark(key=key, event_time_ms=event_time_ms,
                                                   producer=self.producer), cause)

    def drain(self) -> list[Item]:
        items, self.items = self.items, []
        self.causes = []
        return items

    def drain_traced(self) -> tuple[list[Item], list[Context] | None]:
        """The outputs and, when traced, their contexts (same length, same order)."""
        items, causes = self.items, self.causes
        self.items, self.causes = [], []
        if not self.traced:
            return items, None
        if len(causes) != len(items):
            raise RuntimeError(f"{self.producer}: outbox items added without emit(): their "
                               "trace contexts are unknown")
        return items, causes


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
    # True only while the host replays inputs into the state (`_rebuild`) or restores it
    # (`_restore`); its outputs then go nowhere and domain metrics must not count them again.
    replaying: bool = False
    # True only while the host hands `handle` a side record (`side_keys`): one whose partition
    # another replica owns. Its outputs for keys this replica does not own are dropped (their
    # owner publishes them), so a handler counts no domain metric for those.
    side: bool = False

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

    def reset_state(self) -> None:
        """Put the state derived from the inputs back to what `__init__` makes, before the host
        rebuilds it after a rebalance (the replay starts from offset 0 of every partition).
        A `rebuild_from_inputs` handler must implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} ({self.name}) is rebuild_from_inputs but does not implement "
            "reset_state(): its state cannot be rebuilt after a rebalance")

    def side_keys(self) -> Mapping[str, Collection[str]]:
        """Keys, per logical input topic, whose records this replica must see even when the
        group assigns their partition to another replica (called after every batch: keep it
        cheap, and a function of the state, so a rebuilt replica follows the same keys).
        Only for `rebuild_from_inputs` handlers. None by default: a replica sees its own
        partitions only."""
        return {}

    def health_checks(self) -> Mapping[str, Callable[[], Awaitable[None]]]:
        """Dependency checks for `/readyz`, by name: each raises when the dependency is not
        usable (e.g. `meridian_common.health.engine_check(engine)`). Called once the handler
        has started; run with a timeout on the service's loop."""
        return {}

    def retained(self) -> Mapping[tuple[str, int], int]:
        """Lowest offset still held back, per physical (topic, partition)."""
        return {}

    async def stop(self) -> None:
        """Release resources."""
