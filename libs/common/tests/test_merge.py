"""The event-time merge releases the same order whatever the arrival interleaving."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from meridian_common.merge import EventTimeMerge

HOUR = 3_600_000


def _streams(times: dict[str, list[int]]) -> dict[tuple[str, str], list[int]]:
    return {("candle", k): ts for k, ts in times.items()} | {
        ("signal", k): ts for k, ts in times.items()}


def _run(arrival: list[tuple[tuple[str, str], int]]) -> list[tuple[int, str, str]]:
    merge: EventTimeMerge[tuple[int, str, str]] = EventTimeMerge()
    for stream in {s for s, _ in arrival}:  # every stream known from the start
        merge.advance(stream, -1)
    out = []
    for stream, t in arrival:
        rank = 0 if stream[0] == "candle" else 1
        assert merge.hold(stream, t, rank, (t, stream[0], stream[1]))
        out += merge.release()
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=15, unique=True),
                min_size=1, max_size=4),
       st.randoms(use_true_random=False))
def test_any_interleaving_releases_the_same_order(per_key: list[list[int]],
                                                  rng: random.Random) -> None:
    times = {f"k{i}": sorted(ts) for i, ts in enumerate(per_key)}
    streams = _streams(times)
    # a random interleaving that keeps each stream's own order
    cursors = {s: 0 for s in streams}
    arrival = []
    while cursors:
        s = rng.choice(sorted(cursors))
        arrival.append((s, streams[s][cursors[s]]))
        cursors[s] += 1
        if cursors[s] == len(streams[s]):
            del cursors[s]
    # finish: every stream reaches the end of time
    got = _run(arrival)
    merge_end = sorted((t, s[0], s[1]) for s, ts in streams.items() for t in ts
                       if t <= min(max(v) for v in streams.values()))
    expected = sorted(merge_end, key=lambda x: (x[0], 0 if x[1] == "candle" else 1, x[2]))
    assert got == expected


def test_a_record_behind_the_release_is_late_and_counted() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge()
    assert merge.hold(("candle", "a"), 10, 0, "a10")
    assert merge.release() == ["a10"]
    assert merge.released_to == 10
    assert not merge.hold(("candle", "b"), 5, 0, "b5")  # a stream that appears too late
    assert merge.late == 1
    assert merge.hold(("candle", "b"), 12, 0, "b12")
    assert merge.release() == []  # a is at 10 only
    merge.advance(("candle", "a"), 12)
    assert merge.release() == ["b12"]


def test_retained_is_the_lowest_held_offset_per_partition() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge()
    merge.advance(("signal", "slow"), 0)
    merge.hold(("candle", "a"), 5, 0, "x", ("candle", 1, 40))
    merge.hold(("candle", "a"), 6, 0, "y", ("candle", 1, 41))
    merge.hold(("signal", "b"), 5, 1, "z", ("signal", 0, 7))
    assert merge.release() == []
    assert merge.retained() == {("candle", 1): 40, ("signal", 0): 7}
    assert merge.lagging() == [(("signal", "slow"), 0)]
    merge.advance(("signal", "slow"), 5)
    merge.advance(("signal", "b"), 5)
    assert merge.release() == ["x", "z"]
    assert merge.retained() == {("candle", 1): 41}


def test_grace_proceeds_without_a_stalled_stream_and_counts_it() -> None:
    merge: EventTimeMerge[str] = EventTimeMerge(grace_s=0.001)
    merge.advance(("signal", "stalled"), 0)
    merge.hold(("candle", "a"), HOUR, 0, "a")
    import time
    time.sleep(0.01)
    assert merge.release() == ["a"]
    assert merge.forced == 1
    waiting: EventTimeMerge[str] = EventTimeMerge()  # no grace: waits
    waiting.advance(("signal", "stalled"), 0)
    waiting.hold(("candle", "a"), HOUR, 0, "a")
    time.sleep(0.01)
    assert waiting.release() == []
