"""Prometheus metrics: the bus host's sensor and the /metrics endpoint helper.

The host reports through a Sensor interface, so a handler never imports prometheus-client and
tests can plug in a recording sensor. Label values are bounded (service and topic names only).
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Sensor(Protocol):
    def consumed(self, topic: str, n: int) -> None: ...
    def produced(self, topic: str, n: int) -> None: ...
    def dead_lettered(self, topic: str) -> None: ...
    def batch_seconds(self, seconds: float) -> None: ...
    def event_time(self, event_time_ms: int) -> None: ...


class NullSensor:
    def consumed(self, topic: str, n: int) -> None:
        pass

    def produced(self, topic: str, n: int) -> None:
        pass

    def dead_lettered(self, topic: str) -> None:
        pass

    def batch_seconds(self, seconds: float) -> None:
        pass

    def event_time(self, event_time_ms: int) -> None:
        pass


class PrometheusSensor:
    """Bus-level metrics of one service, in their own registry (several services share a process
    in embedded mode)."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.service = service
        self._in = Counter("meridian_messages_consumed_total", "Records consumed, per topic.",
                           ["service", "topic"], registry=self.registry)
        self._out = Counter("meridian_messages_produced_total", "Records produced, per topic.",
                            ["service", "topic"], registry=self.registry)
        self._dlq = Counter("meridian_dead_letters_total",
                            "Malformed records sent to the dead-letter topic, per source topic.",
                            ["service", "topic"], registry=self.registry)
        self._batch = Histogram("meridian_batch_duration_seconds",
                                "Time to handle one polled batch, effects made durable.",
                                ["service"], registry=self.registry,
                                buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self._event_time = Gauge("meridian_event_time_seconds",
                                 "Event time the service has handled up to (unix seconds); "
                                 "time() minus this is the event-time lag.",
                                 ["service"], registry=self.registry)

    def consumed(self, topic: str, n: int) -> None:
        self._in.labels(self.service, topic).inc(n)

    def produced(self, topic: str, n: int) -> None:
        self._out.labels(self.service, topic).inc(n)

    def dead_lettered(self, topic: str) -> None:
        self._dlq.labels(self.service, topic).inc()

    def batch_seconds(self, seconds: float) -> None:
        self._batch.labels(self.service).observe(seconds)

    def event_time(self, event_time_ms: int) -> None:
        self._event_time.labels(self.service).set(event_time_ms / 1000)


def serve(port: int, registry: CollectorRegistry, addr: str = "0.0.0.0") -> None:  # noqa: S104
    """Expose /metrics on a port (0 disables it); containers need the wildcard address."""
    if port:
        start_http_server(port, addr=addr, registry=registry)
