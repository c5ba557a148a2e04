"""Kafka bus over aiokafka.

Producer: idempotent, acks=all, keyed sends (murmur2, like every Kafka client), so a retried send
never duplicates and a key stays in one partition, in order. Consumer: auto-commit off; the host
commits explicitly once the handler's effects are durable, so a crash replays instead of losing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from meridian_common.bus.base import Bus, Consumer, Headers, Producer, Record, TopicConfig

log = logging.getLogger(__name__)


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

    def producer(self, *, low_latency: bool = False) -> KafkaProducer:
        return KafkaProducer(self.bootstrap, self.client_id, linger_ms=0 if low_latency else 5)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        return KafkaConsumer(self.bootstrap, group, list(topics), self.client_id)


class KafkaProducer(Producer):
    def __init__(self, bootstrap: str, client_id: str, linger_ms: int = 5) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=512 * 1024,
        )
        self._started = False
        self._start_lock = asyncio.Lock()
        self._pending: list[asyncio.Future[object]] = []

    async def _ensure(self) -> None:
        if self._started:
            return
        async with self._start_lock:  # concurrent first sends must start the client once
            if not self._started:
                await self._producer.start()
                self._started = True

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: Headers = ()) -> None:
        await self._ensure()
        fut = await self._producer.send(topic, value=value, key=key, headers=list(headers))
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
        if self._started:
            await self.flush()
            await self._producer.stop()
            self._started = False


class KafkaConsumer(Consumer):
    def __init__(self, bootstrap: str, group: str, topics: list[str], client_id: str) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
        )
        self._started = False

    async def _start(self) -> None:
        if not self._started:
            await self._consumer.start()
            self._started = True

    async def committed(self, topic: str, partition: int) -> int:
        await self._start()
        offset = await self._consumer.committed(TopicPartition(topic, partition))
        return int(offset or 0)

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        await self._start()
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000),
                                               max_records=max_records)
        out: list[Record] = []
        for tp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            out.extend(
                Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
                for m in batches[tp]
            )
        return out

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if offsets:
            await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})

    async def stop(self) -> None:
        if self._started:
            await self._consumer.stop()
            self._started = False
