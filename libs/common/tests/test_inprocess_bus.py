"""In-process bus: Kafka's partitioner, per-partition order, committed offsets, trimming, lag."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner

from meridian_common.bus import TopicConfig, partition_for
from meridian_common.bus.inprocess import InProcessBus

KEYS = [b"binance:BTCUSDT", b"binance:ETHUSDT", b"binance:XRPUSDT", b"binance:LTCUSDT",
        b"paper:binance:BTCUSDT", b"", b"a", b"\x00\xff", "ключ".encode()]

# Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2), signed int32.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 2, 3, 7, 12, 256])
def test_partition_for_matches_aiokafka_default_partitioner(partitions: int) -> None:
    parts = list(range(partitions))
    for key in KEYS + list(JAVA_MURMUR2):
        assert partition_for(key, partitions) == DefaultPartitioner()(key, parts, parts)


@pytest.mark.parametrize("partitions", [3, 7, 10])
def test_partition_for_matches_java_client(partitions: int) -> None:
    for key, signed in JAVA_MURMUR2.items():
        assert partition_for(key, partitions) == (signed & 0x7FFFFFFF) % partitions


async def _bus(partitions: int = 3, topic: str = "t") -> InProcessBus:
    bus = InProcessBus(partitions)
    await bus.ensure_topics([TopicConfig(topic, partitions)])
    return bus


async def _send(bus: InProcessBus, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = bus.producer()
    for key, value in items:
        await producer.send(topic, key, value, (("h", b"1"),))
    await producer.flush()


async def test_keyed_records_land_where_kafka_puts_them() -> None:
    bus = await _bus(7)
    await _send(bus, "t", [(k, b"v") for k in KEYS])
    records = bus.read("t")
    assert len(records) == len(KEYS)
    for r in records:
        assert r.partition == partition_for(r.key, 7)  # type: ignore[arg-type]
        assert r.headers == (("h", b"1"),)


async def test_order_and_offsets_per_partition() -> None:
    bus = await _bus(3)
    items = [(KEYS[i % 4], str(i).encode()) for i in range(200)]
    await _send(bus, "t", items)
    consumer = bus.consumer("g", ["t"])
    got = []
    while batch := await consumer.poll(0.01, 17):
        assert len(batch) <= 17
        got.extend(batch)
    assert len(got) == 200
    by_partition: dict[int, list[int]] = {}
    by_key: dict[bytes, list[int]] = {}
    for r in got:
        by_partition.setdefault(r.partition, []).append(r.offset)
        by_key.setdefault(r.key, []).append(int(r.value))  # type: ignore[arg-type]
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))
    for key, values in by_key.items():
        assert values == [int(v) for k, v in items if k == key]
    assert bus.end_offsets("t") == [len(by_partition.get(p, [])) for p in range(3)]


async def test_new_consumer_resumes_from_committed_offset() -> None:
    bus = await _bus(1)
    await _send(bus, "t", [(b"k", str(i).encode()) for i in range(10)])
    first = bus.consumer("g", ["t"])
    batch = await first.poll(0.01, 4)
    assert [r.offset for r in batch] == [0, 1, 2, 3]
    await first.commit({("t", 0): 3})  # records 0..2 done, 3 not durable yet
    await first.stop()
    assert bus.committed("g", "t", 0) == 3
    second = bus.consumer("g", ["t"])
    rest = await second.poll(0.01, 100)
    assert [r.offset for r in rest] == list(range(3, 10))
    other = bus.consumer("other", ["t"])
    assert len(await other.poll(0.01, 100)) == 10  # another group starts from the beginning


async def test_trim_keeps_everything_after_each_group_position() -> None:
    n = 5000
    bus = await _bus(1)
    await _send(bus, "t", [(b"k", str(i).encode()) for i in range(n)])
    a = bus.consumer("a", ["t"])
    b = bus.consumer("b", ["t"])
    got_a = await a.poll(0.01, n)
    assert len(got_a) == n
    await a.commit({("t", 0): n})
    assert len(bus.read("t")) == n  # b has committed nothing: nothing may go
    got_b = await b.poll(0.01, 4200)
    await b.commit({("t", 0): 4200})
    retained = bus.read("t")
    assert len(retained) < n  # trimmed below the lowest committed offset ...
    assert retained[0].offset <= 4200  # ... and not beyond it
    assert retained[-1].offset == n - 1
    rest_b = await b.poll(0.01, n)
    assert [r.offset for r in got_b + rest_b] == list(range(n))
    # a restarted member of b resumes at its committed offset and still gets all after it
    await b.stop()
    b2 = bus.consumer("b", ["t"])
    assert [r.offset for r in await b2.poll(0.01, n)] == list(range(4200, n))
    await b2.commit({("t", 0): n})
    assert len(bus.read("t")) <= n - 4200  # trimming is batched, but never un-trims


async def test_stopped_group_keeps_its_records_for_a_restart() -> None:
    """A group whose consumer stopped (a service restart) still has a committed offset: records
    after it must not be trimmed because another group committed further."""
    n = 5000
    bus = await _bus(1)
    await _send(bus, "t", [(b"k", str(i).encode()) for i in range(n)])
    slow = bus.consumer("slow", ["t"])
    fast = bus.consumer("fast", ["t"])
    await slow.poll(0.01, 100)
    await slow.commit({("t", 0): 100})
    await slow.stop()  # the service is restarting
    await fast.poll(0.01, n)
    await fast.commit({("t", 0): n})
    restarted = bus.consumer("slow", ["t"])
    got = await restarted.poll(0.01, n)
    assert [r.offset for r in got] == list(range(100, n))


async def test_lag_reaches_zero() -> None:
    bus = await _bus(3)
    consumer = bus.consumer("g", ["t"])
    assert bus.lag() == 0
    await _send(bus, "t", [(KEYS[i % 5], b"x") for i in range(50)])
    assert bus.lag() == 50
    taken = len(await consumer.poll(0.01, 20))
    assert bus.lag() == 50 - taken
    while await consumer.poll(0.01, 20):
        pass
    assert bus.lag() == 0


async def test_poll_wakes_on_new_record() -> None:
    bus = await _bus(1)
    consumer = bus.consumer("g", ["t"])

    async def later() -> None:
        await asyncio.sleep(0.02)
        await _send(bus, "t", [(b"k", b"v")])

    started = time.perf_counter()
    task = asyncio.create_task(later())
    records = await consumer.poll(5.0, 10)
    await task
    assert [r.value for r in records] == [b"v"]
    assert time.perf_counter() - started < 2.0


async def test_poll_times_out_empty() -> None:
    bus = await _bus(1)
    consumer = bus.consumer("g", ["t"])
    assert await consumer.poll(0.01, 10) == []


async def test_unknown_topic() -> None:
    bus = await _bus(1)
    with pytest.raises(KeyError, match="ensure_topics"):
        bus.consumer("g", ["missing"])
    with pytest.raises(KeyError, match="missing"):
        await bus.producer().send("missing", b"k", b"v")


async def test_ensure_topics_keeps_existing() -> None:
    bus = await _bus(1)
    await _send(bus, "t", [(b"k", b"v")])
    await bus.ensure_topics([TopicConfig("t", 5)])
    assert len(bus.end_offsets("t")) == 1
    assert len(bus.read("t")) == 1


async def test_read_partition_returns_a_range_without_moving_any_group() -> None:
    bus = InProcessBus()
    await bus.ensure_topics([TopicConfig("t", 2)])
    producer = bus.producer()
    for i in range(10):
        await producer.send("t", b"k", str(i).encode())
    partition = partition_for(b"k", 2)
    ends = await bus.topic_ends("t")
    assert ends[partition] == 10
    assert ends[1 - partition] == 0
    middle = await bus.read_partition("t", partition, 3, 6)
    assert [r.offset for r in middle] == [3, 4, 5]
    assert [r.value for r in middle] == [b"3", b"4", b"5"]
    assert await bus.read_partition("t", partition, 8, 50) == \
        (await bus.read_partition("t", partition, 8, 10))
    assert await bus.read_partition("t", partition, 6, 3) == []
    consumer = bus.consumer("g", ["t"])
    assert len(await consumer.poll(0.1, 100)) == 10  # the reads above consumed nothing
