"""Structured JSON logs on stderr, one object per line.

Secrets never reach a log: SecretStr values print as '**********', and URLs with a password are
masked by `redact_url` before they are logged.

A line written while a span is current (a handler handling a record with tracing on) carries
`trace_id` and `span_id` (hex, as trace back-ends show them), so a trace leads to its log lines
and a log line to its trace.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson
from opentelemetry import trace

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")


def redact_url(url: str) -> str:
    """postgresql://u:secret@h/db -> postgresql://u:***@h/db."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": redact_url(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            payload["trace_id"] = format(span.trace_id, "032x")
            payload["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            payload["exc"] = redact_url(self.formatException(record.exc_info))
        return orjson.dumps(payload, default=str).decode()


def setup(service: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON; idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_meridian", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler._meridian = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
