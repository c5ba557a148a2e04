"""Running sums, maxima and forward fills down the rows: numpy's accumulate (narrow arrays, in
blocks of rows) and the row loop (wide arrays) both give what one row after another gives."""

from __future__ import annotations

import numpy as np
import pytest

from meridian_research import arrays
from meridian_research.arrays import cummax_rows, cumsum_rows, ffill_rows


def row_by_row(a: np.ndarray, step: str) -> np.ndarray:
    """The reference: each row from the one before it, one at a time."""
    out = np.array(a, dtype=np.float64, copy=True)
    for i in range(1, out.shape[0]):
        if step == "sum":
            out[i] += out[i - 1]
        elif step == "max":
            np.maximum(out[i], out[i - 1], out=out[i])
        else:
            gap = np.isnan(out[i])
            out[i][gap] = out[i - 1][gap]
    return out


def sample(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 100.0, (rows, cols))
    a[rng.random(a.shape) < 0.6] = np.nan  # long runs of NaN, some from the first row on
    a[:, : cols // 3][rng.random((rows, cols // 3)) < 0.3] = 0.0
    return a


@pytest.mark.parametrize(("rows", "cols"), [
    (0, 3), (1, 4), (2, 1), (arrays._BLOCK - 1, 2), (arrays._BLOCK, 5),
    (3 * arrays._BLOCK + 7, 72), (2 * arrays._BLOCK + 1, arrays._NARROW),
    (2 * arrays._BLOCK + 1, arrays._NARROW + 1), (700, 300),
])
def test_each_width_gives_the_row_loop_s_values(rows: int, cols: int) -> None:
    a = sample(rows, cols, rows + cols)
    before = a.copy()
    for run, step in ((cumsum_rows, "sum"), (cummax_rows, "max"), (ffill_rows, "fill")):
        got = run(a)
        assert got.shape == a.shape
        assert got.dtype == np.float64
        # bit for bit, NaN where NaN (a running maximum's 0 may be the other zero)
        np.testing.assert_array_equal(got, row_by_row(a, step), strict=True)
        if step != "max":
            assert np.array_equal(got.view(np.int64), row_by_row(a, step).view(np.int64))
    np.testing.assert_array_equal(a, before)  # the input is not touched


def test_one_dimensional_input_is_one_column() -> None:
    a = np.array([1.0, np.nan, -2.0, 3.0, np.nan])
    np.testing.assert_array_equal(cumsum_rows(a), [1.0, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(cummax_rows(a), [1.0, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(ffill_rows(a), [1.0, 1.0, -2.0, 3.0, 3.0])
