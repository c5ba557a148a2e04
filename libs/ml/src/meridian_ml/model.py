"""The meta-model: one XGBoost binary classifier with fixed, conservative defaults.

Defaults favour stability over fit (shallow trees, subsampling, a minimum child weight) because
the labels are noisy trade outcomes; `n_jobs=1` and a fixed seed make a training run
reproducible bit for bit, which the registry's content hash relies on to spot real changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost

XGB_DEFAULTS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 4,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "tree_method": "hist",
    "n_jobs": 1,
    "eval_metric": "logloss",
    "objective": "binary:logistic",
    "random_state": 0,
}


def fit(X: npt.ArrayLike, y: npt.ArrayLike, params: dict[str, Any] | None = None, *,  # noqa: N803
        seed: int = 0) -> xgboost.XGBClassifier:
    """Train on `X` (NaN = missing, as in the feature matrix's warm-up and context columns) and
    0/1 labels `y`. `params` override `XGB_DEFAULTS`; the seed is given only through `seed` so
    a run has one source of randomness to record."""
    features = np.asarray(X, dtype=np.float32)
    labels = np.asarray(y)
    if features.ndim != 2:
        raise ValueError(f"X must be 2-D (rows x features), got shape {features.shape}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"y must be 1-D with one label per row of X ({features.shape[0]}), "
                         f"got shape {labels.shape}")
    if np.isinf(features).any():
        column = int(np.flatnonzero(np.isinf(features).any(axis=0))[0])
        raise ValueError(f"X holds ±inf (first in column {column}); use NaN for missing values")
    classes = np.unique(labels)
    if not np.isin(classes, (0, 1)).all():
        raise ValueError(f"y must hold only 0 and 1, got values {classes.tolist()[:10]}")
    if classes.size < 2:
        raise ValueError(f"y holds a single class ({int(classes[0]) if classes.size else 'none'}"
                         f") in {labels.size} rows: a classifier needs both 0 and 1")
    if params and "random_state" in params:
        raise ValueError("pass the seed as fit(..., seed=...), not params['random_state']")
    merged = {**XGB_DEFAULTS, **(params or {}), "random_state": seed}
    model = xgboost.XGBClassifier(**merged)
    model.fit(features, labels.astype(np.int32))
    return model


def xgb_json(model: xgboost.XGBClassifier) -> bytes:
    """The model in xgboost's native JSON (`save_model`), kept next to the ONNX file so a model
    can be inspected, re-exported or retrained from with xgboost itself."""
    with tempfile.TemporaryDirectory(prefix="meridian-xgb-") as tmp:
        path = Path(tmp) / "xgb.json"
        model.save_model(path)
        return path.read_bytes()


def load_xgb_json(data: bytes) -> xgboost.XGBClassifier:
    """The inverse of `xgb_json`."""
    model = xgboost.XGBClassifier()
    model.load_model(bytearray(data))
    return model
