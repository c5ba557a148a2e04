"""POST /v1/models/{name}/promote and POST /v1/configs/{strategy}/promote.

A promotion is two steps, in this order: the promoted mark moves in one transaction (the
`models` / `active_configs` row the services read on start), then a ModelPromotion /
ConfigPromotion on control.v1 (keys `model:<name>` / `config:<strategy>`, the same commands as
`meridian model promote` and `meridian promote`) tells the running services to reload. Database
first, because a service that restarts reads the table, not the topic: an announcement of a
mark that was never written would be undone by the next restart. If the announcement fails, the
mark is written and the answer (503) says so; repeating the request is safe (the same version is
promoted again and announced again).

Promotions through this process are serialized (one lock around both steps), so the last mark
written is also the last command announced: the signals service loads the version a command
names, and two operators promoting at once must not leave it serving a version the table does
not mark. (Two control planes promoting the same name at the same moment could still interleave;
run one.)

Only versions already in the table can be promoted (404 otherwise): the control plane moves a
mark, it does not register models or write configs. The signals service checks a model's
artefact when it loads it and keeps the old model if the load fails.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from meridian.v1 import common_pb2, control_pb2
from meridian_common import control, ids
from meridian_control.auth import WriteAccess
from meridian_control.context import (
    FORBIDDEN,
    NOT_FOUND,
    PRODUCER,
    UNAUTHORIZED,
    Context,
    Error,
)
from meridian_control.store import PromotionResult, UnknownVersion

log = logging.getLogger(__name__)

Kind = Literal["model", "config"]


class PromotionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"version": "meta-trend-20240101T000000Z"}]})

    version: str = Field(min_length=1, max_length=128,
                         description="A version already in the table.")

    @field_validator("version")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty or blank")
        return value


class PromotionPublished(BaseModel):
    """The mark as written, and the command as published on control.v1 (acknowledged)."""

    kind: Kind
    name: str = Field(description="Model name, or strategy.")
    version: str
    previous_version: str | None = Field(description="What was promoted before (null: none; "
                                                     "equal to version when repeated).")
    promoted_at: datetime = Field(description="Database time of the change.")
    id: str
    time: str = Field(description="Event time of the command, UTC.")
    event_time_ms: int
    producer: str
    topic: str
    key: str


def _command(kind: Kind, name: str, version: str, now_ms: int) -> control_pb2.Control:
    meta = common_pb2.Meta(id=ids.digest(f"{kind}_promotion", name, version),
                           event_time_ms=now_ms, producer=PRODUCER)
    if kind == "model":
        return control_pb2.Control(meta=meta, model_promotion=control_pb2.ModelPromotion(
            model_name=name, model_version=version))
    return control_pb2.Control(meta=meta, config_promotion=control_pb2.ConfigPromotion(
        config_name=name, config_version=version))


async def _promote(ctx: Context, lock: asyncio.Lock, kind: Kind, name: str,
                   version: str) -> PromotionPublished:
    async with lock:
        return await _write_and_announce(ctx, kind, name, version)


async def _write_and_announce(ctx: Context, kind: Kind, name: str,
                              version: str) -> PromotionPublished:
    store = ctx.db()
    try:
        if kind == "model":
            result: PromotionResult = await store.promote_model(name, version)
        else:
            result = await store.promote_config(name, version)
    except UnknownVersion as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    key = f"{kind}:{name}"
    command = _command(kind, name, version, ctx.clock.now_ms())
    try:
        await ctx.on_bus(control.publish_command(ctx.bus, ctx.prefix, key, command))
    except HTTPException as exc:
        log.error("%s %s@%s promoted in the database but not announced", kind, name, version)
        raise HTTPException(exc.status_code,
                            f"{exc.detail}; {kind} {name}@{version} is promoted in the database "
                            "but not announced on control.v1: repeat the request to announce "
                            "it") from None
    log.warning("%s %s@%s promoted", kind, name, version,
                extra={"previous": result.previous, "id": command.meta.id,
                       "topic": ctx.control_topic, "key": key})
    meta = command.meta
    return PromotionPublished(kind=kind, name=name, version=version,
                              previous_version=result.previous, promoted_at=result.promoted_at,
                              id=meta.id, time=control.utc(meta.event_time_ms),
                              event_time_ms=meta.event_time_ms, producer=meta.producer,
                              topic=ctx.control_topic, key=key)


def install(app: FastAPI, ctx: Context) -> None:
    lock = asyncio.Lock()
    responses = {**UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND,
                 503: {"model": Error, "description": "The database or Kafka is unreachable; "
                                                      "the detail says whether the mark was "
                                                      "written."}}

    @app.post("/v1/models/{name}/promote", response_model=PromotionPublished,
              status_code=status.HTTP_202_ACCEPTED, tags=["promotion"],
              summary="Promote a registered model version",
              description="Moves the promoted mark of the model `name` to `version` in the "
                          "models table (one transaction), then publishes a ModelPromotion "
                          "under model:<name> on control.v1. 202: the signals service loads "
                          "it after its current batch.",
              responses=responses)
    async def promote_model(name: Annotated[str, Path(min_length=1, max_length=64)],
                            body: PromotionRequest, _: WriteAccess) -> PromotionPublished:
        return await _promote(ctx, lock, "model", name, body.version)

    @app.post("/v1/configs/{strategy}/promote", response_model=PromotionPublished,
              status_code=status.HTTP_202_ACCEPTED, tags=["promotion"],
              summary="Promote a stored strategy config version",
              description="Moves the promoted mark of `strategy` to `version` in active_configs "
                          "(one transaction), then publishes a ConfigPromotion under "
                          "config:<strategy> on control.v1. 202: signals and the risk gate "
                          "re-read it after their current batch.",
              responses=responses)
    async def promote_config(strategy: Annotated[str, Path(min_length=1, max_length=64)],
                             body: PromotionRequest, _: WriteAccess) -> PromotionPublished:
        return await _promote(ctx, lock, "config", strategy, body.version)
