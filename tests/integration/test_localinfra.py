"""End-to-end check of scripts/localinfra.py: real Kafka and PostgreSQL, no Docker.

Starts both services into a private state dir through the importable API (the way test
fixtures use it), talks to them with the project's real client libraries (aiokafka,
psycopg), then stops them and checks nothing is left running.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _load_localinfra() -> ModuleType:
    """Import scripts/localinfra.py, which is a standalone script, not a package module.

    Same module name as conftest.py uses, so both share one copy (and its child registry).
    """
    name = "localinfra"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "localinfra.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


li = _load_localinfra()


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by a non-reaping PID 1) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


async def _kafka_roundtrip(bootstrap: str) -> None:
    topic = "localinfra.roundtrip"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(10)}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="localinfra-test",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: dict[bytes, bytes] = {}
    partitions_seen: set[int] = set()
    try:
        async with asyncio.timeout(60):
            while len(received) < len(sent):
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    partitions_seen.add(tp.partition)
                    for record in records:
                        assert record.key is not None
                        assert record.value is not None
                        received[record.key] = record.value
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        await consumer.stop()

    assert received == sent
    assert partitions_seen <= {0, 1, 2}


def _postgres_roundtrip(dsn: str) -> None:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        row = conn.execute("select current_user, current_database()").fetchone()
        assert row == ("meridian", "meridian")


async def test_localinfra_kafka_and_postgres(tmp_path: Path) -> None:
    state_dir = tmp_path / "infra"
    # Start both concurrently, off the event loop (start_* block on subprocesses).
    kafka, pg = await asyncio.gather(
        asyncio.to_thread(li.start_kafka, state_dir),
        asyncio.to_thread(li.start_postgres, state_dir),
    )
    try:
        assert kafka.bootstrap == f"127.0.0.1:{kafka.port}"
        assert pg.dsn == f"postgresql://meridian@127.0.0.1:{pg.port}/meridian"
        # Idempotent: a second start returns the running instance.
        assert await asyncio.to_thread(li.start_kafka, state_dir) == kafka
        assert await asyncio.to_thread(li.start_postgres, state_dir) == pg
        assert li.kafka_status(state_dir) == kafka
        assert li.postgres_status(state_dir) == pg

        await _kafka_roundtrip(kafka.bootstrap)
        await asyncio.to_thread(_postgres_roundtrip, pg.dsn)
    finally:
        kafka_stopped = await asyncio.to_thread(li.stop_kafka, kafka)
        pg_stopped = await asyncio.to_thread(li.stop_postgres, pg)

    assert kafka_stopped
    assert pg_stopped
    assert _process_gone(kafka.pid)
    assert _process_gone(pg.pid)
    assert _port_closed(kafka.port)
    assert _port_closed(pg.port)
    assert not kafka.data_dir.exists()
    assert not pg.data_dir.exists()
    assert not pg.work_dir.exists()
    assert li.kafka_status(state_dir) is None
    assert li.postgres_status(state_dir) is None
    # Stopping again is a no-op.
    assert not li.stop_kafka(state_dir=state_dir)
    assert not li.stop_postgres(state_dir=state_dir)
