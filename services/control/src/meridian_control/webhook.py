"""POST /v1/webhook/tradingview: an external alert (TradingView-style JSON) becomes a signal.v1
record, which the risk gate and execution then treat like any other signal.

Auth is the body's `secret` (TradingView cannot set headers), compared in constant time with
MERIDIAN_CONTROL_WEBHOOK_SECRET; this route takes no bearer token, and a bearer token does not
open it. Unset secret: the route answers 404 (disabled).

A request goes through, in this order (each step's answer is final; only an accepted alert
publishes anything):
1. disabled -> 404; body over MAX_BODY bytes -> 413; not a JSON object -> 422;
2. `secret` missing or wrong -> 401 (one answer, and the same work, whatever else the body says:
   nothing else is looked at before it);
3. the fields (`alert.TradingViewAlert`) -> 422 naming each bad field, never echoing a value;
4. a signal id already published (a retry, see `alert.signal_id`) -> 200 duplicate;
5. the (name, symbol) bucket, then the global one (`ratelimit`) -> 429 with Retry-After;
6. publish to signal.v1 keyed exchange:symbol and wait for the broker's ack -> 202 with the
   signal id; Kafka unreachable or too slow -> 503 (the id is not remembered, so the sender's
   retry publishes it; should the first copy have landed after all, the risk gate skips a
   signal id it has already decided).
Steps 4-6 run under one lock, so two copies of an alert arriving together publish once.

Logs and metrics carry the name, symbol, action and outcome, never the body or the secret.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from meridian.v1 import signal_pb2
from meridian_common import control, topics
from meridian_common.host import publish, topic_configs
from meridian_common.marketdata import timeframe_ms
from meridian_common.metrics import NullSensor
from meridian_control import alert
from meridian_control.context import BUS_DOWN, Context, Error, Responses
from meridian_control.ratelimit import RateLimiter

log = logging.getLogger(__name__)

PATH = "/v1/webhook/tradingview"
MAX_BODY = 16 * 1024


class WebhookAnswer(BaseModel):
    """What became of an alert that passed the secret and validation."""

    status: Literal["accepted", "duplicate"] = Field(
        description="accepted: published now (202); duplicate: this signal id was already "
                    "published, nothing sent again (200).")
    id: str = Field(description="The signal's id (meta.id), deterministic.")
    strategy: str = Field(description="webhook:<name>.")
    exchange: str
    symbol: str
    direction: str = Field(description="long, short or flat.")
    reference_price: str
    event_time_ms: int = Field(description="The close of the candle the signal belongs to.")
    time: str = Field(description="event_time_ms in UTC.")
    topic: str


class ValidationErrorBody(BaseModel):
    detail: str
    errors: list[dict[str, str]] = Field(description="{field, error} per bad field.")


RESPONSES: Responses = {
    200: {"model": WebhookAnswer, "description": "A retry of an alert already published."},
    401: {"model": Error, "description": "The body's secret is missing or wrong."},
    404: {"model": Error, "description": "The webhook is disabled (no secret configured)."},
    413: {"model": Error, "description": f"Body over {MAX_BODY} bytes."},
    422: {"model": ValidationErrorBody, "description": "Not a JSON object, or bad fields."},
    429: {"model": Error, "description": "Rate limited; see Retry-After (seconds)."},
    **BUS_DOWN,
}


@dataclass(slots=True)
class Webhook:
    """The route's state: rate limits and the ids published lately."""

    ctx: Context
    exchange: str
    partitions: int
    secret: bytes | None
    limiter: RateLimiter
    timeframe_ms: int
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    topic_ready: bool = False

    @classmethod
    def of(cls, ctx: Context, exchange: str, partitions: int) -> Webhook:
        s = ctx.settings
        secret = s.webhook_secret.get_secret_value().encode() if s.webhook_secret else None
        return cls(ctx, exchange, partitions, secret,
                   RateLimiter(s.webhook_rate_per_min, s.webhook_global_rate_per_min),
                   timeframe_ms(s.webhook_timeframe))

    def __repr__(self) -> str:
        return f"Webhook(enabled={self.secret is not None}, exchange={self.exchange!r})"

    # -- steps ---------------------------------------------------------------------------------

    def authorized(self, body: dict[str, Any]) -> bool:
        """Constant-time comparison of the body's secret (any type but a string fails)."""
        given = body.get("secret")
        presented = given.encode() if isinstance(given, str) else b""
        expected = self.secret or b""
        return hmac.compare_digest(presented, expected) and isinstance(given, str)

    def remembered(self, signal_id: str) -> bool:
        if signal_id in self.recent:
            self.recent.move_to_end(signal_id)
            return True
        return False

    def remember(self, signal_id: str) -> None:
        self.recent[signal_id] = None
        while len(self.recent) > self.ctx.settings.webhook_dedupe:
            self.recent.popitem(last=False)

    async def publish(self, signal: signal_pb2.Signal) -> None:
        """signal.v1 (created as the services create it when missing), acked by the broker."""
        bus, prefix = self.ctx.bus, self.ctx.prefix
        if not self.topic_ready:
            await bus.ensure_topics(topic_configs([topics.SIGNAL], prefix, self.partitions))
            self.topic_ready = True
        producer = bus.producer(low_latency=True)
        try:
            key = topics.market_key(signal.exchange, signal.symbol)
            await publish(producer, prefix, [(topics.SIGNAL, key, signal)], NullSensor())
            await producer.flush()
        finally:
            await producer.stop()


