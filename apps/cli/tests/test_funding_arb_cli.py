"""`meridian research funding-arb` as a user runs it: a subprocess, the table printed, the
report written; bad flags give a named error and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path


def test_funding_arb_writes_the_comparison(tmp_path: Path, meridian) -> None:
    out = tmp_path / "reports" / "fa"
    proc = meridian("research", "funding-arb", "--symbols", "BTCUSDT", "--from", "2022-01-01",
                    "--to", "2022-04-01", "--train-days", "30", "--test-days", "30",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "window 2/2 #1 OOS 2022-03-02T00:00Z..2022-04-01T00:00Z" in proc.stderr
    assert "| variant | OOS return | max DD |" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["symbols"] == ["BTCUSDT"]
    assert len(report["windows"]) == 2
    assert set(report["totals"]) == {"baseline", "improved"}
    assert any("MODELLED" in note for note in report["notes"])
    assert (out / "report.md").read_text().startswith("| window | test |")


def test_baseline_flag_runs_the_baseline_only(tmp_path: Path, meridian) -> None:
    out = tmp_path / "fa"
    proc = meridian("research", "funding-arb", "--symbols", "BTCUSDT", "--baseline", "--from",
                    "2022-01-01", "--to", "2022-03-01", "--train-days", "30", "--test-days",
                    "29", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert list(report["totals"]) == ["baseline"]
    assert report["comparison"] == {}
    assert "improved" not in proc.stdout


def test_bad_flags_are_named(tmp_path: Path, meridian) -> None:
    cases = [
        (("--symbols", "XRPUSDT"), "no funding file"),
        (("--from", "2022-03-01", "--to", "2022-02-01"), "--from 2022-03-01 must be before"),
        (("--from", "2022-13-01"), "--from: expected a UTC ISO date"),
        (("--train-days", "0"), "--train-days must be >= 1 day"),
        (("--from", "2022-01-01", "--to", "2022-02-01"), "spans less than --train-days"),
        (("--symbols", " , "), "--symbols: give at least one symbol"),
    ]
    for args, message in cases:
        proc = meridian("research", "funding-arb", *args, "--out", str(tmp_path / "x"))
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "x").exists()
    proc = meridian("research", "funding-arb", "--train-days", "ten")
    assert proc.returncode == 2
    assert "invalid int value: 'ten'" in proc.stderr
