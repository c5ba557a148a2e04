"""The control plane's HTTP API (FastAPI): the kill switch on control.v1.

Routes:
    GET  /health           liveness, no token
    GET  /v1/kill-switch   the latest kill-switch command and the risk gate's breaker level
                           (read or write token)
    POST /v1/kill-switch   engage or clear the kill switch (write token) -> 202 with what was
                           published

Commands are built, published and read by `meridian_common.control`, the same code as
`meridian control`. The app is given its `Bus`: Kafka in the service, the in-process bus in tests.

Auth: `Authorization: Bearer <token>`, compared in constant time with `secrets.compare_digest`
against MERIDIAN_CONTROL_TOKEN (every route) and MERIDIAN_CONTROL_READ_TOKEN (GET routes only).
No token or a wrong one: 401; the read-only token on a route that changes state: 403. Tokens are
never logged, echoed or shown in a repr.
"""

from __future__ import annotations

import enum
import logging
import secrets
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, field_validator

from meridian.v1 import control_pb2
from meridian_common import config, control, topics
from meridian_common.bus.base import Bus
from meridian_common.clock import Clock, WallClock
from meridian_control.settings import ControlSettings

log = logging.getLogger(__name__)

PRODUCER = "control"
DEFAULT_ACTOR = "api"
VERSION = "0.1.0"


# ------------------------------------------------------------------------------ auth


class Access(enum.IntEnum):
    READ = 1
    WRITE = 2


class Tokens:
    """The configured tokens, as bytes for `secrets.compare_digest`; never shown."""

    __slots__ = ("_read", "_write")

    def __init__(self, write: SecretStr, read: SecretStr | None = None) -> None:
        self._write = write.get_secret_value().encode()
        self._read = read.get_secret_value().encode() if read is not None else None

    def access(self, presented: str) -> Access | None:
        """What a presented token grants (None: nothing). Both comparisons always run, in
        constant time, so the answer's timing says nothing about either token."""
        given = presented.encode("latin-1")  # the header's bytes, as the client sent them
        write = secrets.compare_digest(given, self._write)
        read = secrets.compare_digest(given, self._read if self._read is not None else b"")
        if write:
            return Access.WRITE
        if read and self._read is not None:
            return Access.READ
        return None

    def __repr__(self) -> str:
        return f"Tokens(write=**********, read={'**********' if self._read else None})"


_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="MERIDIAN_CONTROL_TOKEN (every route) or MERIDIAN_CONTROL_READ_TOKEN (GET routes "
                "only).")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail,
                         headers={"WWW-Authenticate": "Bearer"})


def _check(request: Request, credentials: HTTPAuthorizationCredentials | None,
           needed: Access) -> Access:
    tokens: Tokens = request.app.state.tokens
    if credentials is None:
        _refused(request, "no bearer token")
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    access = tokens.access(credentials.credentials)
    if access is None:
        _refused(request, "unknown token")
        raise _unauthorized("invalid token")
    if access < needed:
        _refused(request, "read-only token on a route that changes state")
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "the read-only token cannot change state: use the token of "
                            "MERIDIAN_CONTROL_TOKEN")
    return access


def _refused(request: Request, why: str) -> None:
    client = request.client.host if request.client else "-"
    log.warning("refused %s %s: %s", request.method, request.url.path, why,
                extra={"client": client})


async def require_read(request: Request, credentials: Credentials) -> Access:
    """The read or the write token."""
    return _check(request, credentials, Access.READ)


async def require_write(request: Request, credentials: Credentials) -> Access:
    """The write token."""
    return _check(request, credentials, Access.WRITE)


# Route parameters (resolved from this module's names: the annotations are strings).
ReadAccess = Annotated[Access, Depends(require_read)]
WriteAccess = Annotated[Access, Depends(require_write)]


# ------------------------------------------------------------------------------ bodies