async def _read_body(request: Request) -> bytes:
    """At most MAX_BODY bytes, else 413 (read no further)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413,
                                f"body over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, its decimals kept exact (floats parsed as Decimal)."""
    try:
        body = json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise HTTPException(422,
                            "the body must be a JSON object (the alert's message, as JSON)")
    return body


def _answer(hook: Webhook, signal: signal_pb2.Signal,
            outcome: Literal["accepted", "duplicate"]) -> WebhookAnswer:
    return WebhookAnswer(
        status=outcome, id=signal.meta.id, strategy=signal.strategy, exchange=signal.exchange,
        symbol=signal.symbol, direction=alert.DIRECTION_NAMES[signal.direction],
        reference_price=signal.reference_price, event_time_ms=signal.meta.event_time_ms,
        time=control.utc(signal.meta.event_time_ms), topic=hook.ctx.prefix + topics.SIGNAL)


def install(app: FastAPI, ctx: Context, exchange: str, partitions: int) -> None:
    hook = Webhook.of(ctx, exchange, partitions)
    metrics = ctx.metrics

    def refuse(outcome: str, code: int, detail: str, name: str = "-",
               headers: dict[str, str] | None = None) -> HTTPException:
        metrics.webhook_alert(outcome)
        log.warning("webhook alert refused: %s", outcome,
                    extra={"outcome": outcome, "alert": name, "status": code})
        return HTTPException(code, detail, headers=headers)

    @app.post(PATH, response_model=WebhookAnswer, status_code=status.HTTP_202_ACCEPTED,
              tags=["webhook"], summary="An external alert (TradingView) as a signal",
              description="No bearer token: the body's `secret` is the auth. The alert becomes "
                          "a Signal on signal.v1 (strategy webhook:<name>, producer webhook), "
                          "answered once the broker acknowledged it; the risk gate decides it "
                          "like any other signal. See the schema TradingViewAlert.",
              responses=RESPONSES,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {
                      "$ref": "#/components/schemas/TradingViewAlert"}}}}})
    async def tradingview(request: Request, response: Response) -> WebhookAnswer:
        if hook.secret is None:
            raise refuse("disabled", status.HTTP_404_NOT_FOUND,
                         "webhook disabled: set MERIDIAN_CONTROL_WEBHOOK_SECRET to enable it")
        try:
            body = _json_object(await _read_body(request))
        except HTTPException as exc:
            raise refuse("invalid", exc.status_code, str(exc.detail)) from None
        secret = hook.secret.decode()
        name = alert.loggable_name(body, secret)
        if not hook.authorized(body):
            raise refuse("unauthorized", status.HTTP_401_UNAUTHORIZED,
                         "missing or wrong secret", name)
        now = ctx.clock.now_ms()
        given, errors = _validate(body, alert.Rules(ctx.settings.webhook_symbols, now), secret)
        if given is None:
            metrics.webhook_alert("invalid")
            log.warning("webhook alert refused: invalid", extra={
                "outcome": "invalid", "alert": name, "status": 422,
                "fields": alert.known_fields(errors)})
            return JSONResponse(  # type: ignore[return-value]
                {"detail": alert.describe(errors), "errors": errors}, status_code=422)
        signal = alert.to_signal(given, hook.exchange,
                                 alert.event_time_ms(given, now, hook.timeframe_ms))
        fields = {"alert": given.name, "symbol": given.symbol, "action": given.action,
                  "id": signal.meta.id, "event_time_ms": signal.meta.event_time_ms}
        async with hook.lock:
            if hook.remembered(signal.meta.id):
                metrics.webhook_alert("duplicate")
                log.info("webhook alert: duplicate", extra={"outcome": "duplicate", **fields})
                response.status_code = status.HTTP_200_OK
                return _answer(hook, signal, "duplicate")
            refused = hook.limiter.take((given.name, given.symbol), now)
            if refused is not None:
                raise refuse("rate_limited", status.HTTP_429_TOO_MANY_REQUESTS,
                             _limit_detail(ctx, given, refused.scope), given.name,
                             {"Retry-After": str(refused.retry_after_s)})
            try:
                await ctx.on_bus(hook.publish(signal),
                                 on_timeout="; the signal may or may not have been published "
                                            "(a retry with the same alert is safe)")
            except HTTPException:
                metrics.webhook_alert("unavailable")
                raise
            hook.remember(signal.meta.id)
        metrics.webhook_alert("accepted")
        log.info("webhook alert: accepted", extra={"outcome": "accepted", **fields})
        return _answer(hook, signal, "accepted")

    app.state.webhook = hook


def _validate(body: dict[str, Any], rules: alert.Rules, secret: str
              ) -> tuple[alert.TradingViewAlert | None, list[dict[str, str]]]:
    """The alert, or None and the {field, error} list (the secret pasted in another field is
    an error too, so it never reaches a signal, a log line or an answer)."""
    errors = alert.secret_elsewhere(body, secret)
    if errors:
        return None, errors
    try:
        return alert.TradingViewAlert.model_validate(body, context={"rules": rules}), []
    except ValidationError as exc:
        return None, alert.field_errors(exc.errors(), secret)


def _limit_detail(ctx: Context, given: alert.TradingViewAlert, scope: str) -> str:
    s = ctx.settings
    if scope == "key":
        return (f"rate limited: at most {s.webhook_rate_per_min} alerts per minute for "
                f"{given.name!r} on {given.symbol}")
    return f"rate limited: at most {s.webhook_global_rate_per_min} alerts per minute in all"


def schema_components() -> dict[str, Any]:
    """TradingViewAlert and what it refers to, for the OpenAPI document (the route reads its
    body itself, so FastAPI does not list the model)."""
    schema = alert.TradingViewAlert.model_json_schema(
        ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "TradingViewAlert": schema}
