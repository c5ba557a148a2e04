"""Funding-rate arbitrage rules: thresholds and hysteresis, the improved score hand-checked on
real BTCUSDT settlements, the baseline flag, Decimal sizing under the risk limits, and that no
decision depends on a later settlement.

The settlements are rows of shared/data/BTCUSDT-funding-8h.csv.gz (timestamp = epoch ms):
  1641772800000 2022-01-10T00:00Z  0.0001      1641945600000 2022-01-12T00:00Z -4.772e-05
  1641801600000 2022-01-10T08:00Z  4.522e-05   1641974400000 2022-01-12T08:00Z  9.625e-05
  1641830400000 2022-01-10T16:00Z  0.0001      1642003200000 2022-01-12T16:00Z -5.342e-05
  1641859200000 2022-01-11T00:00Z  0.0001      1642032000000 2022-01-13T00:00Z -7.506e-05
  1641888000000 2022-01-11T08:00Z  7.394e-05   1642060800000 2022-01-13T08:00Z  0.0001
  1641916800000 2022-01-11T16:00Z  0.0001      1642089600000 2022-01-13T16:00Z -6.081e-05
"""

from __future__ import annotations

import gzip
from dataclasses import replace
from decimal import Decimal

import pytest

from meridian_common.marketdata import default_data_dir
from meridian_common.strategy.funding_arb import (
    CARRY,
    ENTER,
    EXIT,
    FLAT,
    HOLD,
    REVERSE,
    STAY_FLAT,
    Decision,
    FundingArbParams,
    FundingArbRules,
    drawdown_multiplier,
    target_notional,
)

T0 = 1641772800000
STEP = 8 * 3_600_000
RATES = [0.0001, 4.522e-05, 0.0001, 0.0001, 7.394e-05, 0.0001, -4.772e-05, 9.625e-05,
         -5.342e-05, -7.506e-05, 0.0001, -6.081e-05]
SMALL = {"fast_span": 2, "slow_span": 3, "persistence_window": 4}


def run(params: FundingArbParams, rates: list[float]) -> list[Decision]:
    rules = FundingArbRules(params)
    return [rules.step(T0 + k * STEP, r) for k, r in enumerate(rates)]


def test_the_settlements_quoted_are_the_csv_rows() -> None:
    path = default_data_dir() / "BTCUSDT-funding-8h.csv.gz"
    with gzip.open(path, "rt") as fh:
        rows = dict(line.strip().split(",") for line in fh if line[0].isdigit())
    assert [float(rows[str(T0 + k * STEP)]) for k in range(len(RATES))] == RATES


def test_baseline_enters_at_the_threshold_and_exits_below_the_lower_one() -> None:
    actions = [(d.action, d.direction) for d in run(FundingArbParams(), RATES)]
    assert actions == [
        (ENTER, CARRY),  # 0.0001 >= entry 0.0001
        (HOLD, CARRY), (HOLD, CARRY), (HOLD, CARRY),  # 4.522e-05 is between: hysteresis holds
        (HOLD, CARRY), (HOLD, CARRY),
        (EXIT, CARRY),  # -4.772e-05 < exit 3e-05
        (STAY_FLAT, FLAT),  # 9.625e-05 is below entry: no re-entry
        (STAY_FLAT, FLAT), (STAY_FLAT, FLAT),  # negative, reverse not allowed
        (ENTER, CARRY), (EXIT, CARRY),
    ]


def test_reverse_entries_when_allowed() -> None:
    params = FundingArbParams(entry_rate=0.00005, exit_rate=0.00003, allow_reverse=True)
    decisions = run(params, RATES)
    # flat after the exit at 2022-01-12T00:00 (-4.772e-05 is not <= -5e-05), 9.625e-05 re-enters
    # carry, -5.342e-05 exits it; -7.506e-05 <= -5e-05 enters the reverse, 0.0001 exits it
    # (one decision per settlement: no flip straight into carry), -6.081e-05 reverses again
    assert [(d.action, d.direction) for d in decisions[6:]] == [
        (EXIT, CARRY), (ENTER, CARRY), (EXIT, CARRY), (ENTER, REVERSE), (EXIT, REVERSE),
        (ENTER, REVERSE)]


