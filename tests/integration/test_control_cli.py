"""`meridian control` against real Kafka, run as an operator runs it: engage the kill switch, see
it in `status --json`, and a risk gate restored from control.v1 (as a restarted service is) holds
it; clear it, and the status and a restored gate follow."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from meridian.v1 import common_pb2, control_pb2
from meridian_common import topics
from meridian_common.bus.base import Bus
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import all_topic_configs, publish
from meridian_common.metrics import NullSensor

pytestmark = pytest.mark.integration


def _meridian(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meridian_cli.main", "control", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def _status(env: dict[str, str]) -> dict[str, Any]:
    proc = _meridian(env, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


async def _cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})])
        entries = response.resources[0][4]
        return next(str(e[1]) for e in entries if e[0] == "cleanup.policy")
    finally:
        await admin.close()


async def _publish_halt(bus: KafkaBus, prefix: str) -> None:
    producer = bus.producer()
    try:
        halt = control_pb2.Control(
            meta=common_pb2.Meta(id="halt-1", event_time_ms=1_700_000_000_000, producer="ops"),
            halt=control_pb2.Halt(service="execution", halted=True, reason="maintenance"))
        await publish(producer, prefix, [(topics.CONTROL, "halt:execution", halt)], NullSensor())
        await producer.flush()
    finally:
        await producer.stop()


def test_engage_status_restore_clear(
        kafka_bootstrap: str, topic_prefix: str,
        restored_kill_switch: Callable[[Bus, str], Awaitable[bool]]) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")},
           "MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": topic_prefix}
    control_topic = topic_prefix + topics.CONTROL
    bus = KafkaBus(kafka_bootstrap)

    # before anything was published: the topic does not exist, the switch is not engaged
    before = _status(env)
    assert before["exists"] is False
    assert before["kill_switch_engaged"] is False

    proc = _meridian(env, "kill-switch", "engage", "--reason", "exchange outage",
                     "--actor", "alice")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "\n" not in line
    assert "kill switch ENGAGED" in line
    assert control_topic in line
    assert kafka_bootstrap in line

    # the command created the topic as the services do: compacted, one partition
    assert asyncio.run(_cleanup_policy(kafka_bootstrap, control_topic)) == "compact"
    assert len(asyncio.run(bus.topic_ends(control_topic))) == 1

    asyncio.run(_publish_halt(bus, topic_prefix))
    engaged = _status(env)
    assert engaged["exists"] is True
    assert engaged["kill_switch_engaged"] is True
    switch = engaged["commands"]["kill_switch"]
    assert switch["state"] == "engaged"
    assert switch["fields"] == {"engaged": True, "reason": "exchange outage", "actor": "alice"}
    assert switch["producer"] == "cli"
    assert switch["id"].startswith("control:kill_switch:")
    assert engaged["commands"]["halt:execution"]["command"] == "halt"

    # a risk gate (re)started on these topics holds the switch
    asyncio.run(bus.ensure_topics(all_topic_configs(topic_prefix, 3)))  # the gate's other topics
    assert asyncio.run(restored_kill_switch(bus, topic_prefix)) is True

    # clear, with the actor defaulting to the OS user name
    proc = _meridian(env, "kill-switch", "clear", "--reason", "outage over")
    assert proc.returncode == 0, proc.stderr
    assert "kill switch cleared" in proc.stdout
    cleared = _status(env)
    assert cleared["kill_switch_engaged"] is False
    switch = cleared["commands"]["kill_switch"]
    assert switch["state"] == "cleared"
    assert switch["fields"]["reason"] == "outage over"
    assert switch["fields"]["actor"]
    assert cleared["records"] == 3
    assert asyncio.run(restored_kill_switch(bus, topic_prefix)) is False

    text = _meridian(env, "status")
    assert text.returncode == 0, text.stderr
    assert "kill_switch: kill switch cleared: reason 'outage over'" in text.stdout
    assert "halt execution: HALTED, reason 'maintenance'" in text.stdout
