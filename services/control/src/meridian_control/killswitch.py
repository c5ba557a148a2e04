"""GET/POST /v1/kill-switch: the latest kill-switch command on control.v1, and a new one.

Commands are built, published and read by `meridian_common.control`, the same code as
`meridian control`, so the API and the command line can never disagree about what a command is.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from meridian.v1 import control_pb2
from meridian_common import control
from meridian_control.auth import ReadAccess, WriteAccess
from meridian_control.context import BUS_DOWN, FORBIDDEN, PRODUCER, UNAUTHORIZED, Context

log = logging.getLogger(__name__)

DEFAULT_ACTOR = "api"


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


def breaker_level(state: control.Status) -> BreakerLevel | None:
    breaker = state.command(control.BREAKER_KEY, "breaker")
    if breaker is None:
        return None
    b = breaker.breaker
    return BreakerLevel(level=b.level, until_ms=b.until_ms,
                        until=control.utc(b.until_ms) if b.until_ms else None,
                        reason=b.reason, time=control.utc(breaker.meta.event_time_ms),
                        id=breaker.meta.id)


def status_body(state: control.Status) -> KillSwitchStatus:
    switch = state.command(control.KILL_SWITCH_KEY, "kill_switch")
    level = breaker_level(state)
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


def install(app: FastAPI, ctx: Context) -> None:
    @app.get("/v1/kill-switch", response_model=KillSwitchStatus, tags=["kill switch"],
             summary="The kill switch and the risk gate's breaker level",
             responses={**UNAUTHORIZED, **BUS_DOWN})
    async def get_kill_switch(_: ReadAccess) -> KillSwitchStatus:
        state = await ctx.on_bus(control.read_status(ctx.bus, ctx.prefix))
        return status_body(state)

    @app.post("/v1/kill-switch", response_model=KillSwitchPublished,
              status_code=status.HTTP_202_ACCEPTED, tags=["kill switch"],
              summary="Engage or clear the kill switch",
              description="Publishes a KillSwitch command under the key kill_switch on "
                          "control.v1 and returns it once the broker acknowledged it. The risk "
                          "gate applies it as it reads it (202: accepted, not yet applied).",
              responses={**UNAUTHORIZED, **FORBIDDEN, **BUS_DOWN})
    async def post_kill_switch(change: KillSwitchChange, _: WriteAccess) -> KillSwitchPublished:
        actor = change.actor or DEFAULT_ACTOR
        command = control.kill_switch_command(change.engaged, change.reason, actor,
                                              producer=PRODUCER, now_ms=ctx.clock.now_ms())
        await ctx.on_bus(
            control.publish_command(ctx.bus, ctx.prefix, control.KILL_SWITCH_KEY, command),
            on_timeout="; the command may or may not have been published: check "
                       "GET /v1/kill-switch")
        ctx.metrics.kill_switch_command(change.engaged)
        log.warning("kill switch %s", "ENGAGED" if change.engaged else "cleared",
                    extra={"reason": change.reason, "actor": actor, "id": command.meta.id,
                           "topic": ctx.control_topic})
        return _published_body(command, ctx.control_topic)
