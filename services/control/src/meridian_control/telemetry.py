"""GET /metrics: the control plane's own Prometheus series (docs/observability.md, "control
plane"), served on its API port with no token.

Why a middleware keyed on the matched route template: labels must stay bounded whatever a client
sends. The raw path would give every probe of `/v1/nope/<random>` (or a path parameter such as a
model name) its own series, so the label is the template of the route that answered
(`/v1/models/{name}/promote`), `unmatched` when none did, and an HTTP method outside the
standard few is counted as `other`. The series live in the app's own `CollectorRegistry`, so
two apps in one process (the tests) never share or collide on a series.

/metrics exposes counts and timings only: no header, query string or body is ever a label, so
no token can appear in it.
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PATH = "/metrics"
UNMATCHED = "unmatched"
OTHER_METHOD = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ACTIONS: tuple[Literal["set", "clear"], ...] = ("set", "clear")
# What became of each webhook alert (POST /v1/webhook/tradingview); see `webhook`.
WEBHOOK_OUTCOMES = ("accepted", "duplicate", "unauthorized", "invalid", "rate_limited",
                    "unavailable", "disabled")
# Request latencies of an API whose slowest answers wait on Kafka or PostgreSQL (timeouts of
# seconds), so the buckets reach past the default 10 s Kafka timeout.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ControlMetrics:
    """The control series, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("meridian_control_requests_total", "HTTP requests answered.",
                                ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram("meridian_control_request_duration_seconds",
                                  "Time to answer an HTTP request.", ["route", "method"],
                                  registry=self.registry, buckets=BUCKETS)
        self.kill_switch = Counter("meridian_control_kill_switch_commands_total",
                                   "Kill-switch commands published.", ["action"],
                                   registry=self.registry)
        # Known label values start at 0, so rate() has data before the first command.
        self.webhook = Counter("meridian_control_webhook_alerts_total",
                               "Webhook alerts answered, by outcome.", ["outcome"],
                               registry=self.registry)
        for action in ACTIONS:
            self.kill_switch.labels(action)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook.labels(outcome)

    def webhook_alert(self, outcome: str) -> None:
        if outcome not in WEBHOOK_OUTCOMES:  # a bounded label set, whatever a caller passes
            raise ValueError(f"unknown webhook outcome {outcome!r}")
        self.webhook.labels(outcome).inc()

    def kill_switch_command(self, engaged: bool) -> None:
        self.kill_switch.labels("set" if engaged else "clear").inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Scope) -> str:
    """The template of the route the router matched (it stores it in the scope), else
    `unmatched`: a 404 for an unknown path adds no label value."""
    route = scope.get("route")
    if isinstance(route, BaseRoute):
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
    return UNMATCHED


def method_label(scope: Scope) -> str:
    method = str(scope.get("method", "")).upper()
    return method if method in METHODS else OTHER_METHOD


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware), so it neither buffers responses nor touches the
    WebSocket, which is not an HTTP request here."""

    def __init__(self, app: ASGIApp, metrics: ControlMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response started: the server answers 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(route_label(scope), method_label(scope), status,
                                 time.perf_counter() - start)


def install(app: FastAPI, metrics: ControlMetrics) -> None:
    """The middleware and the route. No token: Prometheus scrapes it, and it holds no secret."""
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get(PATH, include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
