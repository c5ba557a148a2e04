"""Purged, embargoed sliding walk-forward splits over labelled events.

Each event has a decision time t0 (the close its features describe) and a label end t1 (when its
trade left, the end of the information its label used). Fold k tests the events decided in
[test_start, test_start + test_size) and trains on the events decided in the window of
`train_size` before it, minus:
- the gap (embargo) right before the test window, so serially correlated rows next to the test
  window do not train the model;
- purged events: any whose label end t1 is at or after test_start, since its label was made
  from prices inside the test window.
The window slides by `step`; training never uses anything after its test window, and unlike an
expanding split every fold trains on the same amount of history.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]


class Fold(NamedTuple):
    index: int
    train: Ints  # event indices
    test: Ints
    train_start: int  # times, same unit as t0 (ms)
    test_start: int
    test_end: int  # exclusive


@dataclass(frozen=True, slots=True)
class WalkForward:
    train_size: int  # in the unit of t0 (ms)
    test_size: int
    gap: int = 0
    step: int | None = None  # default: test_size (adjacent test windows)

    def __post_init__(self) -> None:
        if self.train_size <= 0 or self.test_size <= 0:
            raise ValueError(f"train_size ({self.train_size}) and test_size ({self.test_size}) "
                             "must be > 0")
        if self.gap < 0:
            raise ValueError(f"gap must be >= 0, got {self.gap}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")

    def split(self, t0: npt.ArrayLike, t1: npt.ArrayLike) -> Iterator[Fold]:
        """Folds over events sorted by t0; every fold has train and test events."""
        starts = np.asarray(t0, dtype=np.int64)
        ends = np.asarray(t1, dtype=np.int64)
        if starts.shape != ends.shape:
            raise ValueError(f"t0 and t1 differ in length: {starts.size} vs {ends.size}")
        if starts.size == 0:
            return
        if np.any(np.diff(starts) < 0):
            raise ValueError("events must be sorted by t0")
        if np.any(ends < starts):
            raise ValueError("an event's label ends (t1) before its decision (t0)")
        step = self.step or self.test_size
        test_start = int(starts[0]) + self.train_size + self.gap
        index = 0
        while test_start <= int(starts[-1]):
            test_end = test_start + self.test_size
            train_start = test_start - self.gap - self.train_size
            in_train = ((starts >= train_start) & (starts < test_start - self.gap)
                        & (ends < test_start))
            in_test = (starts >= test_start) & (starts < test_end)
            train, test = np.flatnonzero(in_train), np.flatnonzero(in_test)
            if train.size and test.size:
                yield Fold(index, train, test, train_start, test_start, test_end)
                index += 1
            test_start += step
