"""One function builds a training matrix, whatever the rows came from: a batch computation over
history, or the features.v1 messages the streaming service published."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from meridian.v1 import features_pb2
from meridian_common.features.spec import FeatureSet


class FeatureRow(NamedTuple):
    symbol: str
    open_ms: int
    values: tuple[float, ...]


class Matrix(NamedTuple):
    keys: list[tuple[str, int]]  # (symbol, candle open time), ascending
    values: npt.NDArray[np.float64]  # rows x spec.columns


def rows_from_history(symbol: str, open_ms: npt.ArrayLike,
                      matrix: npt.NDArray[np.float64]) -> list[FeatureRow]:
    times = np.asarray(open_ms, dtype=np.int64).tolist()
    return [FeatureRow(symbol, t, tuple(row)) for t, row in zip(times, matrix.tolist(),
                                                                 strict=True)]


def rows_from_messages(messages: Iterable[features_pb2.Features],
                       spec: FeatureSet) -> list[FeatureRow]:
    """Rows of the messages of `spec` (other sets and versions are skipped; a message of this
    set whose columns differ from the spec is an error, never silently reordered)."""
    rows = []
    for m in messages:
        if m.feature_set != spec.name or m.feature_set_version != spec.version:
            continue
        names = tuple(v.name for v in m.values)
        if names != spec.columns:
            raise ValueError(f"features {m.meta.id}: columns {names} differ from "
                             f"{spec.name}@{spec.version}")
        rows.append(FeatureRow(m.symbol, m.candle_open_time_ms, tuple(v.value for v in m.values)))
    return rows


def build_matrix(rows: Iterable[FeatureRow], spec: FeatureSet) -> Matrix:
    """Rows ordered by (symbol, open time); a repeated (symbol, open time) keeps the last."""
    latest: dict[tuple[str, int], tuple[float, ...]] = {}
    for row in rows:
        if len(row.values) != len(spec.columns):
            raise ValueError(f"{row.symbol} {row.open_ms}: {len(row.values)} values for "
                             f"{len(spec.columns)} columns")
        latest[(row.symbol, row.open_ms)] = row.values
    keys = sorted(latest)
    values = np.array([latest[k] for k in keys], dtype=np.float64).reshape(len(keys),
                                                                           len(spec.columns))
    return Matrix(keys, values)
