"""The funding-arbitrage backtest on the shared data, hand-checked on 2022-01-01..2022-01-13.

Rows used (shared/data, epoch ms):
- BTCUSDT-funding-8h: 1640995200000 (2022-01-01T00:00Z) 0.0001 -> baseline entry;
  1641024000000 0.0001, 1641801600000 4.522e-05, 1641945600000 (2022-01-12T00:00Z) -4.772e-05
  -> exit (below 3e-05); 1641974400000 9.625e-05, 1642003200000 -5.342e-05 -> stay flat.
- BTCUSDT-1h opens: 1640998800000 (2022-01-01T01:00Z) 46656.14 (entry fill),
  1641024000000 47194.73, 1641801600000 42042.38, 1641945600000 42729.29 (funding marks),
  1641949200000 (2022-01-12T01:00Z) 42675.03 (exit fill).
Default costs: spot 0.1 % taker, perp 0.05 % taker, 1 bp slippage per leg; basis 2 bps + 1x the
predicted rate per entry and per exit.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from meridian_common.strategy.funding_arb import CARRY, ENTER, EXIT, FundingArbParams
from meridian_research.funding_arb import SymbolData, load_symbol, run_backtest
from meridian_research.funding_arb_walkforward import DEFAULT_GRID, markdown, walk_forward

JAN1 = 1640995200000
JAN13 = 1642032000000
DAY = 86_400_000


@pytest.fixture(scope="module")
def btc() -> SymbolData:
    return load_symbol("BTCUSDT", JAN1 - 10 * DAY, JAN13)


def test_small_window_trade_hand_checked(btc: SymbolData) -> None:
    result = run_backtest([btc], FundingArbParams(), JAN1, JAN13)
    [trade] = result.trades
    assert (trade.entry_ms, trade.exit_ms) == (1640998800000, 1641949200000)
    assert trade.direction == CARRY
    assert trade.quantity == Decimal("0.21433")  # floor(10000 / 46656.14, 1e-5)
    assert trade.notional == Decimal("9999.81048620")  # 0.21433 * 46656.14
    # each leg slipped 1 bp against itself: spot buys 46656.14 * 1.0001, perp sells * 0.9999
    assert (trade.spot_entry, trade.perp_entry) == (Decimal("46660.805614"),
                                                    Decimal("46651.474386"))
    assert (trade.spot_exit, trade.perp_exit) == (Decimal("42670.762497"),
                                                  Decimal("42679.297503"))
    # fees of both legs, entry and exit: 0.21433 * price * rate, to 1e-8
    fees = [Decimal("10.00081047"), Decimal("4.99940525"),  # spot 0.1 %, perp 0.05 % in
            Decimal("9.14562453"), Decimal("4.57372692")]  # and out
    assert trade.fees == sum(fees) == result.fees
    # basis: 9999.8104862 * (0.0002 + 0.0001) in, * (0.0002 + 0.00004772) out
    assert trade.basis == Decimal("2.99994315") + Decimal("2.47715305") == result.basis
    # the two legs cancel except for the four slippages:
    # 0.21433 * -0.0002 * (46656.14 + 42675.03) = -3.82926993322 -> -3.82926993 (1e-8 cash)
    legs = trade.quantity * ((trade.spot_exit - trade.spot_entry)
                             + (trade.perp_entry - trade.perp_exit))
    assert legs == Decimal("0.21433") * Decimal("-17.866234") == Decimal("-3.82926993322")
    assert trade.net == Decimal("-3.82926993") + trade.funding - trade.fees - trade.basis
    assert trade.net == Decimal("-8.90638829")
    assert result.equity[-1] == Decimal(100_000) + trade.net


def test_funding_per_settlement_hand_checked(btc: SymbolData) -> None:
    result = run_backtest([btc], FundingArbParams(), JAN1, JAN13)
    paid = {p.time_ms: p for p in result.payments}
    # filled at 01:00 on Jan 1: the 00:00 settlement is not held; 08:00 Jan 1 .. 00:00 Jan 12
    assert min(paid) == 1641024000000
    assert max(paid) == 1641945600000
    assert len(paid) == 33 == result.trades[0].settlements
    assert paid[1641024000000].amount == Decimal("1.01152465")  # 0.21433 * 47194.73 * 0.0001
    assert paid[1641801600000].amount == Decimal("0.40747486")  # * 42042.38 * 4.522e-05
    assert paid[1641945600000].amount == Decimal("-0.43702781")  # * 42729.29 * -4.772e-05: paid
    assert sum(p.amount for p in paid.values()) == result.funding == result.trades[0].funding
    assert result.metrics.funding_paid == pytest.approx(-float(result.funding))


def test_decisions_use_no_later_settlement(btc: SymbolData) -> None:
    base = run_backtest([btc], FundingArbParams(improved=True), JAN1, JAN13)
    k = btc.settle_ms.index(1641600000000)  # 2022-01-08T00:00Z
    rates = list(btc.rates)
    rates[k] = Decimal("-0.003")
    changed = run_backtest([replace(btc, rates=tuple(rates))], FundingArbParams(improved=True),
                           JAN1, JAN13)
    cut = base.times_ms.index(1641600000000)
    assert changed.times_ms[:cut] == base.times_ms[:cut]
    assert changed.equity[:cut] == base.equity[:cut]
    assert changed.decisions[:cut] == base.decisions[:cut]
    assert changed.decisions[cut] != base.decisions[cut]


def test_the_exposure_cap_holds_at_every_step() -> None:
    start, end = 1672531200000, 1672531200000 + 90 * DAY  # 2023-01-01 + 90 days
    data = [load_symbol(s, start - 10 * DAY, end) for s in ("BTCUSDT", "ETHUSDT")]
    for improved in (False, True):
        params = FundingArbParams(improved=improved, exposure_cap=Decimal(15_000),
                                  entry_score=0.5)
        result = run_backtest(data, params, start, end)
        assert all(e <= Decimal(15_000) for e in result.exposure)
        assert max(result.exposure) > Decimal(10_000)  # both symbols were held at once
        # the second pair got only the room left under the cap
        assert any(t.notional < Decimal(10_000) for t in result.trades)
        held = [(t.entry_ms, t.exit_ms, t.notional) for t in result.trades]
        for t, _, _ in held:
            assert sum(n for a, b, n in held if a <= t < b) <= Decimal(15_000)


def test_entries_fill_after_the_decision(btc: SymbolData) -> None:
    result = run_backtest([btc], FundingArbParams(), JAN1, JAN13)
    entries = [d for _, d in result.decisions if d.action == ENTER]
    exits = [d for _, d in result.decisions if d.action == EXIT]
    assert [d.time_ms for d in entries] == [JAN1]
    assert [d.time_ms for d in exits] == [1641945600000]
    assert result.trades[0].entry_ms > entries[0].time_ms


def test_walk_forward_report_compares_both_variants(btc: SymbolData) -> None:
    data = [load_symbol("BTCUSDT", JAN1 - 10 * DAY, JAN1 + 120 * DAY)]
    report = walk_forward(data, FundingArbParams(), JAN1, JAN1 + 120 * DAY, train_days=60,
                          test_days=30)
    assert [r["test"] for r in report["windows"]] == [["2022-03-02", "2022-04-01"],
                                                     ["2022-04-01", "2022-05-01"]]
    for row in report["windows"]:
        for variant in ("baseline", "improved"):
            assert row[variant]["chosen"]["entry_rate"] in DEFAULT_GRID["entry_rate"]
    for variant in ("baseline", "improved"):
        returns = [r[variant]["total_return"] for r in report["windows"]]
        expected = (1 + returns[0]) * (1 + returns[1]) - 1
        assert report["totals"][variant]["total_return"] == pytest.approx(expected)
    table = markdown(report)
    assert "| 1 | 2022-04-01..2022-05-01 |" in table
    assert "MODELLED, not observed" in table
