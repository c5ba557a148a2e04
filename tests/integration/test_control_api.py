"""The control plane's HTTP API against real Kafka, run as it is deployed (`python -m
meridian_control`, uvicorn on a free port): engage the kill switch over HTTP, and a risk gate
restored from control.v1 (as a restarted service is) holds it; clear it, and a restored gate
follows. Tokens never reach the service's logs; SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from meridian_common import topics
from meridian_common.bus.base import Bus
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import all_topic_configs
from meridian_common.testing import free_port, service_process

pytestmark = pytest.mark.integration

WRITE = "it-write-token-5f1c9a7e2b"
READ = "it-read-token-0d3e8b6a41"


@pytest.fixture
def api(kafka_bootstrap: str, topic_prefix: str,
        tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """The service in its own process; yields (base URL, process, its stderr file)."""
    port = free_port()
    env = {"MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": topic_prefix, "MERIDIAN_CONTROL_PORT": str(port),
           "MERIDIAN_CONTROL_TOKEN": WRITE, "MERIDIAN_CONTROL_READ_TOKEN": READ}
    logs = tmp_path / "control.log"
    base = f"http://127.0.0.1:{port}"
    with service_process("meridian_control", env, logs, f"{base}/health") as proc:
        yield base, proc, logs


def test_engage_restore_clear_over_http(
        api: tuple[str, subprocess.Popen[str], Path], kafka_bootstrap: str, topic_prefix: str,
        restored_kill_switch: Callable[[Bus, str], Awaitable[bool]]) -> None:
    base, proc, logs = api
    write = {"Authorization": f"Bearer {WRITE}"}
    read = {"Authorization": f"Bearer {READ}"}
    bus = KafkaBus(kafka_bootstrap)

    # the service created control.v1 at start; nothing was published yet
    assert len(asyncio.run(bus.topic_ends(topic_prefix + topics.CONTROL))) == 1
    before = httpx.get(f"{base}/v1/kill-switch", headers=read, timeout=30)
    assert before.status_code == 200, before.text
    assert before.json()["engaged"] is False
    assert before.json()["time"] is None
    assert before.json()["topic"] == topic_prefix + topics.CONTROL

    # refused: no token, the read-only token
    body = {"engaged": True, "reason": "exchange outage", "actor": "alice"}
    assert httpx.post(f"{base}/v1/kill-switch", json=body, timeout=30).status_code == 401
    assert httpx.post(f"{base}/v1/kill-switch", json=body, headers=read,
                      timeout=30).status_code == 403

    engaged = httpx.post(f"{base}/v1/kill-switch", json=body, headers=write, timeout=30)
    assert engaged.status_code == 202, engaged.text
    published = engaged.json()
    assert (published["engaged"], published["reason"], published["actor"]) == (
        True, "exchange outage", "alice")
    assert published["producer"] == "control"
    assert published["id"].startswith("control:kill_switch:")

    shown = httpx.get(f"{base}/v1/kill-switch", headers=read, timeout=30).json()
    assert (shown["engaged"], shown["reason"], shown["actor"], shown["id"]) == (
        True, "exchange outage", "alice", published["id"])
    assert shown["time"] == published["time"]

    # a risk gate (re)started on these topics holds the switch
    asyncio.run(bus.ensure_topics(all_topic_configs(topic_prefix, 3)))  # the gate's other topics
    assert asyncio.run(restored_kill_switch(bus, topic_prefix)) is True

    cleared = httpx.post(f"{base}/v1/kill-switch", json={"engaged": False,
                                                         "reason": "outage over"},
                         headers=write, timeout=30)
    assert cleared.status_code == 202, cleared.text
    assert cleared.json()["actor"] == "api"
    shown = httpx.get(f"{base}/v1/kill-switch", headers=write, timeout=30).json()
    assert (shown["engaged"], shown["reason"], shown["actor"]) == (False, "outage over", "api")
    assert asyncio.run(restored_kill_switch(bus, topic_prefix)) is False
    assert asyncio.run(bus.topic_ends(topic_prefix + topics.CONTROL)) == [2]

    # SIGTERM: a clean stop; the logs are JSON lines and hold no token
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, logs.read_text()
    text = logs.read_text()
    assert "kill switch ENGAGED" in text
    assert "refused POST /v1/kill-switch" in text
    assert WRITE not in text
    assert READ not in text
