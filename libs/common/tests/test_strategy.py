"""EmaCross: votes only on observed crosses, RSI filter on longs, shorts only when allowed."""

from __future__ import annotations

import pytest

from meridian.v1 import common_pb2
from meridian_common.strategy import EmaCross, EmaCrossParams, Vote


def rule(**kw: object) -> EmaCross:
    return EmaCross(EmaCrossParams(**kw))  # type: ignore[arg-type]


def up(r: EmaCross, fast: float, slow: float, rsi: float) -> Vote | None:
    return r.update(fast / slow - 1.0, rsi)


def test_first_decisive_bar_gives_no_signal() -> None:
    r = rule()
    assert up(r, 101.0, 100.0, 50.0) is None  # fast above slow, but no cross observed
    assert r.side == 1
    assert up(r, 102.0, 100.0, 50.0) is None  # still above: nothing new


def test_equal_emas_are_not_decisive() -> None:
    r = rule()
    assert up(r, 100.0, 100.0, 50.0) is None
    assert r.side == 0
    assert up(r, 99.0, 100.0, 50.0) is None  # first decisive bar
    assert r.side == -1


def test_long_on_upward_cross() -> None:
    r = rule()
    up(r, 99.0, 100.0, 40.0)
    vote = up(r, 100.5, 100.0, 55.0)
    assert vote is not None
    assert vote.direction == common_pb2.DIRECTION_LONG
    assert vote.strength == pytest.approx(0.5)  # gap 0.5 % of slow, full strength at 1 %
    assert "crossed above" in vote.reason


def test_touching_does_not_reset_side() -> None:
    r = rule()
    up(r, 99.0, 100.0, 40.0)
    assert up(r, 100.0, 100.0, 40.0) is None
    vote = up(r, 101.0, 100.0, 40.0)
    assert vote is not None
    assert vote.direction == common_pb2.DIRECTION_LONG


def test_flat_on_downward_cross_without_shorts() -> None:
    r = rule()
    up(r, 101.0, 100.0, 60.0)
    vote = up(r, 98.0, 100.0, 30.0)
    assert vote is not None
    assert vote.direction == common_pb2.DIRECTION_FLAT
    assert vote.strength == 1.0  # saturates
    assert "crossed below" in vote.reason


def test_short_on_downward_cross_when_allowed() -> None:
    r = rule(allow_short=True)
    up(r, 101.0, 100.0, 60.0)
    vote = up(r, 99.9, 100.0, 30.0)
    assert vote is not None
    assert vote.direction == common_pb2.DIRECTION_SHORT
    assert vote.strength == pytest.approx(0.1)


@pytest.mark.parametrize("rsi", [70.0, 85.0])
def test_long_skipped_when_overbought(rsi: float) -> None:
    r = rule()
    up(r, 99.0, 100.0, 50.0)
    assert up(r, 101.0, 100.0, rsi) is None
    assert r.side == 1  # the cross is consumed: no late entry on the next bar
    assert up(r, 102.0, 100.0, 50.0) is None


def test_overbought_threshold_is_configurable() -> None:
    r = rule(rsi_overbought=80.0)
    up(r, 99.0, 100.0, 50.0)
    vote = up(r, 101.0, 100.0, 75.0)
    assert vote is not None
    assert vote.direction == common_pb2.DIRECTION_LONG


def test_overbought_does_not_block_exit() -> None:
    r = rule()
    up(r, 101.0, 100.0, 90.0)
    vote = up(r, 99.0, 100.0, 95.0)
    assert vote is not None
    assert vote.direction == common_pb2.DIRECTION_FLAT


def test_alternating_crosses() -> None:
    r = rule(allow_short=True)
    seq = [(99, 100), (101, 100), (99, 100), (101, 100)]
    votes = [up(r, float(f), float(s), 50.0) for f, s in seq]
    assert votes[0] is None
    assert [v.direction for v in votes[1:] if v] == [
        common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT, common_pb2.DIRECTION_LONG]


@pytest.mark.parametrize("kw", [{"rsi_overbought": 50.0}, {"rsi_overbought": 101.0},
                                {"full_strength_gap": 0.0}])
def test_bad_params(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        EmaCrossParams(**kw)  # type: ignore[arg-type]
