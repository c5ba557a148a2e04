"""The served model (ONNX via onnxruntime) scores exactly like the trained xgboost model, on real
BTCUSDT candles and the real feature set, missing values included."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import xgboost

from meridian_common.features import TREND_V2, feature_matrix
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_ml.model import XGB_DEFAULTS, fit, load_xgb_json, xgb_json
from meridian_ml.onnx_model import OnnxModel, to_onnx

HORIZON = 24
START = int(datetime(2021, 1, 1, tzinfo=UTC).timestamp() * 1000)
END = int(datetime(2023, 1, 1, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    candles = list(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(START, END))
    t = np.array([c.open_time_ms for c in candles], dtype=np.int64)
    h, lo, c, v = (np.array([float(getattr(r, f)) for r in candles])
                   for f in ("high", "low", "close", "volume"))
    x = feature_matrix(t, h, lo, c, v)[:-HORIZON].astype(np.float32)
    y = (c[HORIZON:] > c[:-HORIZON]).astype(np.int32)
    # Knock out some values everywhere (warm-up rows and the context columns are NaN already),
    # so the trees learn default branches that the test rows then have to take.
    rng = np.random.default_rng(7)
    x[rng.random(x.shape) < 0.05] = np.nan
    cut = int(0.7 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


@pytest.fixture(scope="module")
def model(data: tuple[np.ndarray, ...]) -> xgboost.XGBClassifier:
    x_train, y_train, _, _ = data
    return fit(x_train, y_train, seed=3)


@pytest.fixture(scope="module")
def served(model: xgboost.XGBClassifier) -> OnnxModel:
    return OnnxModel(to_onnx(model, len(TREND_V2.columns)))


def test_real_data_has_the_expected_shape(data: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, x_test, _ = data
    assert x_train.shape[1] == x_test.shape[1] == len(TREND_V2.columns)
    assert len(x_train) + len(x_test) > 17_000  # two years of hours
    assert 0.3 < y_train.mean() < 0.7
    assert np.isnan(x_test).any(axis=1).all()  # funding_last and btc_ret_1 are not provided
    informative = x_test[:, : -len(TREND_V2.context)]
    assert np.isnan(informative).any(axis=1).mean() > 0.5


def test_onnx_matches_xgboost_on_held_out_rows(model: xgboost.XGBClassifier, served: OnnxModel,
                                               data: tuple[np.ndarray, ...]) -> None:
    _, _, x_test, _ = data
    expected = model.predict_proba(x_test)[:, 1]
    got = served.proba(x_test)
    assert got.dtype == np.float64
    assert got.shape == (len(x_test),)
    assert np.max(np.abs(got - expected)) <= 1e-5
    assert expected.std() > 0.01  # a model that says something, not a constant
    all_missing = np.full((1, x_test.shape[1]), np.nan, dtype=np.float32)
    assert abs(served.proba(all_missing)[0] - model.predict_proba(all_missing)[0, 1]) <= 1e-5


def test_proba_one_equals_proba_row_by_row(served: OnnxModel,
                                           data: tuple[np.ndarray, ...]) -> None:
    _, _, x_test, _ = data
    batch = served.proba(x_test)
    single = np.array([served.proba_one(row) for row in x_test])
    assert np.max(np.abs(single - batch)) <= 1e-6
    as_list = [float(v) for v in x_test[5]]
    assert abs(served.proba_one(as_list) - batch[5]) <= 1e-6


def test_width_mismatch_names_expected_and_got(served: OnnxModel, model: xgboost.XGBClassifier,
                                               data: tuple[np.ndarray, ...]) -> None:
    _, _, x_test, _ = data
    with pytest.raises(ValueError, match=r"expected rows of 27 features, got shape \(3, 26\)"):
        served.proba(x_test[:3, :-1])
    with pytest.raises(ValueError, match="expected 27 features, got 28"):
        served.proba_one([0.0] * 28)
    with pytest.raises(ValueError, match="trained on 27 features, asked to export 26"):
        to_onnx(model, 26)
    assert served.proba(x_test[:0]).shape == (0,)


def test_fit_uses_the_defaults_and_the_seed(model: xgboost.XGBClassifier) -> None:
    params = model.get_params()
    for key, value in XGB_DEFAULTS.items():
        if key != "random_state":
            assert params[key] == value, key
    assert params["random_state"] == 3


def test_fit_is_reproducible_and_round_trips_through_xgb_json() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) > 0).astype(int)
    a, b = fit(x, y, {"n_estimators": 20}, seed=5), fit(x, y, {"n_estimators": 20}, seed=5)
    assert to_onnx(a, 4) == to_onnx(b, 4)
    again = load_xgb_json(xgb_json(a))
    np.testing.assert_array_equal(again.predict_proba(x), a.predict_proba(x))


def test_fit_refuses_bad_labels() -> None:
    x = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"single class \(1\) in 10 rows"):
        fit(x, np.ones(10))
    with pytest.raises(ValueError, match="only 0 and 1"):
        fit(x, np.arange(10))
    with pytest.raises(ValueError, match="one label per row"):
        fit(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="seed="):
        fit(x, np.arange(10) % 2, {"random_state": 1})
