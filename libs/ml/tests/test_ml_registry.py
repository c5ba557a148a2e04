"""The model registry on disk: what register writes, what load refuses, and promotion through
the PROMOTED file (no database)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meridian_ml.card import model_card
from meridian_ml.model import fit, xgb_json
from meridian_ml.onnx_model import OnnxModel, to_onnx
from meridian_ml.registry import (
    IntegrityError,
    ModelManifest,
    ModelRegistry,
    RegistryError,
    UnknownVersionError,
)

COLUMNS = ["a", "b", "c"]
T0 = 1_609_459_200_000  # 2021-01-01T00:00:00Z
CREATED = int(datetime(2024, 3, 3, 9, 46, 40, 123000, tzinfo=UTC).timestamp() * 1000)


def _model(seed: int) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, len(COLUMNS))).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + 0.3 * rng.normal(size=300) > 0).astype(int)
    model = fit(x, y, {"n_estimators": 10}, seed=seed)
    return to_onnx(model, len(COLUMNS)), xgb_json(model)


def _fields(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "feature_set": "trend@2.0.0", "feature_fingerprint": "fc50fc0cf32828cc",
        "columns": COLUMNS, "symbols": ["BTCUSDT", "ETHUSDT"], "timeframe": "1h",
        "train_start_ms": T0, "train_end_ms": T0 + 86_400_000 * 365,
        "hyperparameters": {"max_depth": 4, "learning_rate": np.float64(0.05)},
        "metrics": {"auc": np.float32(0.5625), "trades": np.int64(120), "sharpe": float("nan"),
                    "per_fold": (0.5, 0.625)},
        "threshold": 0.55,
    }
    return {**fields, **over}


def _register(registry: ModelRegistry, seed: int = 1, created_ms: int = CREATED,
              name: str = "meta") -> tuple[ModelManifest, bytes, bytes]:
    onnx_bytes, booster = _model(seed)
    manifest = registry.register(
        name, onnx_bytes, booster, **_fields(), created_ms=created_ms,
        card=lambda m: model_card(m, [{"fold": 0, "auc": 0.56}], {"primary": [(T0, 1.0)]}))
    return manifest, onnx_bytes, booster


def test_register_writes_the_artefacts_and_load_returns_them(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    manifest, onnx_bytes, booster = _register(registry)
    assert manifest.version == f"meta-20240303094640-{manifest.content_hash[:8]}"
    assert len(manifest.content_hash) == 64
    directory = tmp_path / "models" / "meta" / manifest.version
    assert sorted(p.name for p in directory.iterdir()) == [
        "card.html", "card.json", "manifest.json", "model.onnx", "xgb.json"]
    assert (directory / "xgb.json").read_bytes() == booster
    assert manifest.metrics == {"auc": 0.5625, "trades": 120, "sharpe": None,
                                "per_fold": [0.5, 0.625]}
    stored = json.loads((directory / "manifest.json").read_text())
    assert stored == manifest.to_dict()
    card = json.loads((directory / "card.json").read_text())
    assert card["manifest"]["version"] == manifest.version
    assert manifest.version in (directory / "card.html").read_text()

    loaded, data = ModelRegistry(tmp_path / "models").load(manifest.version)
    assert loaded == manifest
    assert data == onnx_bytes
    assert OnnxModel(data).n_features == len(COLUMNS)
    assert [p.name for p in (tmp_path / "models" / "meta").iterdir()] == [manifest.version]


def test_tampered_model_is_refused_naming_both_hashes(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    manifest, onnx_bytes, _ = _register(registry)
    path = tmp_path / "meta" / manifest.version / "model.onnx"
    tampered = onnx_bytes[:-1] + bytes([onnx_bytes[-1] ^ 1])
    path.write_bytes(tampered)
    actual = hashlib.sha256(tampered).hexdigest()
    with pytest.raises(IntegrityError) as err:
        registry.load(manifest.version)
    message = str(err.value)
    assert manifest.version in message
    assert manifest.content_hash in message
    assert actual in message
    with pytest.raises(IntegrityError):
        registry.promote(manifest.version)


def test_unknown_version_lists_the_known_ones(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first, _, _ = _register(registry, seed=1)
    second, _, _ = _register(registry, seed=2, created_ms=CREATED + 5000)
    other, _, _ = _register(registry, seed=3, name="other")
    assert registry.versions("meta") == [first.version, second.version]
    assert registry.versions("nothing") == []
    assert registry.names() == ["meta", "other"]
    with pytest.raises(UnknownVersionError) as err:
        registry.load("meta-20200101000000-deadbeef")
    assert first.version in str(err.value)
    assert second.version in str(err.value)
    assert other.version not in str(err.value)
    with pytest.raises(UnknownVersionError) as err:
        registry.load("../etc/passwd")
    assert all(v.version in str(err.value) for v in (first, second, other))
    with pytest.raises(LookupError, match="known: none"):
        ModelRegistry(tmp_path / "empty").load("meta-20200101000000-deadbeef")


def test_promotion_on_disk(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first, _, _ = _register(registry, seed=1)
    second, _, _ = _register(registry, seed=2, created_ms=CREATED + 5000)
    assert registry.promoted("meta") is None
    registry.promote(first.version)
    assert registry.promoted("meta") == first.version
    assert (tmp_path / "meta" / "PROMOTED").read_text().strip() == first.version
    registry.promote(second.version)
    assert ModelRegistry(tmp_path).promoted("meta") == second.version
    assert registry.versions("meta") == [first.version, second.version]
    with pytest.raises(UnknownVersionError):
        registry.promote("meta-20200101000000-deadbeef")
    assert registry.promoted("meta") == second.version


def test_register_refuses_bad_input(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    onnx_bytes, booster = _model(1)
    card = ({"x": 1}, "<html></html>")
    with pytest.raises(ValueError, match="model name"):
        registry.register("../up", onnx_bytes, booster, **_fields(), card=card[0],
                          card_html=card[1])
    with pytest.raises(ValueError, match="ONNX input takes 3 features but 2 columns"):
        registry.register("meta", onnx_bytes, booster, **_fields(columns=["a", "b"]),
                          card=card[0], card_html=card[1])
    with pytest.raises(ValueError, match="not before"):
        registry.register("meta", onnx_bytes, booster, **_fields(train_end_ms=T0),
                          card=card[0], card_html=card[1])
    with pytest.raises(ValueError, match="model meta: the ONNX bytes do not parse"):
        registry.register("meta", b"not onnx", booster, **_fields(), card=card[0],
                          card_html=card[1])
    with pytest.raises(ValueError, match="xgb_json is not JSON"):
        registry.register("meta", onnx_bytes, b"\x00", **_fields(), card=card[0],
                          card_html=card[1])
    with pytest.raises(ValueError, match="card_html is required"):
        registry.register("meta", onnx_bytes, booster, **_fields(), card=card[0])
    manifest = registry.register("meta", onnx_bytes, booster, **_fields(), card=card[0],
                                 card_html=card[1], created_ms=CREATED)
    with pytest.raises(RegistryError, match="already exists"):
        registry.register("meta", onnx_bytes, booster, **_fields(), card=card[0],
                          card_html=card[1], created_ms=CREATED)
    assert registry.versions("meta") == [manifest.version]
    assert not [p for p in (tmp_path / "meta").iterdir() if p.name.startswith(".")]
