"""Walk-forward splits: sliding (not expanding) windows, the gap, and purging of labels whose
horizon reaches into the test window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian_ml.splits import WalkForward


def test_windows_slide_with_a_constant_train_size() -> None:
    t0 = np.arange(0, 100)
    folds = list(WalkForward(train_size=30, test_size=10, gap=5).split(t0, t0))
    assert [f.test_start for f in folds] == [35, 45, 55, 65, 75, 85, 95]
    for f in folds:
        assert f.train.tolist() == list(range(f.test_start - 35, f.test_start - 5))
        assert f.test.tolist() == list(range(f.test_start, min(f.test_start + 10, 100)))


def test_labels_reaching_into_the_test_window_are_purged() -> None:
    t0 = np.arange(0, 60)
    t1 = t0 + 8  # every label looks 8 steps ahead
    fold = next(iter(WalkForward(train_size=30, test_size=10, gap=0).split(t0, t1)))
    assert fold.test_start == 30
    assert fold.train.tolist() == list(range(0, 22))  # 22 + 8 = 30 would touch the test window


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 500)), min_size=2,
                max_size=300),
       st.integers(1, 3000), st.integers(1, 2000), st.integers(0, 500), st.integers(1, 2000))
def test_no_fold_ever_trains_on_information_from_its_test_window(
        events: list[tuple[int, int]], train: int, test: int, gap: int, step: int) -> None:
    events.sort()
    t0 = np.array([e[0] for e in events])
    t1 = t0 + np.array([e[1] for e in events])
    for fold in WalkForward(train, test, gap, step).split(t0, t1):
        assert fold.train.size
        assert fold.test.size
        assert t1[fold.train].max() < fold.test_start  # purged
        assert t0[fold.train].max() < fold.test_start - gap  # embargoed
        assert t0[fold.train].min() >= fold.test_start - gap - train  # sliding, not expanding
        assert t0[fold.test].min() >= fold.test_start
        assert t0[fold.test].max() < fold.test_end


@pytest.mark.parametrize(("kw", "match"), [({"train_size": 0, "test_size": 1}, "train_size"),
                                           ({"train_size": 1, "test_size": 1, "gap": -1}, "gap"),
                                           ({"train_size": 1, "test_size": 1, "step": 0}, "step")])
def test_bad_sizes_are_refused(kw: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WalkForward(**kw)


def test_unsorted_or_backward_events_are_refused() -> None:
    with pytest.raises(ValueError, match="sorted"):
        list(WalkForward(5, 5).split([3, 1], [3, 1]))
    with pytest.raises(ValueError, match="t1"):
        list(WalkForward(5, 5).split([1, 3], [0, 3]))
