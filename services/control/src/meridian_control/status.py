"""GET /v1/status: every service's last handled event time where the database shows it, the
kill switch, the breaker, halts, and the promoted model and config.

Why it answers 200 when the database or Kafka is down (each reported with `reachable` false and
one line), unlike the other routes' 503: it is the page an operator opens when something is
wrong, and a 503 would hide the half that still answers.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import FastAPI

from meridian_common import control
from meridian_control.auth import ReadAccess
from meridian_control.context import UNAUTHORIZED, Context
from meridian_control.killswitch import breaker_level
from meridian_control.schemas import (
    Dependency,
    Promoted,
    ServiceStatus,
    Status,
    SwitchState,
)
from meridian_control.store import DatabaseUnavailable, LastEvents, PromotedRow

# (service, the LastEvents field that shows its progress or None, where that comes from)
SERVICES: tuple[tuple[str, str | None, str], ...] = (
    ("ingest", "candle", "newest open time in candles (live ingest and backfills store "
                         "candles; a replay from CSV files does not)"),
    ("features", None, "not stored: features.v1 only"),
    ("signals", None, "not stored: its signals reach the database as risk decisions"),
    ("risk", "decision", "newest risk_decisions row"),
    ("execution", "fill", "newest fill (the ledger stores execution's fills)"),
    ("ledger", "mark", "newest equity mark"),
)

DbPart = tuple[LastEvents, list[PromotedRow], list[PromotedRow]]


async def _database(ctx: Context) -> tuple[DbPart | None, Dependency]:
    try:
        store = ctx.db()
        last = await store.last_events()
        models, configs = await store.promoted()
    except DatabaseUnavailable as exc:
        return None, Dependency(reachable=False, detail=str(exc))
    return (last, models, configs), Dependency(reachable=True, detail=None)


async def _bus(ctx: Context) -> tuple[control.Status | None, Dependency]:
    try:
        state = await control.kafka_call(control.read_status(ctx.bus, ctx.prefix), ctx.bootstrap,
                                         float(ctx.settings.kafka_timeout_s))
    except control.ControlError as exc:
        return None, Dependency(reachable=False, detail=str(exc))
    return state, Dependency(reachable=True, detail=None)


def _services(last: LastEvents | None, state: control.Status | None) -> list[ServiceStatus]:
    out = []
    for name, field, source in SERVICES:
        halt = state.command(f"halt:{name}", "halt") if state is not None else None
        reason = halt.halt.reason if halt is not None and halt.halt.halted else None
        out.append(ServiceStatus(
            name=name, last_event_time=getattr(last, field) if last and field else None,
            source=source, halted=reason is not None, halt_reason=reason))
    return out


def _announced(state: control.Status | None, prefix: str, kind: str) -> dict[str, str]:
    if state is None:
        return {}
    out = {}
    for key, entry in state.latest.items():
        if key.startswith(prefix) and control.command_kind(entry.command) == kind:
            body = getattr(entry.command, kind)
            out[key[len(prefix):]] = (body.model_version if kind == "model_promotion"
                                      else body.config_version)
    return out


def _promoted(rows: list[PromotedRow], announced: dict[str, str]) -> list[Promoted]:
    by_name = {r.name: r for r in rows}
    return [Promoted(name=name, version=by_name[name].version if name in by_name else None,
                     promoted_at=by_name[name].promoted_at if name in by_name else None,
                     announced_version=announced.get(name))
            for name in sorted(by_name.keys() | announced.keys())]


def _switch(state: control.Status | None) -> SwitchState | None:
    if state is None:
        return None
    command = state.command(control.KILL_SWITCH_KEY, "kill_switch")
    if command is None:
        return SwitchState(engaged=False, reason=None, actor=None, time=None)
    ks = command.kill_switch
    return SwitchState(engaged=ks.engaged, reason=ks.reason, actor=ks.actor,
                       time=control.utc(command.meta.event_time_ms))


def install(app: FastAPI, ctx: Context) -> None:
    @app.get("/v1/status", response_model=Status, tags=["status"],
             summary="Services, kill switch, breaker, halts and promotions",
             description="Answers 200 even when the database or Kafka is unreachable: each "
                         "dependency says whether it answered, and what it would have shown "
                         "is null.",
             responses=UNAUTHORIZED)
    async def get_status(_: ReadAccess) -> Status:
        (db_part, database), (state, bus) = await asyncio.gather(_database(ctx), _bus(ctx))
        last, models, configs = db_part if db_part is not None else (None, [], [])
        level = breaker_level(state) if state is not None else None
        return Status(
            time=datetime.fromtimestamp(ctx.clock.now_ms() / 1000, UTC),
            database=database, bus=bus, services=_services(last, state),
            kill_switch=_switch(state), breaker_level=level.level if level else None,
            models=_promoted(models, _announced(state, "model:", "model_promotion")),
            configs=_promoted(configs, _announced(state, "config:", "config_promotion")))
