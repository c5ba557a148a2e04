"""Kafka bus over aiokafka.

Producer: idempotent, acks=all, keyed sends (murmur2, like every Kafka client), so a retried send
never duplicates and a key stays in one partition, in order. Consumer: auto-commit off; the host
commits explicitly once the handler's effects are durable, so a crash replays instead of losing.
Assignment changes come from a rebalance listener; a batch in flight delays giving partitions up
until it is committed (see `KafkaConsumer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)

from meridian_common.bus.base import (
    Bus,
    Consumer,
    Headers,
    PartitionReader,
    Producer,
    Record,
    TopicConfig,
)

log = logging.getLogger(__name__)

# Longest a member losing partitions waits for its polled batch to be committed.
REVOKE_WAIT_S = 30.0


def _topic_settings(config: TopicConfig) -> dict[str, str]:
    if config.compacted:
        return {"cleanup.policy": "compact"}
    if config.history:
        return {"retention.ms": "-1"}
    return {}


class KafkaBus(Bus):
    def __init__(self, bootstrap: str, client_id: str = "meridian") -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id

    async def ensure_topics(self, topics: Iterable[TopicConfig]) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [t for t in topics if t.name not in existing]
            if not wanted:
                return
            new = [NewTopic(t.name, t.partitions, 1, topic_configs=_topic_settings(t))
                   for t in wanted]
            with contextlib.suppress(TopicAlreadyExistsError):  # a peer created it first
                await admin.create_topics(new)
            log.info("created topics", extra={"topics": [t.name for t in wanted]})
        finally:
            await admin.close()

    async def _partition_count(self, topic: str) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
        await admin.start()
        try:
            # A topic created a moment ago may take a few metadata refreshes to appear.
            for _ in range(50):
                described = await admin.describe_topics([topic])
                partitions = described[0].get("partitions") if described else None
                if described and described[0].get("error_code") == 0 and partitions:
                    return len(partitions)
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
        raise KeyError(f"topic {topic!r} does not exist")

    async def topic_ends(self, topic: str) -> list[int]:
        count = await self._partition_count(topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id=self.client_id,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(count)]
            ends = await consumer.end_offsets(tps)
            return [ends[tp] for tp in tps]
        finally:
            await consumer.stop()

    async def read_partition(self, topic: str, partition: int, start: int,
                             end: int) -> list[Record]:
        if end <= start:
            return []
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, client_id=self.client_id,
                                    enable_auto_commit=False, isolation_level="read_committed",
                                    auto_offset_reset="earliest")
        await consumer.start()
        out: list[Record] = []
        try:
            consumer.assign([tp])
            first = (await consumer.beginning_offsets([tp]))[tp]
            end = min(end, (await consumer.end_offsets([tp]))[tp])
            consumer.seek(tp, max(start, first))
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
                for m in batch.get(tp, ()):
                    if m.offset >= end:
                        break
                    out.append(Record(m.topic, m.partition, m.offset, m.key, m.value,
                                      tuple(m.headers or ())))
            return out
        finally:
            await consumer.stop()

    def partition_reader(self) -> KafkaPartitionReader:
        return KafkaPartitionReader(self)

    def producer(self, *, low_latency: bool = False) -> KafkaProducer:
        return KafkaProducer(self.bootstrap, self.client_id, linger_ms=0 if low_latency else 5)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self.bootstrap, group, list(topics), self.client_id)


class KafkaPartitionReader(PartitionReader):
    """One group-less client kept open for the reads of a host's side inputs: between reads
    its fetcher keeps prefetching from where the last read stopped, so following a partition
    costs no new connection and no seek (`read_partition` starts a client per call). A read
    never waits: what is not fetched yet comes with a later read."""

    def __init__(self, bus: KafkaBus) -> None:
        super().__init__(bus)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap, client_id=bus.client_id, group_id=None,
            enable_auto_commit=False, isolation_level="read_committed",
            auto_offset_reset="earliest")
        self._started = False
        self._next: dict[TopicPartition, int] = {}  # where the client's position is, per tp

    async def read(self, positions: Mapping[tuple[str, int], int],
                   max_records: int) -> list[Record]:
        if not positions:
            return []
        if not self._started:
            await self._consumer.start()
            self._started = True
        wanted = {TopicPartition(t, p): o for (t, p), o in positions.items()}
        if set(wanted) != set(self._next):
            self._consumer.assign(list(wanted))
            self._next = {}
        for tp, offset in wanted.items():
            if self._next.get(tp) != offset:
                self._consumer.seek(tp, offset)
                self._next[tp] = offset
        batches = await self._consumer.getmany(*wanted, timeout_ms=0, max_records=max_records)
        out: list[Record] = []
        for tp in sorted(wanted, key=lambda t: (t.topic, t.partition)):
            for m in batches.get(tp, ()):
                if m.offset >= self._next[tp]:
                    out.append(Record(m.topic, m.partition, m.offset, m.key, m.value,
                                      tuple(m.headers or ())))
                    self._next[tp] = m.offset + 1
        return out

    async def close(self) -> None:
        if self._started:
            await self._consumer.stop()
            self._started = False


class KafkaProducer(Producer):
    def __init__(self, bootstrap: str, client_id: str, linger_ms: int = 5) -> None:
        self._options = {"bootstrap_servers": bootstrap, "client_id": client_id,
                         "enable_idempotence": True, "acks": "all", "linger_ms": linger_ms,
                         "max_batch_size": 512 * 1024}
        # made at the first send: a client made and never started (a service that published
        # nothing) logs "Unclosed AIOKafkaProducer" when it is collected
        self._producer: AIOKafkaProducer | None = None
        self._start_lock = asyncio.Lock()
        self._pending: list[asyncio.Future[object]] = []

    async def _ensure(self) -> AIOKafkaProducer:
        async with self._start_lock:  # concurrent first sends must start the client once
            if self._producer is None:
                producer = AIOKafkaProducer(**self._options)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # closes what start opened before it failed
                    raise
                self._producer = producer
        return self._producer

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: Headers = ()) -> None:
        producer = self._producer or await self._ensure()
        fut = await producer.send(topic, value=value, key=key, headers=list(headers))
        self._pending.append(fut)

    async def flush(self) -> None:
        """Wait for every record sent before this call, including those of other tasks sharing
        the producer (a concurrent flusher must not take them away from this one's wait)."""
        pending = list(self._pending)
        if not pending:
            return
        # asyncio.wait, not gather: a flusher cancelled mid-wait (a task stopped at shutdown)
        # must not cancel the shared delivery futures that other flushers are waiting on.
        await asyncio.wait(pending)
        self._pending = [f for f in self._pending if not f.done()]
        for fut in pending:
            if fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]

    async def stop(self) -> None:
        if self._producer is not None:
            await self.flush()
            await self._producer.stop()
            self._producer = None