def test_improved_score_hand_checked() -> None:
    """fast EMA(2), slow EMA(3), persistence over 4 settlements; weights 0.4/0.2/0.4."""
    params = FundingArbParams(improved=True, **SMALL)
    rules = FundingArbRules(params)
    decisions = [rules.step(T0 + k * STEP, r) for k, r in enumerate(RATES[:4])]
    # EMA(2): seed (0.0001 + 0.00004522) / 2 = 0.00007261, then + 2/3 * (x - ema):
    #   0.00007261 + 2/3 * 0.00002739 = 0.00009087; 0.00009087 + 2/3 * 0.00000913 = 0.0000969567
    # EMA(3): seed (0.0001 + 0.00004522 + 0.0001) / 3 = 0.00008174; + 0.5 * 0.00001826 = 0.00009087
    feats = rules.features()
    assert feats.fast == pytest.approx(0.000096956667, rel=1e-9)
    assert feats.slow == pytest.approx(0.00009087, rel=1e-9)
    assert feats.elevated_carry == 3  # 0.0001, 0.0001, 0.0001 of the last four are >= 0.0001
    # level 0.0001 / 0.0003 = 1/3; trend 0.5 + 0.5 * (0.0000060867 / 0.00005) = 0.5608667;
    # persistence 3/4 -> 0.4/3 + 0.2 * 0.5608667 + 0.4 * 0.75 = 0.5455067 < entry_score 0.6
    score, why = rules.score(CARRY, 0.0001)
    assert score == pytest.approx(0.5455067, abs=1e-7)
    assert "level=0.333 trend=0.561 persistence=0.750" in why
    assert decisions[3].action == STAY_FLAT
    assert decisions[3].score == pytest.approx(score)
    # At the first settlement the EMAs are not ready and abstain:
    # (0.4 * 1/3 + 0.4 * 1/4) / 0.8 = 0.2916667
    assert decisions[0].score == pytest.approx(0.2916667, abs=1e-7)
    assert "trend" not in decisions[0].reason
    # the baseline gate still applies: 4.522e-05 < entry 0.0001 is not scored at all
    assert decisions[1].reason.startswith("predicted 4.522e-05 within")
    # with entry_score 0.5 the same settlement enters, sized by its score
    entering = run(replace(params, entry_score=0.5), RATES[:4])
    assert [d.action for d in entering] == [STAY_FLAT] * 3 + [ENTER]


def test_improved_holds_through_a_single_dip_the_baseline_churns_on() -> None:
    base = FundingArbParams(entry_rate=0.0001, exit_rate=0.00005, **SMALL)
    improved = replace(base, improved=True, entry_score=0.25)
    b = [d.action for d in run(base, RATES[:4])]
    i = run(improved, RATES[:4])
    assert b == [ENTER, EXIT, ENTER, HOLD]  # 4.522e-05 < 5e-05: out and straight back in
    assert [d.action for d in i] == [ENTER, HOLD, HOLD, HOLD]
    # at 2022-01-10T08:00 the fast EMA is 0.00007261 >= 5e-05 and the score
    # (0.4 * 0.00004522 / 0.0003 + 0.4 * 1/4) / 0.8 = 0.2003667 >= exit_score 0.1
    assert i[1].score == pytest.approx(0.2003667, abs=1e-7)


def test_improved_exits_when_the_fast_ema_falls_below_exit() -> None:
    params = FundingArbParams(improved=True, entry_score=0.5, **SMALL)
    decisions = run(params, RATES)
    # enters at 2022-01-11T00:00 (score 0.5455); at 2022-01-12T00:00 the fast EMA is
    # 0.00009387074 + 2/3 * (-0.00004772 - 0.00009387074) = -5.23e-07 < 3e-05
    assert [d.action for d in decisions[3:7]] == [ENTER, HOLD, HOLD, EXIT]
    assert "EMA_fast -5.23086e-07 past exit" in decisions[6].reason


def test_baseline_flag_ignores_every_improved_parameter() -> None:
    base = run(FundingArbParams(), RATES)
    tweaked = FundingArbParams(fast_span=2, slow_span=5, persistence_window=2, entry_score=0.9,
                               exit_score=0.8, weight_trend=0.0, min_scale=Decimal("0.1"))
    assert run(tweaked, RATES) == base
    assert target_notional(tweaked, 0.99, Decimal(50), Decimal(100), Decimal(0)) == \
        Decimal(10_000)  # fixed size: no conviction, no drawdown scaling


