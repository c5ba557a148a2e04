"""The bus interface: the semantics every implementation keeps.

- Records are keyed; a key always maps to the same partition (Kafka's murmur2 partitioner, so the
  in-process bus places keys exactly where Kafka would).
- Order is kept per partition; offsets are per partition and start at 0.
- A consumer belongs to a group; the group's committed offset is where a restart resumes. Commits
  are explicit: the host commits only after the handler's effects are durable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from aiokafka.partitioner import murmur2

Headers = tuple[tuple[str, bytes], ...]
TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class TopicConfig:
    name: str
    partitions: int
    compacted: bool = False
    history: bool = False  # keep every record (no time-based deletion)


@lru_cache(maxsize=65536)
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2, as the Java client computes it)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Producer(ABC):
    @abstractmethod
    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: Headers = ()) -> None:
        """Queue a record; it is durable only after flush() returns."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every queued record is acknowledged by the bus."""

    async def stop(self) -> None:
        await self.flush()


class Consumer(ABC):
    @abstractmethod
    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        """Next records of the subscribed topics, in order per partition (may be empty)."""

    @abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record, per partition, the offset of the next record to read after a restart."""

    @abstractmethod
    async def committed(self, topic: str, partition: int) -> int:
        """The group's committed offset of a partition (0 when the group has none)."""

    async def stop(self) -> None:
        return None


class Bus(ABC):
    @abstractmethod
    async def ensure_topics(self, topics: Iterable[TopicConfig]) -> None:
        """Create missing topics (existing ones are left as they are)."""

    @abstractmethod
    def producer(self, *, low_latency: bool = False) -> Producer:
        """A producer; `low_latency` sends each record at once instead of batching briefly
        (for live paths where one record at a time must reach the topic quickly)."""

    @abstractmethod
    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    @abstractmethod
    async def topic_ends(self, topic: str) -> list[int]:
        """The end offset (next offset to be written) of each partition, in partition order."""

    @abstractmethod
    async def read_partition(self, topic: str, partition: int, start: int,
                             end: int) -> list[Record]:
        """Records with start <= offset < end of one partition, outside any consumer group.

        For reading a topic's own history (the tail an ingest replica resumes from, a replay of
        a range) without moving any group's committed offsets. Records below the retained
        start are gone and simply absent.
        """

    async def close(self) -> None:
        return None
