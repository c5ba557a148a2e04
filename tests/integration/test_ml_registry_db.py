"""The model registry against real PostgreSQL: register indexes the version in `models` with its
manifest values, and promotion lives in `models.promoted_at` (one promoted version per name)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from meridian_common import db
from meridian_common.features import TREND_V2
from meridian_ml.model import fit, xgb_json
from meridian_ml.onnx_model import to_onnx
from meridian_ml.registry import ModelManifest, ModelRegistry, UnknownVersionError

pytestmark = pytest.mark.integration

T0 = datetime(2021, 1, 1, tzinfo=UTC)
MS = int(T0.timestamp() * 1000)


def _register(registry: ModelRegistry, seed: int, created_ms: int) -> ModelManifest:
    rng = np.random.default_rng(seed)
    n = len(TREND_V2.columns)
    x = rng.normal(size=(300, n)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 1]) > 0).astype(int)
    model = fit(x, y, {"n_estimators": 10}, seed=seed)
    return registry.register(
        "meta", to_onnx(model, n), xgb_json(model), feature_set="trend@2.0.0",
        feature_fingerprint=TREND_V2.fingerprint(), columns=list(TREND_V2.columns),
        symbols=["BTCUSDT"], timeframe="1h", train_start_ms=MS,
        train_end_ms=MS + 86_400_000 * 365,
        hyperparameters={"max_depth": 4, "n_estimators": 10},
        metrics={"auc": np.float64(0.5625), "trades": np.int64(120), "sharpe": float("inf")},
        threshold=0.55, card={"note": "test"}, card_html="<html></html>",
        created_ms=created_ms, strategy={"primary": {"allow_short": True}})


def _row(url: str, version: str) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("select * from models where version = %s", (version,))
        names = [d.name for d in cur.description or []]
        row = cur.fetchone()
    assert row is not None, version
    return dict(zip(names, row, strict=True))


def test_register_and_promote_through_postgres(new_database: Callable[[str], str],
                                               tmp_path: Path) -> None:
    url = new_database("mlreg")
    db.migrate(url)
    db.migrate(url)  # idempotent
    registry = ModelRegistry(tmp_path, database_url=url)
    first = _register(registry, seed=1, created_ms=MS + 10**11)

    row = _row(url, first.version)
    assert row == {
        "version": first.version, "name": "meta", "feature_set": "trend@2.0.0",
        "feature_fingerprint": TREND_V2.fingerprint(), "train_start": T0,
        "train_end": T0 + timedelta(days=365),
        "hyperparameters": {"max_depth": 4, "n_estimators": 10},
        "metrics": {"auc": 0.5625, "trades": 120, "sharpe": None}, "threshold": 0.55,
        "strategy": {"primary": {"allow_short": True}}, "content_hash": first.content_hash,
        "artifact_path": str((tmp_path / "meta" / first.version).resolve()),
        "created_at": T0 + timedelta(milliseconds=10**11), "promoted_at": None,
    }
    assert registry.load(first.version)[0] == first
    assert registry.promoted("meta") is None

    registry.promote(first.version)
    promoted_at = _row(url, first.version)["promoted_at"]
    assert isinstance(promoted_at, datetime)
    assert abs(datetime.now(UTC) - promoted_at) < timedelta(minutes=1)
    assert registry.promoted("meta") == first.version
    assert not (tmp_path / "meta" / "PROMOTED").exists()  # the database holds promotion

    second = _register(registry, seed=2, created_ms=MS + 10**11 + 60_000)
    assert registry.promoted("meta") == first.version
    registry.promote(second.version)
    assert ModelRegistry(tmp_path, database_url=url).promoted("meta") == second.version
    assert _row(url, first.version)["promoted_at"] is None
    assert _row(url, second.version)["promoted_at"] is not None
    registry.promote(second.version)  # promoting the live version again is harmless
    assert registry.promoted("meta") == second.version
    assert registry.promoted("other") is None

    with pytest.raises(UnknownVersionError) as err:
        registry.promote("meta-20200101000000-deadbeef")
    assert first.version in str(err.value)
    assert second.version in str(err.value)
    registry.close()


def test_one_promoted_version_per_name_is_enforced(new_database: Callable[[str], str],
                                                   tmp_path: Path) -> None:
    url = new_database("mlreg")
    db.migrate(url)
    registry = ModelRegistry(tmp_path, database_url=url)
    first = _register(registry, seed=1, created_ms=MS + 10**11)
    second = _register(registry, seed=2, created_ms=MS + 10**11 + 1000)
    registry.promote(first.version)
    engine = sa.create_engine(db.sync_url(url))
    with pytest.raises(sa.exc.IntegrityError, match="models_one_promoted"), engine.begin() as conn:
        conn.execute(sa.text("update models set promoted_at = now() where version = :v"),
                     {"v": second.version})
    engine.dispose()
    registry.close()


def test_failed_insert_leaves_no_artefacts(new_database: Callable[[str], str],
                                           tmp_path: Path) -> None:
    url = new_database("mlreg")  # not migrated: no models table
    registry = ModelRegistry(tmp_path, database_url=url)
    with pytest.raises(sa.exc.ProgrammingError, match="models"):
        _register(registry, seed=1, created_ms=MS + 10**11)
    assert registry.versions("meta") == []
    assert list((tmp_path / "meta").iterdir()) == []
    registry.close()
