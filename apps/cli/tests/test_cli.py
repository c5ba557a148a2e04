"""The `meridian` command as a user runs it: the embedded replay with its report, and config."""

from __future__ import annotations

import json
from pathlib import Path

from meridian_cli.settings import SETTINGS_CLASSES


def test_embedded_run_prints_summary_and_writes_report(tmp_path: Path, meridian) -> None:
    report_path = tmp_path / "report.json"
    proc = meridian("run", "--symbols", "BTCUSDT,ETHUSDT", "--start", "2021-01-01", "--end",
                     "2021-02-01", "--report", str(report_path), "--pg-dir",
                     str(tmp_path / "pg"))
    assert proc.returncode == 0, proc.stderr
    assert "replay: 1,488/1,488 candles (100%)" in proc.stderr
    for column in ("trades", "win rate", "net PnL", "max DD", "Sharpe"):
        assert column in proc.stdout
    for name in ("BTCUSDT", "ETHUSDT", "TOTAL"):
        assert name in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["run"]["candles"] == 1488
    assert {line["name"] for line in report["symbols"]} == {"BTCUSDT", "ETHUSDT"}
    net = sum(float(line["net_pnl"]) for line in report["symbols"])
    assert abs(float(report["final_equity"]) - 10000 - net) < 1e-6
    assert report["fills"] >= 2 * report["total"]["trades"]


def test_bad_setting_is_named(meridian) -> None:
    proc = meridian("run", env={"MERIDIAN_RISK_ORDER_NOTIONAL": "lots"})
    assert proc.returncode == 2
    assert "MERIDIAN_RISK_ORDER_NOTIONAL" in proc.stderr


def test_config_reference_lists_every_variable(meridian) -> None:
    proc = meridian("config")
    assert proc.returncode == 0
    for klass in SETTINGS_CLASSES:
        prefix = klass.model_config["env_prefix"].upper()
        for name in klass.model_fields:
            assert f"`{prefix}{name.upper()}`" in proc.stdout


def test_readme_documents_every_variable() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    for klass in SETTINGS_CLASSES:
        prefix = klass.model_config["env_prefix"].upper()
        for name in klass.model_fields:
            assert f"`{prefix}{name.upper()}`" in readme, f"{prefix}{name.upper()} missing"


def test_readme_configuration_table_is_the_printed_one(meridian) -> None:
    """Every row `meridian config` prints is in the README word for word: a default or a
    meaning changed in the code without the table drifts otherwise (two rows had)."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    proc = meridian("config")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| `MERIDIAN_")]
    assert rows
    stale = [row for row in rows if row not in readme]
    assert not stale, "README configuration table differs from `meridian config`:\n" + \
        "\n".join(stale)
