"""KafkaProducer.flush under concurrency: one flusher stopped mid-wait leaves the others whole.

Live ingest shares one producer between its per-symbol tasks; at shutdown those tasks are
cancelled while they may be flushing, and the final `stop()` flush must still see every record
delivered (it once saw the shared delivery futures cancelled by a cancelled `gather`).
"""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from meridian_common.bus.base import TopicConfig
from meridian_common.bus.kafka import KafkaBus

pytestmark = pytest.mark.integration


async def _scenario(bootstrap: str, topic: str) -> tuple[int, list[int]]:
    bus = KafkaBus(bootstrap)
    await bus.ensure_topics([TopicConfig(topic, partitions=1)])
    producer = bus.producer()
    records = 200
    for i in range(records):
        await producer.send(topic, b"k", str(i).encode())
    doomed = asyncio.create_task(producer.flush())
    await asyncio.sleep(0)  # the doomed flusher is now waiting on the shared futures
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await producer.stop()  # flushes: must not inherit the cancellation
    return records, await bus.topic_ends(topic)


def test_a_cancelled_flusher_does_not_cancel_the_others(kafka_bootstrap: str,
                                                       topic_prefix: str) -> None:
    records, ends = asyncio.run(_scenario(kafka_bootstrap, topic_prefix + "flush"))
    assert ends == [records]


async def test_a_producer_that_never_sent_leaves_no_client_open(kafka_bootstrap: str) -> None:
    """A service that published nothing stops without aiokafka's "Unclosed AIOKafkaProducer"
    (the client was made at construction and never started): it is made at the first send."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        producer = KafkaBus(kafka_bootstrap).producer()
        await producer.stop()
        del producer
        gc.collect()
    assert not [w for w in caught if "Unclosed AIOKafkaProducer" in str(w.message)]
