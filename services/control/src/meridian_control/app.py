"""The control plane's HTTP API (FastAPI): the operator's commands on control.v1, reads of the
ledger's and the risk gate's tables, promotions, a live portfolio stream and a page.

Routes (auth: R = the read or the write token, W = the write token only, see `auth`; S = the
shared secret in the body, MERIDIAN_CONTROL_WEBHOOK_SECRET, and no bearer token):
    GET  /                                  the page (no token: it asks for one)    `page`
    GET  /health                            liveness, no token
    GET  /metrics                           Prometheus text format, no token        `telemetry`
    GET  /v1/kill-switch               R    the kill switch, the breaker level      `killswitch`
    POST /v1/kill-switch               W    engage or clear it -> 202
    GET  /v1/positions                 R    from PostgreSQL (`store`)               `reads`
    GET  /v1/fills                     R
    GET  /v1/equity                    R
    GET  /v1/decisions                 R
    GET  /v1/orders                    R    from order.event.v1                     `orders`
    GET  /v1/status                    R    services, switch, halts, promotions     `status`
    POST /v1/models/{name}/promote     W    the table, then control.v1 -> 202       `promotion`
    POST /v1/configs/{strategy}/promote W
    POST /v1/webhook/tradingview       S    an alert -> signal.v1 -> 202            `webhook`
    WS   /v1/ws/portfolio              R    positions and equity on change          `ws`

The app is given its `Bus` (Kafka in the service, the in-process bus in tests) and may be given
a `Store` (tests); otherwise it opens MERIDIAN_DATABASE_URL when it starts and closes it when it
stops. Without a database the kill switch still works and the database routes answer 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from meridian_common import config, venues
from meridian_common.bus.base import Bus
from meridian_common.clock import Clock, WallClock
from meridian_control import (
    killswitch,
    page,
    promotion,
    reads,
    status,
    telemetry,
    webhook,
    ws,
)
from meridian_control.auth import Tokens
from meridian_control.context import Context
from meridian_control.schemas import PortfolioMessage
from meridian_control.settings import ControlSettings
from meridian_control.store import DatabaseUnavailable, SqlStore, Store

VERSION = "0.2.0"

DESCRIPTION = f"""Operator API of Meridian: the kill switch and promotions on control.v1
(compacted, read by every service), and reads of the ledger's and the risk gate's tables.
While the kill switch is engaged the risk gate passes only reduce-only orders.

Every /v1 route needs `Authorization: Bearer <token>`: MERIDIAN_CONTROL_TOKEN for all of them,
MERIDIAN_CONTROL_READ_TOKEN for the GET routes and the WebSocket only; except
`{webhook.PATH}`, whose auth is the field `secret` of its body (TradingView alerts cannot set
headers): MERIDIAN_CONTROL_WEBHOOK_SECRET (unset: the route answers 404).

WebSocket `{ws.PATH}` (not an OpenAPI path): authenticate with the query parameter
`?token=<token>` (refused at the handshake with 403 when wrong) or, without it, with the first
message `{{"token": "<token>"}}` within 10 s (a wrong or missing one closes with code 1008).
It then sends a `PortfolioMessage` (schema below) at once and whenever the positions or an
account's latest equity change (the database is polled every MERIDIAN_CONTROL_PUSH_S)."""


class Health(BaseModel):
    status: Literal["ok"] = "ok"


def _store(common: config.CommonSettings, settings: ControlSettings) -> Store | None:
    if common.database_url is None:
        return None
    return SqlStore(common.database_url.get_secret_value(), float(settings.db_timeout_s))


def create_app(settings: ControlSettings, common: config.CommonSettings, bus: Bus, *,
               clock: Clock | None = None, store: Store | None = None) -> FastAPI:
    """The API over `bus` (topics under `common.topic_prefix`) and `store` (default: one over
    `common.database_url`, or none when it is not set)."""
    ctx = Context(settings=settings, bus=bus, prefix=common.topic_prefix,
                  bootstrap=common.kafka_bootstrap if common.bus == "kafka"
                  else "the in-process bus",
                  clock=clock or WallClock(),
                  store=store if store is not None else _store(common, settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if ctx.store is not None:
            await ctx.store.start()
        try:
            yield
        finally:
            if ctx.store is not None:
                await ctx.store.close()

    app = FastAPI(title="Meridian control plane", version=VERSION, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.tokens = Tokens(settings.token, settings.read_token)
    app.state.ctx = ctx

    @app.exception_handler(DatabaseUnavailable)
    async def database_unavailable(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.get("/health", response_model=Health, tags=["health"], summary="Liveness (no token)")
    async def health() -> Health:
        return Health()

    killswitch.install(app, ctx)
    reads.install(app, ctx)
    status.install(app, ctx)
    promotion.install(app, ctx)
    webhook.install(app, ctx, venues.venue(common.exchange, settings.webhook_market_type),
                    common.partitions)
    ws.install(app, ctx)
    page.install(app)
    telemetry.install(app, ctx.metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the WebSocket's message schema (OpenAPI has no WebSocket paths,
    so the message is documented as a component and in the description)."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        message = PortfolioMessage.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization")
        for name, schema in message.pop("$defs", {}).items():
            schemas.setdefault(name, schema)
        schemas["PortfolioMessage"] = message
        for name, schema in webhook.schema_components().items():
            schemas.setdefault(name, schema)
        app.openapi_schema = doc
    return app.openapi_schema
