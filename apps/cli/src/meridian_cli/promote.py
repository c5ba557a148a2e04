"""`meridian promote`: a study's best trial (or a named one) becomes the strategy's live config.

One transaction writes the row into active_configs (parameters, leverage, margin mode, max
position, the study and trial it came from, the data range its windows covered) and moves the
strategy's promoted mark to it (a partial unique index allows one); then a `config_promotion`
on control.v1 tells the services, which re-read it: signals its rule parameters, the risk gate
its limits. A trial the services could not run (unknown keys, feature windows other than the
live feature set's, leverage or margin values the gate's schema refuses) is refused before
anything is written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from meridian_common import config, logs
from meridian_common.db import conninfo, migrate
from meridian_common.labels import Barriers
from meridian_common.strategy.configured import StrategyConfigError, configured_strategy
from meridian_common.strategy.trend import TrendParams


@dataclass(frozen=True, slots=True)
class Candidate:
    study: str
    trial: int
    value: float
    parameters: dict[str, Any]
    leverage: Decimal
    margin_mode: str
    data_start_ms: int | None
    data_end_ms: int | None


class PromoteError(ValueError):
    pass


def candidate(storage_path: Path, study_name: str, trial: int | None,
              margin_mode: str | None) -> Candidate:
    """The trial to promote, read from the study's SQLite file."""
    import optuna

    from meridian_research.study import open_storage

    if not storage_path.exists():
        raise PromoteError(f"no study file at {storage_path}")
    storage = open_storage(storage_path)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage))
        raise PromoteError(f"no study {study_name!r} in {storage_path} (it has: {names})") \
            from None
    chosen = _chosen(study, trial)
    # stepped float suggestions carry binary noise (0.14500000000000002): stored as searched
    params = {k: round(v, 10) if isinstance(v, float) else v
              for k, v in (dict(chosen.params) | chosen.user_attrs.get("fixed", {})).items()}
    if "leverage" not in params:
        raise PromoteError(f"trial {chosen.number} has no leverage parameter")
    mode = margin_mode or str(params.get("margin_mode", "isolated"))
    start, end = _data_range(study.user_attrs)
    return Candidate(study_name, chosen.number, float(chosen.value), params,
                     Decimal(str(params["leverage"])), mode, start, end)


def _chosen(study: Any, trial: int | None) -> Any:
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if not t.user_attrs.get("liquidated")]
    if trial is None:
        if not complete:
            raise PromoteError(f"study {study.study_name} has no complete, never-liquidated "
                               "trial to promote")
        return max(complete, key=lambda t: (t.value, -t.number))
    found = [t for t in complete if t.number == trial]
    if not found:
        raise PromoteError(f"trial {trial} of {study.study_name} is not a complete, "
                           "never-liquidated trial")
    return found[0]


def _data_range(attrs: dict[str, Any]) -> tuple[int | None, int | None]:
    windows = (attrs.get("meridian_config") or {}).get("windows") or []
    if not windows:
        return None, None
    return int(windows[0]["train_start"]), int(windows[-1]["test_end"])


def check(cand: Candidate, max_position: Decimal) -> None:
    """Refuse what the services would refuse, before anything is written."""
    from meridian_risk.active import ActiveConfig, strategy_settings
    from meridian_risk.settings import RiskSettings

    try:
        configured_strategy(cand.parameters, TrendParams(), Barriers())
    except StrategyConfigError as exc:
        raise PromoteError(f"trial {cand.trial}: {exc}") from None
    base = config.load(RiskSettings)
    strategy_settings(base, ActiveConfig("trend", f"{cand.study}-t{cand.trial}",
                                         cand.leverage, cand.margin_mode, max_position))


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def write(database_url: str, strategy: str, version: str, cand: Candidate,
          max_position: Decimal) -> None:
    with psycopg.connect(conninfo(database_url)) as conn, conn.transaction():
        conn.execute("update active_configs set promoted_at = null "
                     "where strategy = %s and promoted_at is not null", (strategy,))
        conn.execute(
            "insert into active_configs (strategy, version, parameters, leverage, margin_mode, "
            "max_position_notional, study, trial, data_start, data_end, created_at, "
            "promoted_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), now()) "
            "on conflict (strategy, version) do update set parameters = excluded.parameters, "
            "leverage = excluded.leverage, margin_mode = excluded.margin_mode, "
            "max_position_notional = excluded.max_position_notional, "
            "promoted_at = excluded.promoted_at",
            (strategy, version, Jsonb(cand.parameters), cand.leverage, cand.margin_mode,
             max_position, cand.study, cand.trial, _ts(cand.data_start_ms),
             _ts(cand.data_end_ms)))


async def announce(common: config.CommonSettings, strategy: str, version: str) -> None:
    from meridian.v1 import common_pb2, control_pb2
    from meridian_common import ids
    from meridian_common.control import publish_command
    from meridian_common.service import open_bus

    command = control_pb2.Control(
        meta=common_pb2.Meta(id=ids.digest("config_promotion", strategy, version),
                             event_time_ms=time.time_ns() // 1_000_000,
                             producer="meridian-cli"),
        config_promotion=control_pb2.ConfigPromotion(config_name=strategy,
                                                     config_version=version))
    await publish_command(open_bus(common, "meridian-cli"), common.topic_prefix,
                          f"config:{strategy}", command)


def cmd_promote(ns: argparse.Namespace) -> int:
    logs.setup("meridian", "WARNING")
    common = config.load(config.CommonSettings)
    if common.database_url is None:
        raise config.ConfigError("meridian promote writes active_configs: set "
                                 "MERIDIAN_DATABASE_URL")
    try:
        max_position = Decimal(ns.max_position_notional)
        if not max_position > 0:
            raise PromoteError("--max-position-notional must be > 0, got "
                               f"{ns.max_position_notional}")
        cand = candidate(Path(ns.storage), ns.study, ns.trial, ns.margin_mode)
        check(cand, max_position)
    except (PromoteError, ArithmeticError) as exc:
        print(f"meridian promote: {exc}", file=sys.stderr)
        return 2
    version = ns.version or f"{cand.study}-t{cand.trial}"
    url = common.database_url.get_secret_value()
    migrate(url)
    write(url, ns.strategy, version, cand, max_position)
    print(f"promoted {ns.strategy}@{version}: trial {cand.trial} of {cand.study} "
          f"(objective {cand.value:.4f}), leverage {cand.leverage} {cand.margin_mode}, "
          f"max position {max_position}")
    if common.bus == "kafka":
        asyncio.run(announce(common, ns.strategy, version))
        print(f"announced on {common.topic_prefix}control.v1")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("promote", help="make a study's best trial the strategy's live config "
                       "(active_configs + control.v1)")
    p.add_argument("--storage", required=True, help="the study's SQLite file")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--trial", type=int, help="trial number (default: the best complete, "
                   "never-liquidated trial)")
    p.add_argument("--strategy", default="trend", help="strategy id the services serve")
    p.add_argument("--version", help="config version (default: <study>-t<trial>)")
    p.add_argument("--margin-mode", choices=("isolated", "cross"),
                   help="default: the trial's, else isolated")
    p.add_argument("--max-position-notional", default="5000",
                   help="largest position the gate allows this strategy (quote currency)")
    p.set_defaults(func=cmd_promote)
