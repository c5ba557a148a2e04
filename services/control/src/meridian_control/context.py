"""What every route module shares: the injected bus and store, the clock, the topic names, and
the error bodies the routes document.

Why one object: the modules register their routes with `install(app, ctx)`, so a route's
dependencies are explicit arguments rather than globals, and the tests build the same app over
an in-process bus and a fake store.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import HTTPException, status
from pydantic import BaseModel, Field

from meridian_common import control, topics
from meridian_common.bus.base import Bus
from meridian_common.clock import Clock
from meridian_control.settings import ControlSettings
from meridian_control.store import DatabaseUnavailable, Store
from meridian_control.telemetry import ControlMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

PRODUCER = "control"


class Error(BaseModel):
    detail: str = Field(description="What went wrong, in one line.")


Responses = dict[int | str, dict[str, Any]]

UNAUTHORIZED: Responses = {
    401: {"model": Error, "description": "No bearer token, or not a configured one."}}
FORBIDDEN: Responses = {403: {"model": Error, "description": "The read-only token."}}
BUS_DOWN: Responses = {
    503: {"model": Error, "description": "Kafka is unreachable or did not answer in time."}}
DB_DOWN: Responses = {
    503: {"model": Error, "description": "The database is not configured, unreachable or did "
                                         "not answer in time (one line, no URL)."}}
NOT_FOUND: Responses = {404: {"model": Error, "description": "No such name or version."}}


@dataclass(frozen=True, slots=True)
class Context:
    settings: ControlSettings
    bus: Bus
    prefix: str
    bootstrap: str  # for messages: the Kafka bootstrap, or "the in-process bus"
    clock: Clock
    store: Store | None  # None: MERIDIAN_DATABASE_URL is not set
    # the app's own series (GET /metrics); routes count their domain events here
    metrics: ControlMetrics = field(default_factory=ControlMetrics)

    @property
    def control_topic(self) -> str:
        return self.prefix + topics.CONTROL

    def db(self) -> Store:
        """The store, or DatabaseUnavailable (503) when no database is configured: the kill
        switch must keep working without one, so its absence is not a start-up error."""
        if self.store is None:
            raise DatabaseUnavailable("no database configured: set MERIDIAN_DATABASE_URL")
        return self.store

    async def on_bus(self, call: Awaitable[T], on_timeout: str = "") -> T:
        """Await a conversation with Kafka; a failure is 503 with one line."""
        try:
            return await control.kafka_call(call, self.bootstrap,
                                            float(self.settings.kafka_timeout_s),
                                            on_timeout=on_timeout)
        except control.ControlError as exc:
            log.error("Kafka unavailable: %s", exc)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
