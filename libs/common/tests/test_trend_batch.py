"""The batch trend rules (`trend_states`, `trend_scores`) hold exactly the states `TrendRules`
holds row by row: on a year of real BTC features for several parameter sets (shorts, vetoes,
hysteresis, weights that switch votes off), and on random inputs full of NaNs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from meridian.v1 import common_pb2
from meridian_common.features import TREND_V2, feature_matrix
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_common.strategy import TrendParams, TrendRules, row_inputs, trend_events
from meridian_common.strategy.trend import INPUTS, trend_scores, trend_states

SIGNED = {common_pb2.DIRECTION_LONG: 1, common_pb2.DIRECTION_SHORT: -1,
          common_pb2.DIRECTION_FLAT: 0}

PARAMS = [
    TrendParams(),
    TrendParams(allow_short=True),
    TrendParams(allow_short=True, entry_score=0.3, exit_score=-0.2, rsi_band=2.5),
    TrendParams(allow_short=True, h4_weight=0.0, macd_weight=0.7, ema_weight=1.3,
                rsi_overbought=62.0, rsi_oversold=38.0),
    TrendParams(allow_short=True, entry_score=1.0, exit_score=0.5, rsi_weight=0.0),
]


def rules_states(inputs: np.ndarray, params: TrendParams,
                 ready: np.ndarray | None = None) -> np.ndarray:
    """The row-by-row reference: TrendRules.update on every ready row, the state after it."""
    rules = TrendRules(params)
    out = np.zeros(inputs.shape[0], dtype=np.int8)
    for i, row in enumerate(inputs.tolist()):
        if ready is None or ready[i]:
            rules.update(*row)
        out[i] = SIGNED[rules.state]
    return out


@pytest.fixture(scope="module")
def btc_2021() -> np.ndarray:
    rows = list(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(1_609_459_200_000,
                                                                          1_640_995_200_000))
    cols = list(zip(*[(r.open_time_ms, float(r.high), float(r.low), float(r.close),
                       float(r.volume)) for r in rows], strict=True))
    return feature_matrix(*cols)


def test_states_equal_the_rules_row_by_row_on_real_features(btc_2021: np.ndarray) -> None:
    technical = [TREND_V2.index(c) for c in TREND_V2.columns if c not in TREND_V2.context]
    ready = ~np.isnan(btc_2021[:, technical]).any(axis=1)
    inputs = btc_2021[:, [TREND_V2.index(c) for c in INPUTS]]
    states = trend_states(*inputs.T, PARAMS, ready=ready)
    assert states.shape == (btc_2021.shape[0], len(PARAMS))
    assert states.dtype == np.int8
    for j, params in enumerate(PARAMS):
        np.testing.assert_array_equal(states[:, j], rules_states(inputs, params, ready))
    assert (states == -1).any()  # both sides really exercised
    assert (states == 1).any()
    # the state changes are exactly trend_events' rows and directions
    for j, params in enumerate(PARAMS):
        rows, directions, _ = trend_events(btc_2021, TREND_V2, params)
        changed = np.flatnonzero(np.diff(np.r_[0, states[:, j]]) != 0)
        np.testing.assert_array_equal(changed, rows)
        np.testing.assert_array_equal(states[changed, j], [SIGNED[d] for d in directions])


def test_scores_are_the_rules_scores_bit_for_bit(btc_2021: np.ndarray) -> None:
    inputs = btc_2021[:, [TREND_V2.index(c) for c in INPUTS]]
    scores = trend_scores(*inputs.T, PARAMS)
    for j, params in enumerate(PARAMS):
        rules = TrendRules(params)
        expected = [rules.score(*row_inputs(row, TREND_V2))[0] for row in btc_2021.tolist()]
        np.testing.assert_array_equal(scores[:, j], expected)  # NaN == NaN here, exact else


def test_one_params_for_all_columns_and_shared_inputs() -> None:
    e = np.array([[0.1, -0.1], [0.2, -0.2], [-0.1, 0.1]])
    states = trend_states(e, e, np.full((3, 2), 50.0), e, TrendParams(allow_short=True))
    np.testing.assert_array_equal(states, [[1, -1], [1, -1], [-1, 1]])
    shared = trend_states(e[:, 0], e[:, 0], np.full(3, 50.0), e[:, 0],
                          [TrendParams(), TrendParams(allow_short=True)])
    np.testing.assert_array_equal(shared, [[1, 1], [1, 1], [0, -1]])
    with pytest.raises(ValueError, match="parameter columns"):
        trend_scores(e, e, e, e, [TrendParams()] * 3)


@settings(max_examples=150, deadline=None)
@given(data=st.data(),
       params=st.lists(st.builds(
           TrendParams,
           ema_weight=st.sampled_from([0.0, 0.5, 1.0]), macd_weight=st.sampled_from([0.3, 1.0]),
           rsi_weight=st.sampled_from([0.0, 1.0, 2.0]), h4_weight=st.sampled_from([0.0, 1.0]),
           rsi_band=st.sampled_from([0.0, 5.0, 12.5]),
           rsi_overbought=st.sampled_from([60.0, 70.0, 100.0]),
           rsi_oversold=st.sampled_from([0.0, 30.0, 45.0]),
           entry_score=st.sampled_from([0.25, 0.5, 1.0]),
           exit_score=st.sampled_from([-1.0, -0.25, 0.0, 0.2]),
           allow_short=st.booleans()).filter(lambda p: p.exit_score < p.entry_score),
           min_size=1, max_size=4))
def test_random_inputs_with_nans_match_the_rules(data: st.DataObject,
                                                 params: list[TrendParams]) -> None:
    n = data.draw(st.integers(1, 60))
    finite = st.floats(-2.0, 2.0, allow_nan=False)
    sparse = st.one_of(st.just(math.nan), st.just(0.0), finite)
    e, m, h = (data.draw(hnp.arrays(np.float64, n, elements=sparse)) for _ in range(3))
    rsi = data.draw(hnp.arrays(np.float64, n, elements=st.one_of(
        st.just(math.nan), st.sampled_from([30.0, 45.0, 50.0, 55.0, 60.0, 70.0]),
        st.floats(0.0, 100.0))))
    ready = data.draw(hnp.arrays(np.bool_, n))
    states = trend_states(e, m, rsi, h, params, ready=ready)
    inputs = np.column_stack([e, m, rsi, h])
    for j, p in enumerate(params):
        np.testing.assert_array_equal(states[:, j], rules_states(inputs, p, ready))


def test_many_columns_with_many_state_changes_match_the_rules() -> None:
    """Columns that change state at different rates (the batch form follows each column from
    one state change to the next, all columns at once), some rows skipped."""
    rng = np.random.default_rng(7)
    n, cols = 400, 24
    e, m, h = (np.where(rng.random((n, cols)) < 0.1, np.nan, rng.normal(0.0, 1.0, (n, cols)))
               for _ in range(3))
    rsi = np.where(rng.random((n, cols)) < 0.05, np.nan, rng.uniform(0.0, 100.0, (n, cols)))
    rsi[:, :6] = 50.0  # the RSI votes 0 and vetoes nothing in these columns
    ready = rng.random((n, cols)) < 0.9
    ready[:50, 1] = False
    params = [PARAMS[j % len(PARAMS)] for j in range(cols)]
    states = trend_states(e, m, rsi, h, params, ready=ready)
    changes = []
    for j, p in enumerate(params):
        inputs = np.column_stack([e[:, j], m[:, j], rsi[:, j], h[:, j]])
        np.testing.assert_array_equal(states[:, j], rules_states(inputs, p, ready[:, j]))
        changes.append(int((np.diff(states[:, j]) != 0).sum()))
    assert max(changes) > 3 * min(changes)  # busy and quiet columns side by side
    # column-major inputs (what the sweep passes) give the same states
    fortran = [np.asfortranarray(x) for x in (e, m, rsi, h)]
    np.testing.assert_array_equal(trend_states(*fortran, params, ready=ready), states)


def test_an_exit_on_an_entry_s_score_is_refused() -> None:
    """The batch form relies on a side's entry and exit never sharing a row, which TrendParams
    guarantees (exit_score < entry_score); parameters that slipped past it are refused."""
    bad = TrendParams()
    object.__setattr__(bad, "exit_score", 0.5)
    x = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match="exit_score must be below entry_score"):
        trend_states(x, x, np.full(2, 50.0), x, bad)
