"""The /metrics endpoint serves the host's sensor over HTTP in the Prometheus text format."""

from __future__ import annotations

import socket
import urllib.request

from meridian_common.metrics import PrometheusSensor, serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_endpoint_serves_recorded_values() -> None:
    sensor = PrometheusSensor("risk")
    sensor.consumed("signal.v1", 3)
    sensor.produced("order.approved.v1", 2)
    sensor.dead_lettered("signal.v1")
    sensor.batch_seconds(0.002)
    sensor.event_time(1_609_459_200_000)
    port = _free_port()
    serve(port, sensor.registry, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'meridian_messages_consumed_total{service="risk",topic="signal.v1"} 3.0' in body
    assert 'meridian_messages_produced_total{service="risk",topic="order.approved.v1"} 2.0' in body
    assert 'meridian_dead_letters_total{service="risk",topic="signal.v1"} 1.0' in body
    assert 'meridian_batch_duration_seconds_count{service="risk"} 1.0' in body
    assert 'meridian_event_time_seconds{service="risk"} 1.6094592e+09' in body


def test_port_zero_serves_nothing() -> None:
    sensor = PrometheusSensor("ledger")
    serve(0, sensor.registry)  # must not bind anything or raise
