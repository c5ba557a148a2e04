"""The bus interface: the semantics every implementation keeps.

- Records are keyed; a key always maps to the same partition (Kafka's murmur2 partitioner, so the
  in-process bus places keys exactly where Kafka would).
- Order is kept per partition; offsets are per partition and start at 0.
- A consumer belongs to a group; the group's committed offset is where a restart resumes. Commits
  are explicit: the host commits only after the handler's effects are durable.
- The group shares the partitions among its members and moves them when members come and go; a
  consumer reports each new assignment (`take_assignment`) after the poll that first returns
  records under it, before those records are handled, so a host can rebuild its state first.
  A member losing partitions waits, before giving them up, until the batch it has polled is
  committed, so the new owner starts where it stopped.
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
        """Record, per partition, the offset of the next record to read after a restart. A
        commit that a rebalance overtook may be dropped (the next owner replays the records)."""

    @abstractmethod
    async def committed(self, topic: str, partition: int) -> int:
        """The group's committed offset of a partition (0 when the group has none)."""

    @abstractmethod
    def take_assignment(self) -> frozenset[TopicPartition] | None:
        """The partitions assigned now, if the assignment changed (or was first made) since the
        last call; None otherwise. A change also means positions restart from the committed
        offsets."""

    @abstractmethod
    async def lag(self) -> dict[TopicPartition, int]:
        """End offset minus this consumer's position, per assigned partition whose end is known
        (for the lag gauge: call it every few seconds, not per record)."""

    async def start(self) -> None:
        """Join the group (otherwise the first call that needs it does)."""
        return None

    async def stop(self) -> None:
        return None


class PartitionReader:
    """Follows chosen partitions outside any consumer group, from positions the caller keeps
    (a replica's side inputs: see `meridian_common.side_inputs`). Nothing is committed.

    This default reads through `Bus.read_partition`; a bus whose every read has a setup cost
    (Kafka starts a client per call) keeps one reader open instead.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def read(self, positions: Mapping[TopicPartition, int],
                   max_records: int) -> list[Record]:
        """Records from each partition's given offset on (at most `max_records` per
        partition), in order per partition; what has not been written yet comes later."""
        out: list[Record] = []
        for (topic, partition), start in sorted(positions.items()):
            out.extend(await self.bus.read_partition(topic, partition, start,
                                                      start + max_records))
        return out

    async def close(self) -> None:
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

    def partition_reader(self) -> PartitionReader:
        """A reader of partitions outside any group, kept open by its caller (`close`)."""
        return PartitionReader(self)

    async def close(self) -> None:
        return None
