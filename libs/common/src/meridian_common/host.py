"""Hosts a Handler on a Bus: poll, decode, handle, make durable, publish, then commit.

The order of those steps is the delivery guarantee: offsets are committed only after the
handler's effects are durable and its outputs acknowledged, so a crash at any point replays input
(at-least-once) and deterministic ids plus unique keys downstream make the replay harmless.
A record that does not decode, or that the handler rejects as invalid, goes to `dlq.<topic>`
with the reason in its headers, and the service carries on.

With tracing on (`meridian_common.tracing`) each handled record gets a CONSUMER span, child of
the trace context in its headers, and every output carries the context it was emitted in
(`meridian_common.propagation`). The tracer is read once, when `run` starts. Rebuilding state
starts no span (its outputs are discarded) but keeps each record's incoming context, so a held
order still fills in its own trace after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence

from opentelemetry.context import Context

from meridian_common import codec, propagation, topics, tracing
from meridian_common.bus.base import Bus, Consumer, Producer, Record, TopicConfig
from meridian_common.clock import EventClock
from meridian_common.handler import Handler, Inbound, InvalidMessage, Item, Outbox
from meridian_common.metrics import NullSensor, Sensor

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
REBUILD_CHUNK = 10_000  # records read per request while rebuilding state


def topic_configs(names: Iterable[str], prefix: str, partitions: int) -> list[TopicConfig]:
    """Physical topic configs for logical names (plus their dead-letter topics)."""
    out = []
    for name in names:
        spec = topics.spec(name)
        n = spec.partitions or partitions
        out.append(TopicConfig(prefix + name, n, spec.compacted, spec.history))
        out.append(TopicConfig(prefix + topics.dlq(name), n))
    return out


def all_topic_configs(prefix: str, partitions: int) -> list[TopicConfig]:
    return topic_configs(topics.TOPICS, prefix, partitions)


async def publish(producer: Producer, prefix: str, items: Iterable[Item], sensor: Sensor,
                  causes: Sequence[Context] | None = None) -> None:
    """Encode and send outbox items (not flushed). With tracing on, each carries the trace
    context of its cause (`causes[i]`, else the current context; a new trace when neither has
    a span)."""
    tracer = tracing.tracer()
    if tracer is not None:
        await _publish_traced(producer, prefix, items, sensor,
                              propagation.Stamper(tracer, prefix), causes)
        return
    counts: dict[str, int] = {}
    for topic, key, message in items:
        value, mtype = codec.encode(message)
        await producer.send(prefix + topic, key.encode(), value, ((codec.TYPE_HEADER, mtype),))
        counts[topic] = counts.get(topic, 0) + 1
    _count(sensor, counts)


async def _publish_traced(producer: Producer, prefix: str, items: Iterable[Item], sensor: Sensor,
                          stamper: propagation.Stamper, causes: Sequence[Context] | None) -> None:
    counts: dict[str, int] = {}
    for i, (topic, key, message) in enumerate(items):
        value, mtype = codec.encode(message)
        trace = stamper.headers(topic, key, message, causes[i] if causes is not None else None)
        await producer.send(prefix + topic, key.encode(), value,
                            ((codec.TYPE_HEADER, mtype), *trace))
        counts[topic] = counts.get(topic, 0) + 1
    _count(sensor, counts)


def _count(sensor: Sensor, counts: dict[str, int]) -> None:
    for topic, n in counts.items():
        sensor.produced(topic, n)


class ServiceHost:
    def __init__(self, handler: Handler, bus: Bus, *, prefix: str = "", batch: int = 500,
                 sensor: Sensor | None = None, group: str | None = None) -> None:
        self.handler = handler
        self.bus = bus
        self.prefix = prefix
        self.batch = batch
        self.sensor = sensor or NullSensor()
        self.group = group or f"{prefix}meridian-{handler.name}"
        self.handled = 0
        # How far in event time this service has got: deterministic in a replay, and the basis
        # of the event-time lag metric live.
        self.clock = EventClock()
        self.dead_letters = 0
        self._logical = {prefix + t: t for t in handler.inputs}
        # Set once subscribed and the handler's state is loaded.
        self.ready = asyncio.Event()
        # committed offsets found at start, per physical (topic, partition)
        self._floor: dict[tuple[str, int], int] = {}
        self._tracer = tracing.tracer()  # read again when run starts

    async def run(self, stop: asyncio.Event) -> None:
        handler = self.handler
        consumer = self.bus.consumer(self.group, [self.prefix + t for t in handler.inputs])
        producer = self.bus.producer()
        self._tracer = tracing.tracer()
        out = Outbox(handler.name, traced=self._tracer is not None)
        consumed: dict[tuple[str, int], int] = {}
        committed: dict[tuple[str, int], int] = {}
        await handler.start()
        if handler.rebuild_from_inputs:
            await self._rebuild(consumer)
        if handler.restore_from:
            await self._restore()
        self.ready.set()
        log.info("service started", extra={"group": self.group, "inputs": list(handler.inputs)})
        try:
            last_act = time.monotonic()
            while not stop.is_set():
                records = await consumer.poll(self._poll_timeout(last_act), self.batch)
                if not records:
                    if handler.tick_s is not None and \
                            time.monotonic() - last_act >= handler.tick_s:
                        await handler.act(out)
                        last_act = time.monotonic()
                        await self._publish(producer, out)
                        await producer.flush()
                    continue
                started = time.perf_counter()
                dead = self._handle_batch(records, out, consumed)
                await handler.act(out)
                last_act = time.monotonic()
                await handler.flush()
                await self._publish(producer, out)
                for record, reason in dead:
                    await self._dead_letter(producer, record, reason)
                await producer.flush()
                offsets = dict(consumed)
                for tp, low in handler.retained().items():
                    # never behind the offset committed before this start: a record below it
                    # that the rebuild left waiting was handled (and published) before the
                    # restart, so holding the commit back for it would only grow the replay
                    low = max(low, self._floor.get(tp, 0))
                    if tp in offsets and low < offsets[tp]:
                        offsets[tp] = low
                changed = {tp: o for tp, o in offsets.items() if committed.get(tp) != o}
                await consumer.commit(changed)
                committed.update(changed)
                self.sensor.batch_seconds(time.perf_counter() - started)
        finally:
            await producer.stop()
            await consumer.stop()
            await handler.stop()

    async def _publish(self, producer: Producer, out: Outbox) -> None:
        items, causes = out.drain_traced()
        await publish(producer, self.prefix, items, self.sensor, causes)

    def _poll_timeout(self, last_act: float) -> float:
        """Wait for records no longer than the handler's next tick is due."""
        tick = self.handler.tick_s
        if tick is None:
            return POLL_TIMEOUT_S
        return max(0.0, min(POLL_TIMEOUT_S, last_act + tick - time.monotonic()))

    async def _rebuild(self, consumer: Consumer) -> None:
        """Replay each input partition from its start up to the committed offset into the
        handler, discarding outputs: the state the handler had when that offset was committed.

        Partition by partition: exact for handlers whose state per key depends only on that
        key's records (a key lives in one partition), which the determinism tests establish.
        """
        started = time.perf_counter()
        replayed = 0
        scratch = Outbox(self.handler.name)
        for logical in self.handler.inputs:
            physical = self.prefix + logical
            for partition, _ in enumerate(await self.bus.topic_ends(physical)):
                upto = await consumer.committed(physical, partition)
                self._floor[(physical, partition)] = upto
                async for records in self._chunks(physical, partition, upto):
                    for record in records:
                        # a record that fails was dead-lettered when it was first consumed
                        self._handle_in(logical, record, scratch, propagation.Remote(record)
                                        if self._tracer is not None else None)
                    scratch.drain()
                    replayed += len(records)
        log.info("state rebuilt from inputs", extra={
            "records": replayed, "seconds": round(time.perf_counter() - started, 3)})

    async def _chunks(self, physical: str, partition: int,
                      end: int) -> AsyncIterator[list[Record]]:
        """A partition's records from its start up to `end` (exclusive), in bounded reads."""
        offset = 0
        while offset < end:
            records = await self.bus.read_partition(physical, partition, offset,
                                                    min(offset + REBUILD_CHUNK, end))
            if not records:
                return
            yield records
            offset = records[-1].offset + 1

    async def _restore(self) -> None:
        """Read each `restore_from` topic from its start to its current end into the handler."""
        restored = 0
        for logical in self.handler.restore_from:
            physical = self.prefix + logical
            for partition, end in enumerate(await self.bus.topic_ends(physical)):
                async for records in self._chunks(physical, partition, end):
                    for record in records:
                        try:
                            message = codec.decode(logical, record.value,
                                                   record.header(codec.TYPE_HEADER))
                        except codec.MalformedMessage:
                            continue  # dead-lettered when it was first consumed, if ever
                        key = record.key.decode() if record.key else ""
                        self.handler.restore(Inbound(logical, key, message,
                                                     (record.topic, record.partition,
                                                      record.offset)))
                    restored += len(records)
        self.handler.restored()
        log.info("state restored", extra={"topics": list(self.handler.restore_from),
                                           "records": restored})

    def _handle_one(self, logical: str, record: Record, out: Outbox) -> str | None:
        """Decode one record and hand it to the handler (inside its consumer span when
        tracing); the reason if it must be dead-lettered."""
        if self._tracer is None:
            return self._handle_in(logical, record, out, None)
        with propagation.Consuming(self._tracer, logical, record, self.group) as scope:
            return self._handle_in(logical, record, out, scope)

    def _handle_in(self, logical: str, record: Record, out: Outbox,
                   scope: propagation.Scope | None) -> str | None:
        try:
            if not record.key:
                raise codec.MalformedMessage("record has no key")
            message = codec.decode(logical, record.value, record.header(codec.TYPE_HEADER))
            inbound = Inbound(logical, record.key.decode(), message,
                              (record.topic, record.partition, record.offset),
                              scope.context if scope is not None else None)
            if scope is not None:
                scope.describe(inbound)
            self.clock.advance(inbound.event_time_ms)
            self.handler.handle(inbound, out)
        except (codec.MalformedMessage, InvalidMessage, UnicodeDecodeError) as exc:
            if scope is not None:
                scope.reject(str(exc))
            return str(exc)
        return None

    def _handle_batch(self, records: list[Record], out: Outbox,
                      consumed: dict[tuple[str, int], int]) -> list[tuple[Record, str]]:
        dead: list[tuple[Record, str]] = []
        counts: dict[str, int] = {}
        for record in records:
            topic = self._logical[record.topic]
            counts[topic] = counts.get(topic, 0) + 1
            consumed[(record.topic, record.partition)] = record.offset + 1
            reason = self._handle_one(topic, record, out)
            if reason is not None:
                dead.append((record, reason))
        for topic, n in counts.items():
            self.sensor.consumed(topic, n)
        self.sensor.event_time(self.clock.now_ms())
        self.handled += len(records) - len(dead)
        return dead

    async def _dead_letter(self, producer: Producer, record: Record, reason: str) -> None:
        topic = self._logical[record.topic]
        self.dead_letters += 1
        self.sensor.dead_lettered(topic)
        log.warning("dead-lettered a record",
                    extra={"topic": record.topic, "partition": record.partition,
                           "offset": record.offset, "reason": reason})
        headers = (
            *record.headers,
            ("dlq-reason", reason.encode()),
            ("dlq-topic", record.topic.encode()),
            ("dlq-partition", str(record.partition).encode()),
            ("dlq-offset", str(record.offset).encode()),
            ("dlq-service", self.handler.name.encode()),
        )
        await producer.send(self.prefix + topics.dlq(topic), record.key, record.value, headers)
