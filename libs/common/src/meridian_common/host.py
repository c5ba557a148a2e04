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

Replicas: several hosts of one handler may share a consumer group (a Kubernetes HPA). The
consumer reports each new assignment before the records polled under it are handled; a
`rebuild_from_inputs` handler whose state is then not exactly at the committed offsets of its
partitions (it gained partitions another replica advanced, or it holds records back) is reset
(`Handler.reset_state`) and rebuilt again from every partition up to the committed offsets. A
replica giving partitions up first commits the batch it has in hand (`KafkaConsumer`), so the
new owner starts where it stopped.

Side inputs (`Handler.side_keys`, `meridian_common.side_inputs`): after each poll, idle ones
included, the host feeds the records of the handler's side keys whose partitions this replica
is not assigned, read outside the group; their outputs are published for the keys this replica
owns and dropped for the others. They are not consumed records: no consumed count, handler
time, event-time clock or dead letter (their owner counts and dead-letters them).

Observability (docs/observability.md): per-record handler time, handler exceptions per stage
(counted, then re-raised: the service stops), consumer lag per assigned partition every
`LAG_INTERVAL_S`, rebalances, and the state behind /healthz and /readyz (`self.health`: loop
progress, the phase, the dependency checks of `Handler.health_checks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence

from opentelemetry.context import Context

from meridian_common import codec, propagation, topics, tracing
from meridian_common.bus.base import Bus, Consumer, Producer, Record, TopicConfig
from meridian_common.clock import EventClock
from meridian_common.handler import Handler, Inbound, InvalidMessage, Item, Outbox
from meridian_common.health import Health
from meridian_common.metrics import NullSensor, Sensor
from meridian_common.side_inputs import SideInputs, keep_owned

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
LAG_INTERVAL_S = 5.0  # consumer lag is read at most this often (not per record)
READY_INTERVAL_S = 10.0  # the readiness checks run this often for `meridian_ready`
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
                 sensor: Sensor | None = None, group: str | None = None,
                 health: Health | None = None) -> None:
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
        self.rebalances = 0  # assignment changes after the first
        self.rebuilds = 0  # state rebuilds from the inputs (start included)
        self._logical = {prefix + t: t for t in handler.inputs}
        # Set once subscribed and the handler's state is loaded.
        self.ready = asyncio.Event()
        self.health = health or Health(handler.name)
        if self.health.on_ready is None:
            self.health.on_ready = self.sensor.ready
        # committed offsets found by the last rebuild, per physical (topic, partition)
        self._floor: dict[tuple[str, int], int] = {}
        # next offset the handler's state reflects, per physical (topic, partition): a
        # rebuild handler whose state is not exactly at the committed offsets is stale
        self._at: dict[tuple[str, int], int] = {}
        self._consumed: dict[tuple[str, int], int] = {}  # next offset, handled since the rebuild
        self._committed: dict[tuple[str, int], int] = {}
        self._assigned: frozenset[tuple[str, int]] | None = None
        self._side = SideInputs(handler, bus, prefix)
        self.side_fed = 0  # side records handed to the handler (see side_inputs)
        self._lag_due = 0.0
        self._tracer = tracing.tracer()  # read again when run starts

    async def run(self, stop: asyncio.Event) -> None:
        handler = self.handler
        consumer = self.bus.consumer(self.group, [self.prefix + t for t in handler.inputs])
        producer = self.bus.producer()
        self._tracer = tracing.tracer()
        self.sensor.subscribed(handler.inputs)
        self.health.attach(asyncio.get_running_loop())
        out = Outbox(handler.name, traced=self._tracer is not None)
        await handler.start()
        watcher: asyncio.Task[None] | None = None
        try:
            await consumer.start()
            if handler.rebuild_from_inputs:
                await self._rebuild(consumer)
            if handler.restore_from:
                await self._restore()
            self.health.checks = {**self.health.checks, **handler.health_checks()}
            self.ready.set()
            self.health.set_phase("running")
            watcher = asyncio.create_task(self._watch_readiness())
            log.info("service started",
                     extra={"group": self.group, "inputs": list(handler.inputs)})
            await self._loop(stop, consumer, producer, out)
        finally:
            self.health.set_phase("stopped")
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await producer.stop()
            await self._side.close()
            await consumer.stop()
            await handler.stop()

    async def _loop(self, stop: asyncio.Event, consumer: Consumer, producer: Producer,
                    out: Outbox) -> None:
        handler = self.handler
        last_act = time.monotonic()
        while not stop.is_set():
            records = await consumer.poll(self._poll_timeout(last_act), self.batch)
            self.health.beat()
            assignment = consumer.take_assignment()
            if assignment is not None:  # before any record of the new assignment is handled
                await self._on_assignment(consumer, assignment)
            if time.monotonic() >= self._lag_due:
                await self._report_lag(consumer)
            started = time.perf_counter()
            dead = self._handle_batch(records, out) if records else []
            if not await self._side_step(out) and not records:
                if handler.tick_s is not None and time.monotonic() - last_act >= handler.tick_s:
                    await self._stage("act", handler.act(out))
                    last_act = time.monotonic()
                    await self._publish(producer, out)
                    await producer.flush()
                continue
            await self._stage("act", handler.act(out))
            last_act = time.monotonic()
            await self._stage("flush", handler.flush())
            await self._publish(producer, out)
            for record, reason in dead:
                await self._dead_letter(producer, record, reason)
            await producer.flush()
            await self._commit(consumer)
            if records:
                self.sensor.batch_seconds(time.perf_counter() - started)

    async def _side_step(self, out: Outbox) -> int:
        """Hand the handler the side records read since the last call (after the batch, so a
        key the batch made a side key is followed at once); their outputs for owned keys go to
        `out`, to be published and committed with the batch. The number handed."""
        assignment = self._assigned
        if assignment is None:
            return 0
        side = await self._side.read(assignment, self._at, self.batch)
        if not side:
            return 0
        owner = await self._side.owner()

        def owns(key: str) -> bool:
            return self._side.owns(owner, key, assignment)

        scratch = Outbox(self.handler.name, traced=out.traced)
        self.handler.side = True
        try:
            for logical, record in side:
                # like a rebuilt record: no consumer span (it is not this group member's), and a
                # record its owner dead-letters is simply skipped here
                self._handle_in(logical, record, scratch, propagation.Remote(record)
                                if self._tracer is not None else None, side=True)
                keep_owned(scratch, out, owns)
        finally:
            self.handler.side = False
        self.side_fed += len(side)
        return len(side)

    async def _stage(self, stage: str, step: Awaitable[None]) -> None:
        """Await a handler step; an exception escaping it is counted, then stops the service."""
        try:
            await step
        except Exception:
            self.sensor.handler_error(stage)
            raise

    async def _commit(self, consumer: Consumer) -> None:
        offsets = dict(self._consumed)
        for tp, low in self.handler.retained().items():
            # never behind the offset committed when the state was last rebuilt: a record below
            # it that the rebuild left waiting was handled (and published) before, so holding
            # the commit back for it would only grow the replay
            low = max(low, self._floor.get(tp, 0))
            if tp in offsets and low < offsets[tp]:
                offsets[tp] = low
        changed = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
        await consumer.commit(changed)
        self._committed.update(changed)

    async def _on_assignment(self, consumer: Consumer,
                             assignment: frozenset[tuple[str, int]]) -> None:
        """The group gave this member a new set of partitions; positions restart from the
        committed offsets. A rebuild handler's state must then be exactly at those offsets:
        if it is not (partitions handled elsewhere since, or records of its own held back),
        reset it and rebuild it before handling anything more."""
        previous = self._assigned
        self._assigned = assignment
        self._consumed = {tp: o for tp, o in self._consumed.items() if tp in assignment}
        self._committed = {}  # what to commit is re-derived under the new generation
        self._lag_due = 0.0  # report the new partitions' lag (and drop the old) at once
        if previous is not None:
            self.rebalances += 1
            self.sensor.rebalanced()
        log.info("partitions assigned", extra={
            "partitions": sorted(f"{t}:{p}" for t, p in assignment),
            "gained": len(assignment - (previous or frozenset())),
            "lost": len((previous or frozenset()) - assignment)})
        if not self.handler.rebuild_from_inputs or not await self._stale(consumer, assignment):
            self._side.assigned(assignment)  # the group delivers these from the committed offset
            return
        self.handler.reset_state()
        self.health.set_phase("rebuilding", "rebuilding the state after a rebalance")
        await self._rebuild(consumer)
        self._consumed = {}
        self.health.set_phase("running")

    async def _stale(self, consumer: Consumer, assignment: frozenset[tuple[str, int]]) -> bool:
        for tp in sorted(assignment):
            at = self._at.get(tp, 0)
            # side records fed past `at` would be delivered again by the group
            if await consumer.committed(*tp) != at or self._side.fed_beyond(tp, at):
                return True
        return False

    async def _report_lag(self, consumer: Consumer) -> None:
        self._lag_due = time.monotonic() + LAG_INTERVAL_S
        lags = await consumer.lag()
        self.sensor.lag({(self._logical[t], p): n for (t, p), n in lags.items()
                         if t in self._logical})

    async def _watch_readiness(self) -> None:
        """Keep `meridian_ready` current between probes (the checks report to the sensor)."""
        while True:
            await self.health.evaluate()
            await asyncio.sleep(READY_INTERVAL_S)

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
        self.handler.replaying = True
        try:
            for logical in self.handler.inputs:
                physical = self.prefix + logical
                for partition, _ in enumerate(await self.bus.topic_ends(physical)):
                    upto = await consumer.committed(physical, partition)
                    self._floor[(physical, partition)] = upto
                    self._at[(physical, partition)] = upto
                    replayed += await self._replay(logical, physical, partition, upto, scratch)
        finally:
            self.handler.replaying = False
        self._side.reset()  # the state is at the committed offsets: side inputs follow from there
        self.rebuilds += 1
        log.info("state rebuilt from inputs", extra={
            "records": replayed, "seconds": round(time.perf_counter() - started, 3)})

    async def _replay(self, logical: str, physical: str, partition: int, upto: int,
                      scratch: Outbox) -> int:
        replayed = 0
        async for records in self._chunks(physical, partition, upto):
            for record in records:
                # a record that fails was dead-lettered when it was first consumed
                self._handle_in(logical, record, scratch, propagation.Remote(record)
                                if self._tracer is not None else None)
            scratch.drain()
            replayed += len(records)
            self.health.beat()  # rebuilding is progress: a long rebuild is not a stall
        return replayed

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
        self.handler.replaying = True
        try:
            restored = await self._restore_topics()
            self.handler.restored()
        finally:
            self.handler.replaying = False
        log.info("state restored", extra={"topics": list(self.handler.restore_from),
                                           "records": restored})

    async def _restore_topics(self) -> int:
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
                    self.health.beat()
        return restored

    def _handle_one(self, logical: str, record: Record, out: Outbox) -> str | None:
        """Decode one record and hand it to the handler (inside its consumer span when
        tracing); the reason if it must be dead-lettered."""
        if self._tracer is None:
            return self._handle_in(logical, record, out, None)
        with propagation.Consuming(self._tracer, logical, record, self.group) as scope:
            return self._handle_in(logical, record, out, scope)

    def _handle_in(self, logical: str, record: Record, out: Outbox,
                   scope: propagation.Scope | None, *, side: bool = False) -> str | None:
        try:
            if not record.key:
                raise codec.MalformedMessage("record has no key")
            message = codec.decode(logical, record.value, record.header(codec.TYPE_HEADER))
            inbound = Inbound(logical, record.key.decode(), message,
                              (record.topic, record.partition, record.offset),
                              scope.context if scope is not None else None)
            if scope is not None:
                scope.describe(inbound)
            if not side:  # the service's event time is that of its own partitions
                self.clock.advance(inbound.event_time_ms)
            self.handler.handle(inbound, out)
        except (codec.MalformedMessage, InvalidMessage, UnicodeDecodeError) as exc:
            if scope is not None:
                scope.reject(str(exc))
            return str(exc)
        except Exception:
            self.sensor.handler_error("handle")
            raise
        return None

    def _handle_batch(self, records: list[Record], out: Outbox) -> list[tuple[Record, str]]:
        dead: list[tuple[Record, str]] = []
        counts: dict[str, int] = {}
        consumed = self._consumed
        observe = self.sensor.handle_seconds
        clock = time.perf_counter
        for record in records:
            topic = self._logical[record.topic]
            counts[topic] = counts.get(topic, 0) + 1
            consumed[(record.topic, record.partition)] = record.offset + 1
            started = clock()
            reason = self._handle_one(topic, record, out)
            observe(topic, clock() - started)
            if reason is not None:
                dead.append((record, reason))
        self._at.update(consumed)
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
