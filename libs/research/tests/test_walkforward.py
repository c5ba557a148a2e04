"""Rolling walk-forward windows: tiling, purge, argument checks, and (hypothesis) that no
window ever lets its train part reach into its test part."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meridian_research.walkforward import MS_PER_DAY, MS_PER_HOUR, Window, rolling_windows, to_ms

JAN_2021 = 1_609_459_200_000  # 2021-01-01T00:00Z


def test_windows_roll_and_their_test_parts_tile_the_span() -> None:
    windows = rolling_windows(JAN_2021, JAN_2021 + 100 * MS_PER_DAY, train=30 * MS_PER_DAY,
                              test=10 * MS_PER_DAY)
    assert len(windows) == 7  # (100 - 30 - 10) / 10 + 1
    assert [w.index for w in windows] == list(range(7))
    first, last = windows[0], windows[-1]
    assert (first.train_start, first.train_end) == (JAN_2021, JAN_2021 + 30 * MS_PER_DAY)
    assert (first.test_start, first.test_end) == (first.train_end, first.train_end
                                                  + 10 * MS_PER_DAY)
    assert last.test_end == JAN_2021 + 100 * MS_PER_DAY
    for prev, cur in itertools.pairwise(windows):
        assert cur.test_start == prev.test_end  # edge to edge, half-open
        assert cur.train_end - cur.train_start == 30 * MS_PER_DAY  # rolling, not expanding


def test_the_last_partial_window_is_left_out() -> None:
    windows = rolling_windows(0, 99 * MS_PER_HOUR, train=50 * MS_PER_HOUR, test=10 * MS_PER_HOUR)
    assert len(windows) == 4
    assert windows[-1].test_end == 90 * MS_PER_HOUR


def test_purge_leaves_a_gap_before_each_test_part() -> None:
    windows = rolling_windows(0, 100 * MS_PER_HOUR, train=40 * MS_PER_HOUR,
                              test=10 * MS_PER_HOUR, purge=5 * MS_PER_HOUR)
    assert all(w.test_start - w.train_end == w.purge == 5 * MS_PER_HOUR for w in windows)
    assert len(windows) == 5  # (100 - 55) // 10 + 1


def test_a_longer_step_leaves_gaps_between_test_parts() -> None:
    windows = rolling_windows(0, 100, train=20, test=10, step=25)
    assert [(w.test_start, w.test_end) for w in windows] == [(20, 30), (45, 55), (70, 80)]


def test_datetimes_timestamps_and_ms_give_the_same_windows() -> None:
    by_ms = rolling_windows(JAN_2021, JAN_2021 + 90 * MS_PER_DAY, train=30 * MS_PER_DAY,
                            test=15 * MS_PER_DAY)
    by_datetime = rolling_windows(datetime(2021, 1, 1, tzinfo=UTC),
                                  datetime(2021, 4, 1, tzinfo=UTC),
                                  train=timedelta(days=30), test=timedelta(days=15))
    by_pandas = rolling_windows(pd.Timestamp("2021-01-01T01:00", tz="Europe/Paris"),
                                pd.Timestamp("2021-04-01", tz="UTC"),
                                train=pd.Timedelta(days=30), test=pd.Timedelta(days=15))
    by_numpy = rolling_windows(np.int64(JAN_2021), np.int64(JAN_2021 + 90 * MS_PER_DAY),
                               train=np.int64(30 * MS_PER_DAY), test=15 * MS_PER_DAY)
    assert by_ms == by_datetime == by_pandas == by_numpy
    assert to_ms(datetime(2021, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))), "t") == JAN_2021


def test_a_span_too_short_for_one_window_is_an_error_that_says_why() -> None:
    with pytest.raises(ValueError, match=r"shorter than train \+ purge \+ test \(41 d\)") as info:
        rolling_windows(JAN_2021, JAN_2021 + 40 * MS_PER_DAY, train=30 * MS_PER_DAY,
                        test=10 * MS_PER_DAY, purge=MS_PER_DAY)
    assert "(40 d)" in str(info.value)
    assert "2021-01-01T00:00Z" in str(info.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"train": 0, "test": 10}, "train must be > 0"),
    ({"train": 10, "test": -5}, "test must be > 0"),
    ({"train": 10, "test": 10, "step": 0}, "step must be > 0"),
    ({"train": 10, "test": 10, "step": 5}, r"step \(5 ms\) must be >= test \(10 ms\)"),
    ({"train": 10, "test": 10, "purge": -1}, "purge must be >= 0"),
])
def test_bad_lengths_are_named(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rolling_windows(0, 1000, **kwargs)


def test_bad_bounds_are_named() -> None:
    with pytest.raises(ValueError, match=r"end .* must be after start"):
        rolling_windows(1000, 1000, train=1, test=1)
    with pytest.raises(ValueError, match="start is a naive datetime"):
        rolling_windows(datetime(2021, 1, 1), JAN_2021 + MS_PER_DAY, train=1, test=1)
    with pytest.raises(TypeError, match="end must be epoch ms"):
        rolling_windows(0, 10.5, train=1, test=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train must be ms"):
        rolling_windows(0, 10, train="1h", test=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool"):
        rolling_windows(0, 10, train=True, test=1)


def test_a_window_checks_its_own_order_and_round_trips() -> None:
    window = Window(3, 0, 10, 12, 20)
    assert Window.from_dict(window.to_dict()) == window
    assert window.purge == 2
    assert window.label() == "#3 OOS 1970-01-01T00:00Z..1970-01-01T00:00Z"
    with pytest.raises(ValueError, match="train_start < train_end <= test_start < test_end"):
        Window(0, 0, 10, 5, 20)  # test starts inside the train part
    with pytest.raises(ValueError, match="index"):
        Window(-1, 0, 1, 1, 2)


lengths = st.integers(min_value=1, max_value=5_000)


@given(start=st.integers(min_value=-10**6, max_value=10**6), span=st.integers(1, 60_000),
       train=lengths, test=lengths, extra_step=st.integers(0, 3_000),
       purge=st.integers(0, 500))
def test_no_window_lets_its_train_part_overlap_its_test_part(
        start: int, span: int, train: int, test: int, extra_step: int, purge: int) -> None:
    end = start + span
    step = test + extra_step
    if span < train + purge + test:
        with pytest.raises(ValueError, match="shorter than train"):
            rolling_windows(start, end, train=train, test=test, step=step, purge=purge)
        return
    windows = rolling_windows(start, end, train=train, test=test, step=step, purge=purge)
    assert windows[0].train_start == start
    for k, w in enumerate(windows):
        assert w.index == k
        assert start <= w.train_start < w.train_end <= w.test_start < w.test_end <= end
        assert w.train_end - w.train_start == train
        assert w.test_end - w.test_start == test
        assert w.test_start - w.train_end == purge
    for prev, cur in itertools.pairwise(windows):
        assert cur.test_start >= prev.test_end  # out-of-sample parts never overlap
        assert cur.test_start - prev.test_start == step
        if extra_step == 0:
            assert cur.test_start == prev.test_end  # and tile when step == test
    assert windows[-1].test_end + step > end  # maximal: one more window would not fit
