"""From a walk-forward study to the services: `meridian promote` writes the best trial into
active_configs (one promoted per strategy), announces it on control.v1, and the signals service
and the risk gate apply it; a trial the services could not run is refused before any write."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from meridian.v1 import control_pb2
from meridian_common import codec, db, topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.handler import Inbound, Outbox
from meridian_common.host import all_topic_configs
from meridian_research.data import load_wide
from meridian_research.evaluator import TrendEvaluator
from meridian_research.study import StudyManager
from meridian_research.walkforward import rolling_windows
from meridian_risk.active import ActiveConfigStore
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings
from meridian_signals.active import ActiveStrategyStore
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

pytestmark = pytest.mark.integration


def _study(path: Path, name: str, *, windows: bool = False, trials: int = 4) -> StudyManager:
    wide = load_wide(("BTCUSDT",), start="2021-01-01", end="2022-01-01")
    spans = rolling_windows(datetime(2021, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC),
                            train=timedelta(days=120), test=timedelta(days=60))
    manager = StudyManager(name, path, TrendEvaluator(wide, windows=windows), spans)
    manager.optimize(trials)
    return manager


def _promote(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
    return subprocess.run([sys.executable, "-m", "meridian_cli.main", "promote", *args],
                          env={**base, **env}, capture_output=True, text=True, timeout=300,
                          check=False)


async def _controls(bootstrap: str, prefix: str) -> list[control_pb2.Control]:
    bus = KafkaBus(bootstrap)
    topic = prefix + topics.CONTROL
    ends = await bus.topic_ends(topic)
    found = []
    for partition, end in enumerate(ends):
        for record in await bus.read_partition(topic, partition, 0, end):
            found.append(codec.decode(topics.CONTROL, record.value,
                                       record.header(codec.TYPE_HEADER)))
    return found


def test_best_trial_goes_live(tmp_path: Path, new_database, kafka_bootstrap: str,
                              topic_prefix: str) -> None:
    storage = tmp_path / "study.db"
    manager = _study(storage, "wf")
    best = manager.best()
    assert best is not None
    url = new_database("promote")
    env = {"MERIDIAN_DATABASE_URL": url, "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": topic_prefix, "MERIDIAN_BUS": "kafka"}
    asyncio.run(KafkaBus(kafka_bootstrap).ensure_topics(all_topic_configs(topic_prefix, 1)))
    proc = _promote(env, "--storage", str(storage), "--study", "wf",
                    "--max-position-notional", "2500")
    assert proc.returncode == 0, proc.stderr
    assert f"trial {best.number} of wf" in proc.stdout

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select version, parameters, leverage, margin_mode, max_position_notional, study, "
            "trial, data_start, data_end, promoted_at is not null from active_configs "
            "where strategy = 'trend'").fetchall()
    [(version, params, leverage, mode, max_pos, study, trial, start, end, promoted)] = rows
    assert (version, study, trial, promoted) == (f"wf-t{best.number}", "wf", best.number, True)
    assert leverage == best.params["leverage"]
    assert mode == "isolated"
    assert max_pos == 2500
    for name, value in best.params.items():
        if name != "exit_score":  # the space may lower it below entry_score (stored as run)
            assert params[name] == pytest.approx(value, rel=1e-9)
    assert params["allow_short"] is True
    assert start == datetime(2021, 1, 1, tzinfo=UTC)
    assert end <= datetime(2022, 1, 1, tzinfo=UTC)

    [announced] = [c for c in asyncio.run(_controls(kafka_bootstrap, topic_prefix))
                   if c.WhichOneof("command") == "config_promotion"]
    assert (announced.config_promotion.config_name,
            announced.config_promotion.config_version) == ("trend", version)

    async def services() -> tuple[SignalsHandler, RiskHandler]:
        engine = db.create_engine(url)
        signals = SignalsHandler(SignalsSettings(model_dir=str(tmp_path / "no-models")),
                                 configs=ActiveStrategyStore(engine))
        risk = RiskHandler(RiskSettings(), configs=ActiveConfigStore(engine))
        await signals.start()
        await risk.start()
        await engine.dispose()
        return signals, risk

    signals, risk = asyncio.run(services())
    assert signals.params.entry_score == params["entry_score"]
    assert signals.params.exit_score == params["exit_score"]
    assert signals.barriers.stop_loss == params["stop_loss"]
    assert signals.params.allow_short is True
    assert risk.strategy_settings["trend"].leverage == leverage
    assert risk.config_versions["trend"] == f"trend@{version}"

    # a second promotion moves the mark; a running service re-reads it after the announcement
    other = next(t for t in manager.study.trials if t.number != best.number
                 and t.state.name == "COMPLETE" and not t.user_attrs.get("liquidated"))
    proc = _promote(env, "--storage", str(storage), "--study", "wf", "--trial",
                    str(other.number))
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(url) as conn:
        promoted = conn.execute("select version from active_configs where strategy = 'trend' "
                                "and promoted_at is not null").fetchall()
    assert promoted == [(f"wf-t{other.number}",)]

    async def reload() -> SignalsHandler:
        engine = db.create_engine(url)
        signals.configs = ActiveStrategyStore(engine)
        command = next(c for c in await _controls(kafka_bootstrap, topic_prefix)
                       if c.config_promotion.config_version == f"wf-t{other.number}")
        signals.handle(Inbound(topics.CONTROL, "config:trend", command), Outbox("signals"))
        await signals.flush()
        await engine.dispose()
        return signals

    reloaded = asyncio.run(reload())
    assert reloaded.config_label == f"trend@wf-t{other.number}"
    assert reloaded.params.entry_score == other.params["entry_score"]


def test_a_trial_the_services_cannot_run_is_refused(tmp_path: Path, new_database) -> None:
    storage = tmp_path / "study.db"
    manager = _study(storage, "windows", windows=True, trials=1)
    manager.enqueue({"ema_fast": 20, "ema_slow": 100, "rsi_window": 14})
    manager.optimize(1)
    url = new_database("refused")
    trial = max(t.number for t in manager.study.trials if t.params.get("ema_slow") == 100)
    proc = _promote({"MERIDIAN_DATABASE_URL": url, "MERIDIAN_BUS": "inprocess"},
                    "--storage", str(storage), "--study", "windows", "--trial", str(trial))
    assert proc.returncode == 2
    assert "ema_slow=100 (the live feature set trend@2.0.0 has 50)" in proc.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("select to_regclass('active_configs')").fetchone() == (None,) or \
            conn.execute("select count(*) from active_configs").fetchone() == (0,)
    proc = _promote({"MERIDIAN_DATABASE_URL": url}, "--storage", str(tmp_path / "none.db"),
                    "--study", "x")
    assert proc.returncode == 2
    assert "no study file" in proc.stderr