class Error(BaseModel):
    detail: str = Field(description="What went wrong, in one line.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class BreakerLevel(BaseModel):
    """The risk gate's circuit-breaker level, as it last announced it (key `breaker`)."""

    level: str = Field(description="normal, pause, reduce or close.")
    until_ms: int = Field(description="End of a pause or reduce period (event time, ms); 0 if "
                                      "none.")
    until: str | None = Field(description="until_ms in UTC, or null.")
    reason: str = Field(description="Every tripped breaker with the numbers it compared.")
    time: str = Field(description="Event time of the announcement, UTC.")
    id: str


class KillSwitchStatus(BaseModel):
    """The latest kill-switch command on control.v1 (engaged false when none was ever sent)."""

    engaged: bool
    reason: str | None = Field(description="Why; null when the switch was never set.")
    actor: str | None = Field(description="Who; null when the switch was never set.")
    time: str | None = Field(description="Event time of the command, UTC; null when never set.")
    id: str | None = Field(description="The command's id.")
    producer: str | None = Field(description="What published it: control (this API), cli, "
                                             "risk (the breakers).")
    breaker: BreakerLevel | None = Field(description="The risk gate's breaker level, if it ever "
                                                     "announced one.")
    topic: str = Field(description="The control topic read (with its prefix).")


class KillSwitchChange(BaseModel):
    """Engage or clear the kill switch."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"engaged": True, "reason": "exchange outage", "actor": "alice"}]})

    engaged: StrictBool = Field(description="true: only reduce-only orders pass the risk gate; "
                                            "false: new positions again.")
    reason: str = Field(max_length=1000, description="Why (required, not blank).")
    actor: str | None = Field(None, max_length=200,
                              description=f"Who (default {DEFAULT_ACTOR!r}).")

    @field_validator("reason", "actor")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty or blank")
        return value


class KillSwitchPublished(BaseModel):
    """The command as published on control.v1 (acknowledged by the broker)."""

    engaged: bool
    reason: str
    actor: str
    time: str = Field(description="Event time of the command, UTC.")
    event_time_ms: int
    id: str
    producer: str
    topic: str
    key: str


def _status_body(state: control.Status) -> KillSwitchStatus:
    switch = state.command(control.KILL_SWITCH_KEY, "kill_switch")
    breaker = state.command(control.BREAKER_KEY, "breaker")
    level = None
    if breaker is not None:
        b = breaker.breaker
        level = BreakerLevel(level=b.level, until_ms=b.until_ms,
                             until=control.utc(b.until_ms) if b.until_ms else None,
                             reason=b.reason, time=control.utc(breaker.meta.event_time_ms),
                             id=breaker.meta.id)
    if switch is None:
        return KillSwitchStatus(engaged=False, reason=None, actor=None, time=None, id=None,
                                producer=None, breaker=level, topic=state.topic)
    ks, meta = switch.kill_switch, switch.meta
    return KillSwitchStatus(engaged=ks.engaged, reason=ks.reason, actor=ks.actor,
                            time=control.utc(meta.event_time_ms), id=meta.id,
                            producer=meta.producer, breaker=level, topic=state.topic)


def _published_body(command: control_pb2.Control, topic: str) -> KillSwitchPublished:
    ks, meta = command.kill_switch, command.meta
    return KillSwitchPublished(engaged=ks.engaged, reason=ks.reason, actor=ks.actor,
                               time=control.utc(meta.event_time_ms),
                               event_time_ms=meta.event_time_ms, id=meta.id,
                               producer=meta.producer, topic=topic, key=control.KILL_SWITCH_KEY)


# ------------------------------------------------------------------------------ the app

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "No bearer token, or not a configured one."},
    503: {"model": Error, "description": "Kafka is unreachable or did not answer in time."},
}


def create_app(settings: ControlSettings, common: config.CommonSettings, bus: Bus, *,
               clock: Clock | None = None) -> FastAPI:
    """The API over `bus`, on the topics under `common.topic_prefix`. The bus is injected: a
    `KafkaBus` in the service, an `InProcessBus` in tests."""
    clock = clock or WallClock()
    prefix = common.topic_prefix
    topic = prefix + topics.CONTROL
    bootstrap = common.kafka_bootstrap if common.bus == "kafka" else "the in-process bus"
    timeout_s = float(settings.kafka_timeout_s)

    async def on_bus(call: Any, on_timeout: str = "") -> Any:
        try:
            return await control.kafka_call(call, bootstrap, timeout_s, on_timeout=on_timeout)
        except control.ControlError as exc:
            log.error("control.v1 unavailable: %s", exc)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None

    app = FastAPI(
        title="Meridian control plane", version=VERSION,
        description="Operator commands on control.v1 (compacted), read by every service. "
                    "While the kill switch is engaged the risk gate passes only reduce-only "
                    "orders.")
    app.state.tokens = Tokens(settings.token, settings.read_token)

    @app.get("/health", response_model=Health, tags=["health"],
             summary="Liveness (no token)")
    async def health() -> Health:
        return Health()

    @app.get("/v1/kill-switch", response_model=KillSwitchStatus, tags=["kill switch"],
             summary="The kill switch and the risk gate's breaker level",
             responses=_AUTH_ERRORS)
    async def get_kill_switch(_: ReadAccess) -> KillSwitchStatus:
        state = await on_bus(control.read_status(bus, prefix))
        return _status_body(state)

    @app.post("/v1/kill-switch", response_model=KillSwitchPublished,
              status_code=status.HTTP_202_ACCEPTED, tags=["kill switch"],
              summary="Engage or clear the kill switch",
              description="Publishes a KillSwitch command under the key kill_switch on "
                          "control.v1 and returns it once the broker acknowledged it. The risk "
                          "gate applies it as it reads it (202: accepted, not yet applied).",
              responses={**_AUTH_ERRORS,
                         403: {"model": Error, "description": "The read-only token."}})
    async def post_kill_switch(change: KillSwitchChange, _: WriteAccess) -> KillSwitchPublished:
        actor = change.actor or DEFAULT_ACTOR
        command = control.kill_switch_command(change.engaged, change.reason, actor,
                                              producer=PRODUCER, now_ms=clock.now_ms())
        await on_bus(control.publish_command(bus, prefix, control.KILL_SWITCH_KEY, command),
                     on_timeout="; the command may or may not have been published: check "
                                "GET /v1/kill-switch")
        log.warning("kill switch %s", "ENGAGED" if change.engaged else "cleared",
                    extra={"reason": change.reason, "actor": actor, "id": command.meta.id,
                           "topic": topic})
        return _published_body(command, topic)

    return app

