"""Prometheus metrics: the bus host's sensor and the HTTP endpoint (/metrics, /healthz, /readyz).

The host reports through a Sensor interface (faust-style: pluggable, `NullSensor` for tests and
the embedded run), so a handler never imports prometheus-client and tests can plug in a
recording sensor. Label values are bounded: service, topic and partition, handler stage.
Series names and meanings are the contract in docs/observability.md.

Labelled series are created at zero before their first event (stages here, topics when the host
subscribes, partitions when they are assigned), so a `rate()` or an alert has data from the
start and never depends on `absent()`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics import MetricWrapperBase

from meridian_common.health import Answer, Health, LoopHeartbeat

log = logging.getLogger(__name__)

STAGES = ("handle", "act", "flush")  # where a handler exception can escape the host's loop
# per-record handler time: most records take tens of microseconds; a slow one is a problem
HANDLE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0)


class Sensor(Protocol):
    def subscribed(self, topics: Sequence[str]) -> None: ...
    def consumed(self, topic: str, n: int) -> None: ...
    def produced(self, topic: str, n: int) -> None: ...
    def dead_lettered(self, topic: str) -> None: ...
    def batch_seconds(self, seconds: float) -> None: ...
    def handle_seconds(self, topic: str, seconds: float) -> None: ...
    def handler_error(self, stage: str) -> None: ...
    def event_time(self, event_time_ms: int) -> None: ...
    def lag(self, lags: Mapping[tuple[str, int], int]) -> None: ...
    def rebalanced(self) -> None: ...
    def ready(self, ready: bool) -> None: ...


class NullSensor:
    """Records nothing: unit tests, the embedded run, one-off publishers."""

    def subscribed(self, topics: Sequence[str]) -> None:
        pass

    def consumed(self, topic: str, n: int) -> None:
        pass

    def produced(self, topic: str, n: int) -> None:
        pass

    def dead_lettered(self, topic: str) -> None:
        pass

    def batch_seconds(self, seconds: float) -> None:
        pass

    def handle_seconds(self, topic: str, seconds: float) -> None:
        pass

    def handler_error(self, stage: str) -> None:
        pass

    def event_time(self, event_time_ms: int) -> None:
        pass

    def lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        pass

    def rebalanced(self) -> None:
        pass

    def ready(self, ready: bool) -> None:
        pass


class PrometheusSensor:
    """Bus-level metrics of one service, in their own registry (several services share a process
    in embedded mode)."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.service = service
        r = self.registry
        self._in = Counter("meridian_messages_consumed_total", "Records consumed, per topic.",
                           ["service", "topic"], registry=r)
        self._out = Counter("meridian_messages_produced_total", "Records produced, per topic.",
                            ["service", "topic"], registry=r)
        self._dlq = Counter("meridian_dead_letters_total",
                            "Malformed records sent to the dead-letter topic, per source topic.",
                            ["service", "topic"], registry=r)
        self._batch = Histogram("meridian_batch_duration_seconds",
                                "Time to handle one polled batch, effects made durable.",
                                ["service"], registry=r,
                                buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self._handle = Histogram("meridian_handle_duration_seconds",
                                 "Handler time per record, per input topic.",
                                 ["service", "topic"], registry=r, buckets=HANDLE_BUCKETS)
        self._errors = Counter("meridian_handler_errors_total",
                               "Exceptions that escaped the handler (the service then stops), "
                               "per stage.", ["service", "stage"], registry=r)
        self._event_time = Gauge("meridian_event_time_seconds",
                                 "Event time the service has handled up to (unix seconds); "
                                 "time() minus this is the event-time lag.",
                                 ["service"], registry=r)
        self._lag = Gauge("meridian_consumer_lag_messages",
                          "End offset minus the group's position, per assigned partition.",
                          ["service", "topic", "partition"], registry=r)
        self._rebalances = Counter("meridian_rebalances_total",
                                   "Partition assignment changes after the first.",
                                   ["service"], registry=r)
        self._ready = Gauge("meridian_ready", "1 when /readyz would answer 200.", ["service"],
                            registry=r)
        # children resolved once: labels() per record would cost more than the observation
        self._handle_by_topic: dict[str, Any] = {}
        self._lagging: set[tuple[str, str]] = set()
        for stage in STAGES:
            self._errors.labels(service, stage)
        self._rebalances.labels(service)
        self._ready.labels(service).set(0)
        self._batch.labels(service)
        self._event_time.labels(service)

    def subscribed(self, topics: Sequence[str]) -> None:
        for topic in topics:
            self._in.labels(self.service, topic)
            self._dlq.labels(self.service, topic)
            self._handle_child(topic)

    def _handle_child(self, topic: str) -> Any:
        child = self._handle_by_topic.get(topic)
        if child is None:
            child = self._handle_by_topic[topic] = self._handle.labels(self.service, topic)
        return child

    def consumed(self, topic: str, n: int) -> None:
        self._in.labels(self.service, topic).inc(n)

    def produced(self, topic: str, n: int) -> None:
        self._out.labels(self.service, topic).inc(n)

    def dead_lettered(self, topic: str) -> None:
        self._dlq.labels(self.service, topic).inc()

    def batch_seconds(self, seconds: float) -> None:
        self._batch.labels(self.service).observe(seconds)

    def handle_seconds(self, topic: str, seconds: float) -> None:
        self._handle_child(topic).observe(seconds)

    def handler_error(self, stage: str) -> None:
        self._errors.labels(self.service, stage).inc()

    def event_time(self, event_time_ms: int) -> None:
        self._event_time.labels(self.service).set(event_time_ms / 1000)

    def lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set the lag of each assigned partition; partitions no longer assigned lose their
        series (another replica reports them now)."""
        current = {(topic, str(partition)) for topic, partition in lags}
        for topic, partition in self._lagging - current:
            self._lag.remove(self.service, topic, partition)
        for (topic, partition), n in lags.items():
            self._lag.labels(self.service, topic, str(partition)).set(n)
        self._lagging = current

    def rebalanced(self) -> None:
        self._rebalances.labels(self.service).inc()

    def ready(self, ready: bool) -> None:
        self._ready.labels(self.service).set(1 if ready else 0)


# -- the HTTP endpoint ----------------------------------------------------------------------------

class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a request in flight never holds the process at exit


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the JSON logs."""


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def app(registry: CollectorRegistry, health: Health) -> WsgiApp:
    """/healthz and /readyz answer from `health`; every other path is prometheus-client's own
    /metrics application (content negotiation and compression included)."""
    metrics_app = make_wsgi_app(registry)

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        answer: Answer | None = None
        if path == "/healthz":
            answer = health.live()
        elif path == "/readyz":
            answer = health.ready()
        if answer is None:
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        body = answer.body()
        status = "200 OK" if answer.status == 200 else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store")])
        return [body]

    return route


def serve(port: int, target: CollectorRegistry | PrometheusSensor,
          addr: str = "0.0.0.0",  # noqa: S104 - containers need the wildcard address
          *, health: Health | None = None, stall_s: float = 60.0) -> WSGIServer | None:
    """Expose /metrics, /healthz and /readyz on a port (0 disables it); returns the server
    (`shutdown()` stops it) or None.

    Without `health` (a process with no ServiceHost, e.g. ingest), the probes follow the
    calling event loop: ready once it runs, stalled when it has not turned for `stall_s`. Pass
    the sensor rather than its registry so the body names the service and `meridian_ready`
    follows the probes.
    """
    if not port:
        return None
    sensor = target if isinstance(target, PrometheusSensor) else None
    registry = sensor.registry if sensor is not None else target
    assert isinstance(registry, CollectorRegistry)
    if health is None:
        health = _loop_health(sensor, stall_s)
    server_class = _Server6 if ":" in addr else _Server
    server = make_server(addr, port, app(registry, health), server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
    log.info("metrics and health endpoints", extra={"port": port})
    return server


def _loop_health(sensor: PrometheusSensor | None, stall_s: float) -> Health:
    health = Health(sensor.service if sensor is not None else "", stall_s=stall_s,
                    on_ready=sensor.ready if sensor is not None else None)
    try:
        LoopHeartbeat(health, asyncio.get_running_loop())
    except RuntimeError:  # called outside any event loop: nothing to stall, ready at once
        health.stall_s = math.inf
        health.set_phase("running")
        if sensor is not None:
            sensor.ready(True)
    return health


class Children:
    """A labelled series' children by label values, looked up once. prometheus_client's
    `labels()` validates and takes a lock on every call (~7 µs): too slow for a series moved
    per record (a candle, a feature row), which then goes through this cache."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], MetricWrapperBase] = {}

    def __call__(self, *values: str) -> MetricWrapperBase:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
