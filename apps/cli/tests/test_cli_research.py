"""`meridian backtest`, `meridian research sweep|optimize` and `meridian promote` as a user runs
them: a subprocess with a bare environment, output and files checked."""

from __future__ import annotations

import json
from pathlib import Path


def test_backtest_prints_the_figures_and_writes_the_report(tmp_path: Path, meridian) -> None:
    proc = meridian("backtest", "--from", "2021-01-01", "--to", "2021-02-01", "--symbols",
                    "BTCUSDT", "--reports", str(tmp_path / "reports"), "--pg-dir",
                    str(tmp_path / "pg"), "--mc-runs", "100")
    assert proc.returncode == 0, proc.stderr
    assert "backtest: 744/744 candles (100%)" in proc.stderr
    for figure in ("total return", "CAGR", "Sharpe", "Sortino", "Calmar", "max DD",
                   "profit factor", "expectancy", "SQN", "exposure", "Monte Carlo (100 runs)"):
        assert figure in proc.stdout
    [run_dir] = (tmp_path / "reports" / "trend").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    trades = json.loads((run_dir / "trades.json").read_text())
    assert report["metrics"]["trades"] == len(trades)
    assert report["config"] == {}  # BTCUSDT is the reference symbol: the join stays on
    assert (run_dir / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_backtest_input_errors_are_named(tmp_path: Path, meridian) -> None:
    bad = tmp_path / "bt.toml"
    bad.write_text("[signals]\nentry_scor = 0.6\n")
    proc = meridian("backtest", "--from", "2021-01-01", "--to", "2021-02-01", "--config",
                    str(bad))
    assert proc.returncode == 2
    assert "[signals] has unknown key(s) entry_scor" in proc.stderr
    proc = meridian("backtest", "--from", "2021-03-01", "--to", "2021-02-01")
    assert proc.returncode == 2
    assert "--from 2021-03-01 must be before --to 2021-02-01" in proc.stderr


def test_sweep_broadcasts_a_grid(tmp_path: Path, meridian) -> None:
    out = tmp_path / "sweep.csv"
    proc = meridian("research", "sweep", "--symbols", "BTCUSDT,ETHUSDT", "--from",
                    "2021-01-01", "--to", "2021-07-01", "--grid", "entry_score=0.4,0.6",
                    "--grid", "ema_slow=50,100", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "4 combination(s) x 2 symbol(s), 0 refused" in proc.stdout
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 4
    proc = meridian("research", "sweep", "--grid", "ema_slowest=50")
    assert proc.returncode == 2
    assert "unknown hyperparameter(s) ema_slowest" in proc.stderr


def test_optimize_then_promote_needs_a_database(tmp_path: Path, meridian) -> None:
    storage = tmp_path / "study.db"
    proc = meridian("research", "optimize", "--symbols", "BTCUSDT", "--from", "2021-01-01",
                    "--to", "2022-01-01", "--train-days", "120", "--test-days", "60",
                    "--trials", "3", "--storage", str(storage), "--study", "s")
    assert proc.returncode in (0, 1), proc.stderr  # 1: every trial liquidated (reported)
    assert "[3/3] trial 2" in proc.stderr
    assert "'trials': 3" in proc.stdout
    proc = meridian("promote", "--storage", str(storage), "--study", "s")
    assert proc.returncode == 2
    assert "set MERIDIAN_DATABASE_URL" in proc.stderr
