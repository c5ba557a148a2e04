"""In-process bus: Kafka's semantics that matter, in memory, for the embedded run and unit tests.

Keeps keyed partitions (same partitioner as Kafka), per-partition order and offsets, and one
committed offset per (group, partition). A consumer group has one member, which owns every
partition of its topics, unless a test moves partitions itself (`InProcessConsumer.assign`:
replicas sharing a group, each with its own share, and rebalances at chosen points). Records
below every group's committed offset are dropped, so a long replay does not hold the whole
history in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from meridian_common.bus.base import (
    Bus,
    Consumer,
    Headers,
    Producer,
    Record,
    TopicConfig,
    TopicPartition,
    partition_for,
)

_TRIM_EVERY = 4096


class _Log:
    """One partition: records[i] has offset base + i."""

    __slots__ = ("base", "records")

    def __init__(self) -> None:
        self.base = 0
        self.records: list[Record] = []

    @property
    def end(self) -> int:
        return self.base + len(self.records)


class InProcessBus(Bus):
    def __init__(self, default_partitions: int = 3) -> None:
        self.default_partitions = default_partitions
        self._logs: dict[str, list[_Log]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._subscribers: dict[str, list[InProcessConsumer]] = {}
        # Every group that ever read a topic, live or stopped: a stopped group will resume from
        # its committed offset, so nothing it has not committed may be trimmed.
        self._groups: dict[str, set[str]] = {}
        # History topics keep every record, as Kafka does with retention.ms=-1.
        self._history: set[str] = set()

    async def ensure_topics(self, topics: Iterable[TopicConfig]) -> None:
        for t in topics:
            self._logs.setdefault(t.name, [_Log() for _ in range(t.partitions)])
            if t.history:
                self._history.add(t.name)

    def _topic(self, name: str) -> list[_Log]:
        logs = self._logs.get(name)
        if logs is None:
            raise KeyError(f"topic {name!r} does not exist (create it with ensure_topics)")
        return logs

    def producer(self, *, low_latency: bool = False) -> InProcessProducer:
        return InProcessProducer(self)

    def consumer(self, group: str, topics: Sequence[str]) -> InProcessConsumer:
        consumer = InProcessConsumer(self, group, list(topics))
        for t in topics:
            self._topic(t)
            self._subscribers.setdefault(t, []).append(consumer)
            self._groups.setdefault(t, set()).add(group)
        return consumer

    def append(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        logs = self._topic(topic)
        partition = partition_for(key, len(logs)) if key is not None else 0
        log = logs[partition]
        log.records.append(Record(topic, partition, log.end, key, value, headers))
        for sub in self._subscribers.get(topic, ()):
            sub.wake.set()

    def committed(self, group: str, topic: str, partition: int) -> int:
        return self._committed.get((group, topic, partition), 0)

    def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        for (topic, partition), offset in offsets.items():
            self._committed[(group, topic, partition)] = offset
            self._maybe_trim(topic, partition)

    def _maybe_trim(self, topic: str, partition: int) -> None:
        log = self._logs[topic][partition]
        groups = self._groups.get(topic, ())
        if not groups or topic in self._history:
            return
        low = min(self.committed(g, topic, partition) for g in groups)
        if low - log.base >= _TRIM_EVERY:
            del log.records[: low - log.base]
            log.base = low

    def end_offsets(self, topic: str) -> list[int]:
        return [log.end for log in self._topic(topic)]

    async def topic_ends(self, topic: str) -> list[int]:
        return self.end_offsets(topic)

    async def read_partition(self, topic: str, partition: int, start: int,
                             end: int) -> list[Record]:
        log = self._topic(topic)[partition]
        lo = max(start, log.base) - log.base
        hi = max(min(end, log.end) - log.base, lo)
        return log.records[lo:hi]

    def read(self, topic: str) -> list[Record]:
        """Every retained record of a topic, partition by partition (for tests and reports)."""
        return [r for log in self._topic(topic) for r in log.records]

    def lag(self) -> int:
        """Records not yet consumed by some subscribed consumer (0 when the pipeline is drained)."""
        total = 0
        for topic, subs in self._subscribers.items():
            for sub in subs:
                for p, log in enumerate(self._logs[topic]):
                    total += log.end - sub.position(topic, p)
        return total


class InProcessProducer(Producer):
    def __init__(self, bus: InProcessBus) -> None:
        self.bus = bus

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: Headers = ()) -> None:
        self.bus.append(topic, key, value, headers)

    async def flush(self) -> None:
        return None


class InProcessConsumer(Consumer):
    def __init__(self, bus: InProcessBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.wake = asyncio.Event()
        self._parts: list[TopicPartition] = [
            (t, p) for t in topics for p in range(len(bus._topic(t)))
        ]
        self._pos: dict[TopicPartition, int] = {
            tp: bus.committed(group, *tp) for tp in self._parts
        }
        self.idle = False
        self._announced = False

    def position(self, topic: str, partition: int) -> int:
        return self._pos.get((topic, partition), 0)

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        share = max(1, max_records // max(1, len(self._parts)))
        for rounds in (share, max_records):
            for tp in self._parts:
                room = min(rounds, max_records - len(out))
                if room <= 0:
                    return out
                log = self.bus._logs[tp[0]][tp[1]]
                start = self._pos[tp]
                if start < log.base:
                    start = log.base
                got = log.records[start - log.base : start - log.base + room]
                if got:
                    out.extend(got)
                    self._pos[tp] = got[-1].offset + 1
        return out

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        records = self._take(max_records)
        if records:
            return records
        self.wake.clear()
        self.idle = True
        try:
            await asyncio.wait_for(self.wake.wait(), timeout_s)
        except TimeoutError:
            return []
        finally:
            self.idle = False
        return self._take(max_records)

    async def committed(self, topic: str, partition: int) -> int:
        return self.bus.committed(self.group, topic, partition)

    def take_assignment(self) -> frozenset[TopicPartition] | None:
        """The one member of its group owns every partition from the start (one assignment,
        never changed) unless `assign` moved them."""
        if self._announced:
            return None
        self._announced = True
        return frozenset(self._parts)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Act as a rebalance giving this member `partitions` (of its topics): for tests of
        replicas in one group, which give each member its share. Positions restart from the
        group's committed offsets and the next `take_assignment` reports the change, as
        Kafka's consumer does; the test keeps the members' shares disjoint."""
        parts = sorted(set(partitions))
        unknown = [tp for tp in parts if tp[0] not in self.bus._subscribers
                   or self not in self.bus._subscribers[tp[0]]]
        if unknown:
            raise KeyError(f"not subscribed to {unknown}")
        self._parts = parts
        self._pos = {tp: self.bus.committed(self.group, *tp) for tp in parts}
        self._announced = False
        self.wake.set()

    async def lag(self) -> dict[TopicPartition, int]:
        return {tp: self.bus._logs[tp[0]][tp[1]].end - self._pos[tp] for tp in self._parts}

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.bus.commit(self.group, offsets)

    async def stop(self) -> None:
        for t, _ in self._parts:
            subs = self.bus._subscribers.get(t, [])
            if self in subs:
                subs.remove(self)
