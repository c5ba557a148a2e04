"""`python -m meridian_control`: the control plane's HTTP API over Kafka, served by uvicorn.

Settings: MERIDIAN_CONTROL_* (`ControlSettings`; MERIDIAN_CONTROL_TOKEN is required) and the
common MERIDIAN_BUS, MERIDIAN_KAFKA_BOOTSTRAP, MERIDIAN_TOPIC_PREFIX and MERIDIAN_DATABASE_URL.
Before it listens, it checks that Kafka answers (and creates control.v1 as the services do when
missing). A bad or missing setting, or an unreachable Kafka, is one line on stderr and exit code
2. The database is not checked at start: the kill switch must be usable while PostgreSQL is
down, so the routes that read it answer 503 instead. SIGTERM stops it gracefully (requests in
flight finish) with exit code 0.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import sys
from types import FrameType
from typing import NoReturn

from meridian_common import config, control, logs
from meridian_common.bus.kafka import KafkaBus
from meridian_control.app import create_app
from meridian_control.auth import redact_query_token
from meridian_control.settings import ControlSettings

NAME = "meridian-control"


def _fail(message: str) -> NoReturn:
    print(f"{NAME}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class _PlainMessages(logging.Filter):
    """Drops uvicorn's ANSI-coloured copy of a message from the JSON line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


class _RedactTokens(logging.Filter):
    """uvicorn logs a WebSocket's path with its query string, where `?token=` may be."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query_token(a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_query_token(record.msg)
        return True


def _websocket_library() -> str | None:
    """The WebSocket implementation uvicorn will use (it needs one to serve /v1/ws/portfolio)."""
    for name in ("websockets", "wsproto"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    try:
        common = config.load(config.CommonSettings)
        settings = config.load(ControlSettings)
    except config.ConfigError as exc:
        _fail(str(exc))
    if common.bus != "kafka":
        _fail(f"MERIDIAN_BUS={common.bus}: the in-process bus lives inside one process, so there "
              "is no control topic to serve; set MERIDIAN_BUS=kafka and MERIDIAN_KAFKA_BOOTSTRAP")
    logs.setup("control", common.log_level)
    bus = KafkaBus(common.kafka_bootstrap, client_id=NAME)

    # aiokafka logs every failed connection attempt; the check reports the failure itself.
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        asyncio.run(control.kafka_call(control.ensure_topic(bus, common.topic_prefix),
                                       common.kafka_bootstrap, settings.kafka_timeout_s,
                                       hint="Set MERIDIAN_KAFKA_BOOTSTRAP"))
    except control.ControlError as exc:
        _fail(str(exc))
    finally:
        kafka_log.setLevel(level)

    import uvicorn

    app = create_app(settings, common, bus)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_PlainMessages())
        logging.getLogger(name).addFilter(_RedactTokens())
    log = logging.getLogger(__name__)
    websocket = _websocket_library()
    log.info("control plane starting", extra={
        "host": settings.host, "port": settings.port, "bootstrap": common.kafka_bootstrap,
        "topic_prefix": common.topic_prefix, "read_only_token": settings.read_token is not None,
        "database": common.database_url is not None, "websocket": websocket})
    if common.database_url is None:
        log.warning("MERIDIAN_DATABASE_URL is not set: the kill switch works, the routes that "
                    "read the ledger answer 503")
    if websocket is None:
        log.warning("no WebSocket library (websockets or wsproto) is installed: uvicorn refuses "
                    "/v1/ws/portfolio, and the page falls back to polling")
    # uvicorn stops gracefully on SIGTERM/SIGINT, restores the handlers it found and raises the
    # signal again: with these, a requested stop exits 0, as the other services do (and a signal
    # before uvicorn listens exits at once).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    # log_config=None: uvicorn's loggers go through the root logger, as JSON lines.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                server_header=False)


if __name__ == "__main__":
    main()
