"""Side inputs: the records of a few keys every replica must see, whoever owns their partition.

A handler that joins one key's stream into every other key's output (features: the reference
symbol's return in every row) cannot run as several replicas of one consumer group on its
assigned partitions alone: a replica not assigned the joined key's partition never sees its
records, and the rows that wait for them wait forever. `Handler.side_keys` names those keys;
the host follows their partitions OUTSIDE the group (`Bus.partition_reader`) while the group
does not assign them to this replica, and hands their records (those keys only, in partition
order) to `handle` like any other record.

Positions, so that no side record is fed twice or skipped:

- Each followed key has its own cursor (the next offset to feed). A cursor starts where the
  state already reflects the partition: `ServiceHost._at`, the committed offset the last
  rebuild replayed to, or, for a partition this replica handled itself until it was revoked,
  the offset after the last record it handled. A key that becomes a side key later (features:
  a new exchange's reference) starts there too, since its records were not fed before.
- A rebuild resets the state and replays every partition: the cursors restart (`reset`).
- When the group assigns a followed partition it delivers it from the committed offset, so the
  partition is no longer followed (`assigned`). If side records beyond the offset the state
  holds for the partition's other keys were fed, the state is not at the committed offset:
  `fed_beyond` makes the host rebuild instead of feeding them a second time.

Outputs of a side record are published only for keys this replica owns: a key's partition of
the handler's first input (for features md.candle.v1, where a symbol's candles are) is
assigned to it. The others (the joined key's own row) are its owner's to publish.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from meridian_common.bus.base import Bus, PartitionReader, Record, TopicPartition, partition_for
from meridian_common.handler import Handler, Outbox

Assignment = Collection[TopicPartition]


class SideInputs:
    """The side-input positions of one host (see the module docstring for the rules)."""

    def __init__(self, handler: Handler, bus: Bus, prefix: str) -> None:
        self.handler = handler
        self.bus = bus
        self.prefix = prefix
        self._reader: PartitionReader | None = None
        self._partitions: dict[str, int] = {}  # partition count per physical topic
        # next offset to feed, per followed physical partition and key
        self._cursors: dict[TopicPartition, dict[bytes, int]] = {}
        # per physical partition: the offset after the last side record fed since the rebuild
        self._fed: dict[TopicPartition, int] = {}

    def reset(self) -> None:
        """The state was rebuilt up to the committed offsets: follow again from there."""
        self._cursors = {}
        self._fed = {}

    def assigned(self, assignment: Assignment) -> None:
        """The group now delivers these partitions itself: stop following them."""
        for tp in assignment:
            self._cursors.pop(tp, None)
            self._fed.pop(tp, None)

    def fed_beyond(self, tp: TopicPartition, at: int) -> bool:
        """True when side records of `tp` at or after `at` (where the state of its other keys
        is) have been fed: the group delivering it from `at` would feed them twice."""
        return self._fed.get(tp, 0) > at

    def followed(self) -> dict[TopicPartition, dict[bytes, int]]:
        """The cursors, per followed partition and key (for tests and logs)."""
        return {tp: dict(keys) for tp, keys in self._cursors.items()}

    async def read(self, assignment: Assignment, at: Mapping[TopicPartition, int],
                   max_records: int) -> list[tuple[str, Record]]:
        """The next side records, as (logical topic, record) in partition order, each fed
        once: records of keys not asked for are passed over."""
        wanted = await self._wanted(assignment, at)
        if not wanted:
            return []
        if self._reader is None:
            self._reader = self.bus.partition_reader()
        positions = {tp: min(self._cursors[tp][k] for k in keys) for tp, keys in wanted.items()}
        records = await self._reader.read(positions, max_records)
        out: list[tuple[str, Record]] = []
        ends: dict[TopicPartition, int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            ends[tp] = record.offset + 1
            key = record.key or b""
            if key in wanted[tp] and record.offset >= self._cursors[tp][key]:
                out.append((record.topic.removeprefix(self.prefix), record))
                self._fed[tp] = record.offset + 1
        for tp, end in ends.items():  # every wanted key of tp has been read up to end
            cursors = self._cursors[tp]
            for key in wanted[tp]:
                cursors[key] = max(cursors[key], end)
        return out

    async def _wanted(self, assignment: Assignment, at: Mapping[TopicPartition, int],
                      ) -> dict[TopicPartition, set[bytes]]:
        """The side keys to follow now, by physical partition (those the group does not
        assign); a key followed for the first time gets its cursor at `at`."""
        declared = self.handler.side_keys()
        if not declared:
            return {}
        wanted: dict[TopicPartition, set[bytes]] = {}
        for logical, keys in declared.items():
            if logical not in self.handler.inputs:
                raise ValueError(f"{self.handler.name}: side input {logical!r} is not one of "
                                 f"its inputs {self.handler.inputs}")
            physical = self.prefix + logical
            count = await self._count(physical)
            for key in keys:
                raw = key.encode()
                tp = (physical, partition_for(raw, count))
                if tp in assignment:
                    continue
                if not self.handler.rebuild_from_inputs:
                    raise TypeError(f"{self.handler.name}: side inputs need a "
                                    "rebuild_from_inputs handler (they are followed from where "
                                    "the rebuild stopped)")
                wanted.setdefault(tp, set()).add(raw)
                self._cursors.setdefault(tp, {}).setdefault(raw, at.get(tp, 0))
        return wanted

    async def _count(self, physical: str) -> int:
        count = self._partitions.get(physical)
        if count is None:
            count = self._partitions[physical] = len(await self.bus.topic_ends(physical))
        return count

    async def owner(self) -> str:
        """The physical topic whose partitions decide who owns an output key."""
        physical = self.prefix + self.handler.inputs[0]
        await self._count(physical)
        return physical

    def owns(self, physical: str, key: str, assignment: Assignment) -> bool:
        """True when `key`'s partition of `physical` (a topic `owner` returned) is assigned."""
        return (physical, partition_for(key.encode(), self._partitions[physical])) in assignment

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None


def keep_owned(side: Outbox, out: Outbox, owns: Callable[[str], bool]) -> int:
    """Move a side record's outputs into the batch's outbox, those of owned keys only (with
    their trace contexts); the number dropped."""
    items, causes = side.drain_traced()
    dropped = 0
    for i, (topic, key, message) in enumerate(items):
        if owns(key):
            out.emit(topic, key, message, causes[i] if causes is not None else None)
        else:
            dropped += 1
    return dropped
