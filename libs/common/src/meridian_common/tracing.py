"""OpenTelemetry tracing: set up from the standard OTEL_* variables, off unless they ask for it.

Why off by default: a replay pushes tens of thousands of records a second through every service,
and a span per record costs far more than handling most records does. So when nothing is
configured no tracer exists, the host starts no span, reads no trace header and writes none;
the only cost is a `None` check per record and per emitted message. (A service with tracing off
therefore also ends the trace: its outputs carry no traceparent, and traced services downstream
start new traces. Passing an incoming traceparent through would need the per-record header work
the default avoids.)

Tracing is on when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`, or any installed
`opentelemetry_traces_exporter` entry point; comma-separated), or, with OTEL_TRACES_EXPORTER
unset, when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (`otlp`).
OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none keep it off. Everything else is the SDK's
own reading of the environment, not repeated here: the sampler (OTEL_TRACES_SAMPLER, _ARG), the
exporter's endpoint, headers, timeout and compression (OTEL_EXPORTER_OTLP_*), the batching
(OTEL_BSP_*), span limits, the propagators (OTEL_PROPAGATORS) and the resource
(OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME; the service name defaults to meridian-<service>).
`otlp` is OTLP over HTTP/protobuf, the exporter installed; OTEL_EXPORTER_OTLP_PROTOCOL=grpc is
refused at start-up rather than silently exporting nothing.

The provider is this module's, not the OpenTelemetry global one: tests install and remove
providers freely (the global can be set once per process), and nothing else here is instrumented.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from importlib.metadata import entry_points
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context

from meridian_common.config import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer, TracerProvider

SCOPE = "meridian_common"  # the instrumentation scope of every span Meridian starts
_EXPORTERS = "opentelemetry_traces_exporter"  # entry-point group the SDK loads exporters from
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_NOTHING: AbstractContextManager[None] = nullcontext()


class _State:
    provider: TracerProvider | None = None
    tracer: Tracer | None = None


_state = _State()


# -- set-up ---------------------------------------------------------------------------------------

def exporter_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The trace exporters the environment asks for; [] means tracing stays off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or \
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return [n for n in names if n.lower() != "none"]


def _exporter_class(name: str, environ: Mapping[str, str]) -> type[SpanExporter]:
    """The exporter an OTEL_TRACES_EXPORTER name stands for, through the SDK's entry points."""
    entry = name
    if name == "otlp":
        protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
        if protocol not in _OTLP_BY_PROTOCOL:
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not an OTLP "
                              "protocol (http/protobuf)")
        entry = _OTLP_BY_PROTOCOL[protocol]
    found = entry_points(group=_EXPORTERS, name=entry)
    if not found:
        known = sorted({e.name for e in entry_points(group=_EXPORTERS)} | {"otlp", "none"})
        raise ConfigError(f"OTEL_TRACES_EXPORTER: exporter {name!r} ({entry}) is not installed "
                          f"(installed: {', '.join(known)})")
    return next(iter(found)).load()  # type: ignore[no-any-return]


def configure(service: str) -> TracerProvider | None:
    """Install a provider as the environment describes (see the module docstring), or none.

    Called once at a process's start (`meridian_common.service.main`, ingest); raises
    ConfigError naming the variable when the configuration cannot work.
    """
    names = exporter_names()
    if not names:
        install(None)
        return None
    # Imported here: a process with tracing off never loads the SDK.
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [_exporter_class(name, os.environ) for name in names]
    # The default name, then the environment's OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME
    # over it (Resource.create alone would let the default win).
    resource = Resource.create({SERVICE_NAME: f"meridian-{service}"}).merge(
        OTELResourceDetector().detect())
    provider = SdkTracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    install(provider)
    return provider


def install(provider: TracerProvider | None) -> None:
    """Trace with `provider` from now on (None: tracing off). Tests install an SDK provider with
    an in-memory exporter; hosts read the tracer when they start running."""
    _state.provider = provider
    _state.tracer = provider.get_tracer(SCOPE) if provider is not None else None


def tracer() -> Tracer | None:
    """The tracer spans are started with, or None when tracing is off."""
    return _state.tracer


def shutdown() -> None:
    """Export what is buffered and turn tracing off (at a process's end)."""
    provider = _state.provider
    install(None)
    stop = getattr(provider, "shutdown", None)
    if stop is not None:
        stop()


# -- for handlers ---------------------------------------------------------------------------------

class _Current(AbstractContextManager[None]):
    __slots__ = ("_context", "_token")

    def __init__(self, context: Context) -> None:
        self._context = context

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._context)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        otel_context.detach(self._token)


def caused_by(context: Context | None) -> AbstractContextManager[None]:
    """Emit what the block emits as a continuation of `context`'s trace, not of the record
    being handled: for outputs an earlier input caused (a fill of an order that arrived
    before the candle filling it; a row that waited for another input). `context` is the
    earlier input's `Inbound.trace_context`; None (tracing off, or lost in a restart) keeps the
    current record's trace."""
    return _NOTHING if context is None else _Current(context)