class KafkaConsumer(Consumer):
    """A group member. Between a poll that returned records and the commit that follows, a
    batch is in flight: a rebalance that would take partitions away waits for it (at most
    `REVOKE_WAIT_S`), so the commit lands under the generation that handled the records and the
    next owner resumes exactly after them."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], client_id: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
            # how long the broker waits for members to rejoin: room for a batch in flight
            rebalance_timeout_ms=int(REVOKE_WAIT_S * 1000) + 10_000,
            # Range, not aiokafka's default round robin: with several members, partition i of
            # every input topic goes to the same member (all topics have the same partition
            # count and a key lands on the same partition number in each), so a handler that
            # joins a key's candles with its funding sees both on one replica.
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self._consumer.subscribe(topics, listener=_Listener(self))
        self._started = False
        self._idle = asyncio.Event()  # no polled batch waits for its commit
        self._idle.set()
        self._generation = 0  # assignments received (the listener counts them)
        self._seen: frozenset[tuple[str, int]] = frozenset()
        self._seen_generation = 0

    async def _start(self) -> None:
        if not self._started:
            await self._consumer.start()
            self._started = True

    async def start(self) -> None:
        await self._start()

    async def committed(self, topic: str, partition: int) -> int:
        await self._start()
        offset = await self._consumer.committed(TopicPartition(topic, partition))
        return int(offset or 0)

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        await self._start()
        self._idle.set()  # the host polls again only once the previous batch is committed
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000),
                                               max_records=max_records)
        out: list[Record] = []
        for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            out.extend(
                Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
                for m in batches[tp]
            )
        if out:
            self._idle.clear()
        return out

    def take_assignment(self) -> frozenset[tuple[str, int]] | None:
        current = frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())
        generation = self._generation
        if current != self._seen:
            # The new assignment may be visible a moment before the listener counts it (the
            # fetcher is released first): this change is that count, whenever it lands.
            self._seen = current
            self._seen_generation = max(generation, self._seen_generation + 1)
            return current
        if generation > self._seen_generation:  # a rebalance that kept the same partitions
            self._seen_generation = generation
            return current
        return None

    async def lag(self) -> dict[tuple[str, int], int]:
        """Highwater (from the last fetch response; an end-offsets request for a partition not
        fetched yet) minus position, per assigned partition."""
        if not self._started:
            return {}
        ends: dict[TopicPartition, int | None] = {}
        for tp in self._consumer.assignment():
            with contextlib.suppress(AssertionError):  # unassigned meanwhile
                ends[tp] = self._consumer.highwater(tp)
        unknown = [tp for tp, end in ends.items() if end is None]
        if unknown:
            with contextlib.suppress(KafkaError):
                ends.update(await self._consumer.end_offsets(unknown))
        out: dict[tuple[str, int], int] = {}
        for tp, end in ends.items():
            if end is None:
                continue
            try:
                position = await asyncio.wait_for(self._consumer.position(tp), 1.0)
            except (TimeoutError, IllegalStateError):
                continue  # no position yet (just assigned) or taken away meanwhile
            out[(tp.topic, tp.partition)] = max(0, end - position)
        return out

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit; a commit that a rebalance overtook (the batch outlived `REVOKE_WAIT_S`) is
        dropped with a warning: the next owner handles those records again (at-least-once)."""
        try:
            if offsets:
                await self._consumer.commit(
                    {TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit overtaken by a rebalance; the next owner replays these records",
                        extra={"error": type(exc).__name__,
                               "partitions": sorted(f"{t}:{p}" for t, p in offsets)})
        finally:
            self._idle.set()

    async def _revoking(self, revoked: set[TopicPartition]) -> None:
        """Called by the group coordinator before partitions are given up: wait until the batch
        in flight is committed (the host commits after every batch)."""
        if self._idle.is_set() or not revoked:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), REVOKE_WAIT_S)
        except TimeoutError:
            log.warning("rebalance went ahead with a batch still uncommitted; its records "
                        "will be handled again by the next owner",
                        extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in revoked)})

    async def stop(self) -> None:
        self._idle.set()  # a rebalance waiting on this member must not wait for a dead loop
        if self._started:
            await self._consumer.stop()
            self._started = False


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.consumer._revoking(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.consumer._generation += 1
