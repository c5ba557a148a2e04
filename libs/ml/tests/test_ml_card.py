"""The model card: JSON that survives json.dumps, and a self-contained page with one SVG
polyline per equity curve and every piece of text escaped."""

from __future__ import annotations

import json
import re

import numpy as np

from meridian_ml.card import model_card
from meridian_ml.registry import ModelManifest

T0 = 1_640_995_200_000  # 2022-01-01T00:00:00Z
HOUR = 3_600_000


def _manifest(name: str = "meta") -> ModelManifest:
    return ModelManifest(
        name=name, version=f"{name}-20240101000000-0123abcd", feature_set="trend@2.0.0",
        feature_fingerprint="fc50fc0cf32828cc", columns=["rsi", "<adx>"], symbols=["BTCUSDT"],
        timeframe="1h", train_start_ms=T0, train_end_ms=T0 + 1000 * HOUR,
        hyperparameters={"max_depth": 4}, metrics={"auc": 0.55}, threshold=0.5,
        content_hash="0123abcd" + "0" * 56, created_ms=T0 + 2000 * HOUR)


def _curves() -> dict[str, list[tuple[int, float]]]:
    rng = np.random.default_rng(0)
    primary = np.cumsum(rng.normal(size=5000)) + 100.0
    return {
        "primary": [(T0 + i * HOUR, float(v)) for i, v in enumerate(primary)],
        "meta-filtered": [(T0 + i * HOUR, float(v) * 0.5 + 60) for i, v in enumerate(primary)],
        "<b>": [(T0, 100.0), (T0 + HOUR, float("nan")), (T0 + 2 * HOUR, 101.0)],
    }


FOLDS = [{"fold": 0, "auc": np.float64(0.5512345), "precision": 0.61, "trades": np.int64(41)},
         {"fold": 1, "auc": 0.549, "precision": float("nan"), "trades": 37, "<i>x</i>": "<b>"}]


def test_html_has_one_polyline_per_curve_and_escapes_text() -> None:
    _, html = model_card(_manifest(), FOLDS, _curves())
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") == 1
    polylines = re.findall(r"<polyline [^>]*points=\"([^\"]*)\"", html)
    assert len(polylines) == 3
    assert len(polylines[0].split()) <= 2000  # 5000 points decimated, lows and highs kept
    assert len(polylines[2].split()) == 2  # the NaN point is left out
    assert "<b>" not in html
    assert "<i>" not in html
    assert "&lt;b&gt;" in html
    assert "&lt;adx&gt;" in html
    assert "time (UTC)" in html
    assert "equity" in html
    assert "2022-01-01" in html
    assert "<script" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    assert "0.5512" in html  # fold metrics in the table


def test_card_json_round_trips_through_json() -> None:
    card, _ = model_card(_manifest(), FOLDS, _curves())
    assert json.loads(json.dumps(card, allow_nan=False)) == card
    assert card["manifest"]["version"] == "meta-20240101000000-0123abcd"
    assert card["folds"][0]["trades"] == 41
    assert card["folds"][1]["precision"] is None
    assert card["curves"]["<b>"] == [[T0, 100.0], [T0 + HOUR, None], [T0 + 2 * HOUR, 101.0]]
    assert set(card["curves"]) == {"primary", "meta-filtered", "<b>"}


def test_escapes_the_model_name_and_handles_empty_input() -> None:
    card, html = model_card(_manifest("x<y"), [], {"flat": [], "one": [(T0, 1.0)]})
    assert "x&lt;y" in html
    assert "x<y" not in html
    assert len(re.findall(r"<polyline ", html)) == 2
    assert card["curves"] == {"flat": [], "one": [[T0, 1.0]]}