def test_decisions_never_use_a_later_settlement() -> None:
    params = FundingArbParams(improved=True, entry_score=0.5, **SMALL)
    original = run(params, RATES)
    for k in range(len(RATES)):
        for bump in (-0.003, 0.003):
            changed = [*RATES[:k], RATES[k] + bump, *RATES[k + 1:]]
            assert run(params, changed)[:k] == original[:k]
    rules = FundingArbRules(params)
    rules.observe(T0, 0.0001)
    with pytest.raises(ValueError, match="not after"):
        rules.observe(T0, 0.0001)
    with pytest.raises(ValueError, match="before settlement"):
        rules.decide(T0 - 1, 0.0001)


def test_conviction_sizing_is_decimal_and_scaled() -> None:
    params = FundingArbParams(improved=True, exposure_cap=Decimal(100_000))
    equity = peak = Decimal(100_000)
    # conviction (score - 0.6) / 0.4; scale 0.5 + 1.0 * conviction
    assert target_notional(params, 0.6, equity, peak, Decimal(0)) == Decimal("5000.00000000")
    assert target_notional(params, 0.8, equity, peak, Decimal(0)) == Decimal("10000.00000000")
    assert target_notional(params, 1.0, equity, peak, Decimal(0)) == Decimal("15000.00000000")
    size = target_notional(params, 0.7, equity, peak, Decimal(0))
    assert isinstance(size, Decimal)
    assert size == Decimal("7500.00000000")
    # 1/3 conviction quantized to 0.333333 before the Decimal product
    assert target_notional(params, 0.6 + 0.4 / 3, equity, peak, Decimal(0)) == \
        Decimal("8333.33000000")


def test_drawdown_steps_scale_entries_down() -> None:
    params = FundingArbParams(improved=True, exposure_cap=Decimal(100_000))
    peak = Decimal(100_000)
    assert drawdown_multiplier(params, Decimal("0.0099")) == 1
    assert drawdown_multiplier(params, Decimal("0.01")) == Decimal("0.5")
    assert drawdown_multiplier(params, Decimal("0.05")) == 0
    assert target_notional(params, 0.8, Decimal(99_500), peak, Decimal(0)) == Decimal(10_000)
    assert target_notional(params, 0.8, Decimal(99_000), peak, Decimal(0)) == Decimal(5_000)
    assert target_notional(params, 0.8, Decimal(98_000), peak, Decimal(0)) == 0


@pytest.mark.parametrize("improved", [False, True])
def test_the_exposure_cap_bounds_every_entry(improved: bool) -> None:
    params = FundingArbParams(improved=improved, exposure_cap=Decimal(25_000))
    equity = Decimal(100_000)
    for open_exposure in (Decimal(0), Decimal(10_000), Decimal("19999.5"), Decimal(25_000),
                          Decimal(30_000)):
        size = target_notional(params, 1.0, equity, equity, open_exposure)
        assert size >= 0
        assert size + open_exposure <= max(params.exposure_cap, open_exposure)
    assert target_notional(params, 1.0, equity, equity, Decimal("19999.5")) == Decimal("5000.5")


@pytest.mark.parametrize("bad", [
    {"entry_rate": 0.0001, "exit_rate": 0.0001},
    {"exit_rate": -0.0001},
    {"fast_span": 9, "slow_span": 9},
    {"persistence_window": 0},
    {"entry_score": 0.3, "exit_score": 0.3},
    {"weight_level": 0.0, "weight_persistence": 0.0},
    {"notional": Decimal(0)},
    {"min_scale": Decimal(2), "max_scale": Decimal(1)},
    {"drawdown_steps": ((Decimal("0.05"), Decimal("0.5")), (Decimal("0.02"), Decimal(0)))},
    {"drawdown_steps": ((Decimal("0.01"), Decimal("0.2")), (Decimal("0.02"), Decimal("0.5")))},
])
def test_parameters_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FundingArbParams(**bad)  # type: ignore[arg-type]
