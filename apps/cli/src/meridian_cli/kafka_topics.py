"""Broker checks and clean-up for runs that own a topic prefix (backtests)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from meridian_common.config import ConfigError

log = logging.getLogger(__name__)


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        return list(await admin.list_topics())
    finally:
        await admin.close()


def require_broker(bootstrap: str) -> None:
    """Fail before anything starts when no broker answers (a clear error, not a hung run)."""
    try:
        asyncio.run(asyncio.wait_for(_topics(bootstrap), 15))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise ConfigError(
            f"no Kafka broker answers at {bootstrap} ({type(exc).__name__}); start one "
            "(make infra-up) and set MERIDIAN_KAFKA_BOOTSTRAP") from None


async def delete_prefixed(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic named `prefix`*; a failure is logged, never raised (the run's result
    is already in the database)."""
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        await admin.start()
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    except KafkaError as exc:
        log.warning("could not delete the run's topics %s*: %s", prefix, exc)
        return []
    finally:
        await admin.close()
