"""`meridian train` and `meridian model promote` as a user runs them: progress, the fold table,
both strategies' results, a registered model whose ONNX export matches xgboost, promotion."""

from __future__ import annotations

import json
from pathlib import Path


def test_train_registers_and_promotes_a_model(tmp_path: Path, meridian) -> None:
    models = tmp_path / "models"
    proc = meridian("train", "--symbols", "BTCUSDT", "--start", "2021-01-01", "--end",
                     "2023-01-01", "--train-days", "180", "--test-days", "60", "--trials", "2",
                     "--allow-short", "--model-dir", str(models), "--promote")
    assert proc.returncode == 0, proc.stderr
    assert "labelled primary entries" in proc.stderr
    assert "trial 2/2" in proc.stderr  # progress per trial
    assert "fold  test window" in proc.stdout
    assert "primary" in proc.stdout
    assert "meta-filtered" in proc.stdout
    version = next(line.split()[1] for line in proc.stdout.splitlines()
                   if line.startswith("registered "))
    assert f"promoted {version}" in proc.stdout
    folder = models / "meta-trend" / version
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["feature_set"] == "trend@2.0.0"
    assert manifest["columns"][-2:] == ["direction", "strength"]
    assert manifest["strategy"]["primary"]["allow_short"] is True
    assert manifest["metrics"]["onnx_max_abs_diff"] <= 1e-5
    assert manifest["metrics"]["folds"] >= 5
    assert (folder / "card.html").read_text().count("<polyline") == 2
    assert (models / "meta-trend" / "PROMOTED").read_text().strip() == version


def test_promoting_an_unknown_version_names_the_known_ones(tmp_path: Path, meridian) -> None:
    proc = meridian("model", "promote", "meta-trend-20990101000000-deadbeef", "--model-dir",
                     str(tmp_path))
    assert proc.returncode == 2
    assert "unknown model version" in proc.stderr


def test_bad_training_window_is_a_clear_error(tmp_path: Path, meridian) -> None:
    proc = meridian("train", "--trials", "0", "--model-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "trials" in proc.stderr
