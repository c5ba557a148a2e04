"""W3C trace context in record headers, and the spans the host starts around records.

One trace follows a candle through every service because each record carries the trace
context of what caused it in a `traceparent` header (OpenTelemetry's configured propagators,
W3C TraceContext and Baggage by default):
- consuming: the host starts a CONSUMER span `<topic> process` per record, child of the
  header's context (a record without one starts a new trace), current while the handler
  handles the record; its context is the record's `Inbound.trace_context`;
- producing: each output carries the context it was emitted in (the consumer span of the
  record being handled, or an earlier input's via `tracing.caused_by`), injected as is: no
  span of its own, the consumer span is the work that produced it. An output emitted with no
  span around it (ingest's candles, a handler's `act`) gets a PRODUCER span `<topic> publish`,
  the root of a new trace.

Attributes follow OpenTelemetry's messaging semantic conventions (current names, 1.27 on: the
partition as `messaging.destination.partition.id`, the offset as `messaging.kafka.offset`), plus
`meridian.message.id` / `meridian.cause.id` (the message's Meta) so a span can be found by the
message it handled. messaging.system is `kafka` on the in-process bus too: it keeps Kafka's
semantics, and the spans then read the same in both runs.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from meridian_common.bus.base import Headers, Record

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from meridian_common.handler import Inbound

TRACEPARENT = "traceparent"
SYSTEM = "kafka"


class _HeaderGetter(Getter[Headers]):
    """Reads a propagator's fields from record headers ((name, bytes) pairs)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        for name, value in carrier:
            if name == key:
                return [value.decode("latin-1")]
        return None

    def keys(self, carrier: Headers) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _HeaderGetter()


def extract(headers: Headers) -> Context:
    """The context a record's headers carry (empty when none): the parent of its span."""
    return propagate.extract(headers, context=Context(), getter=_GETTER)


def inject(context: Context) -> Headers:
    """Headers carrying `context` (traceparent, and tracestate / baggage when present)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return tuple((name, value.encode("latin-1")) for name, value in carrier.items())


def has_span(context: Context) -> bool:
    return trace.get_current_span(context).get_span_context().is_valid


# -- consuming ------------------------------------------------------------------------------------

class Scope(Protocol):
    """What the host does with a record's trace while handling it."""

    @property
    def context(self) -> Context | None: ...

    def describe(self, inbound: Inbound) -> None: ...

    def reject(self, reason: str) -> None: ...


class Consuming:
    """A CONSUMER span for one record, current between enter and exit (a context manager)."""

    __slots__ = ("_span", "_token", "context")

    def __init__(self, tracer: Tracer, logical: str, record: Record, group: str) -> None:
        parent = extract(record.headers)
        attributes: dict[str, str | int] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.consumer.group.name": group,
        }
        if record.key is not None:
            attributes["messaging.kafka.message.key"] = record.key.decode("utf-8", "replace")
        self._span: Span = tracer.start_span(f"{logical} process", context=parent,
                                             kind=SpanKind.CONSUMER, attributes=attributes)
        self.context: Context = trace.set_span_in_context(self._span, parent)

    def __enter__(self) -> Consuming:
        self._token = otel_context.attach(self.context)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        otel_context.detach(self._token)
        if exc is not None:  # the handler crashed the service: the span says why
            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self._span.end()

    def describe(self, inbound: Inbound) -> None:
        """Name the message on the span: its Meta id and cause, or that it is a Watermark."""
        if not self._span.is_recording():
            return
        if inbound.is_watermark:
            self._span.set_attribute("meridian.watermark", True)
            return
        meta = inbound.message.meta  # type: ignore[attr-defined]
        self._span.set_attribute("meridian.message.id", meta.id)
        if meta.cause_id:
            self._span.set_attribute("meridian.cause.id", meta.cause_id)

    def reject(self, reason: str) -> None:
        """The record goes to the dead-letter topic."""
        self._span.set_status(Status(StatusCode.ERROR, reason))
        self._span.set_attribute("meridian.dead_letter.reason", reason)


class Remote:
    """A record's trace without a span (rebuilding state): its context is the producer's, so
    an output the rebuilt state emits later (a fill of an order consumed before a restart)
    still continues the order's trace, as a child of the span that produced the order."""

    __slots__ = ("context",)

    def __init__(self, record: Record) -> None:
        parent = extract(record.headers)
        self.context: Context | None = parent if has_span(parent) else None

    def describe(self, inbound: Inbound) -> None:
        return None

    def reject(self, reason: str) -> None:
        return None


# -- producing ------------------------------------------------------------------------------------

class Stamper:
    """Trace headers for outgoing records, one publish call at a time.

    Consecutive outputs of one record share one context object, so its headers are built once.
    """

    __slots__ = ("_context", "_headers", "_prefix", "_tracer")

    def __init__(self, tracer: Tracer, prefix: str) -> None:
        self._tracer = tracer
        self._prefix = prefix
        self._context: Context | None = None
        self._headers: Headers = ()

    def headers(self, topic: str, key: str, message: Message, cause: Context | None) -> Headers:
        """The trace headers of one output; `cause` is the context it was emitted in (None:
        the current one, for callers of `host.publish` outside a host)."""
        context = otel_context.get_current() if cause is None else cause
        if context is self._context:
            return self._headers
        if not has_span(context):
            return self._root(topic, key, message, context)
        self._context, self._headers = context, inject(context)
        return self._headers

    def _root(self, topic: str, key: str, message: Message, context: Context) -> Headers:
        """A new trace: a PRODUCER span for this one record (ingest's candles start here)."""
        attributes: dict[str, str] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": self._prefix + topic,
            "messaging.kafka.message.key": key,
        }
        meta = getattr(message, "meta", None)
        if meta is not None:
            attributes["meridian.message.id"] = meta.id
        span = self._tracer.start_span(f"{topic} publish", context=context,
                                       kind=SpanKind.PRODUCER, attributes=attributes)
        try:
            return inject(trace.set_span_in_context(span, context))
        finally:
            span.end()
