"""simulate: vectorbt's fills under the paper executor's rules, leverage, funding and
liquidation, on real candles. vectorbt compiles once per session (the `bt` fixture)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from meridian.v1 import common_pb2, fill_pb2
from meridian_common import protection, triggers
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.margin import liquidation_price_isolated
from meridian_common.marketdata import CsvFundingSource, default_data_dir
from meridian_common.sizing import quantity_for_notional
from meridian_research.data import Wide, load_wide
from meridian_research.portfolio import Backtest, simulate
from meridian_research.signals import TrendFactory, TrendSignals

BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL
H = pd.Timedelta("1h")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


@pytest.fixture(scope="session")
def wide() -> Wide:
    return load_wide(symbols=("BTCUSDT", "ETHUSDT"), start="2023-01-01", end="2023-04-01")


@pytest.fixture(scope="session")
def sig(wide: Wide) -> TrendSignals:
    return TrendFactory().run(wide, allow_short=[False, True])


@pytest.fixture(scope="session")
def bt(wide: Wide, sig: TrendSignals) -> Backtest:
    return simulate(wide, sig, slippage_bps=2)  # the first call compiles vectorbt's numba code


def trade_at(bt: Backtest, key: tuple[Any, ...], entry: str) -> pd.Series:
    t = bt.trades
    match = t[(t["allow_short"] == key[0]) & (t["symbol"] == key[1])
              & (t["entry_time"] == ts(entry))]
    assert len(match) == 1
    return match.iloc[0]


# --------------------------------------------------------------------------- hand checks


def test_a_signal_fills_at_the_next_open_and_exits_at_the_open_after_the_exit(
        bt: Backtest) -> None:
    # BTCUSDT 2023-01-05 19:00 closes at 16863.85: the rules go long. 20:00 opens at 16864.29.
    t = trade_at(bt, (False, "BTCUSDT"), "2023-01-05 20:00")
    assert t["side"] == "long"
    assert t["qty"] == 0.05929  # 1000 / 16863.85 = 0.059298.. rounded down to the 1e-5 lot
    assert t["entry_price"] == pytest.approx(16864.29 * 1.0002, rel=1e-12)  # 2 bps slippage
    assert t["entry_fee"] == pytest.approx(0.05929 * 16864.29 * 1.0002 * 0.001, rel=1e-12)
    # the rules leave at the 2023-01-06 06:00 close; 07:00 opens at 16786.6
    assert t["exit_time"] == ts("2023-01-06 07:00")
    assert t["exit_price"] == pytest.approx(16786.6 * 0.9998, rel=1e-12)
    assert t["exit_reason"] == "signal"


def test_the_entry_candle_can_take_the_profit(bt: Backtest) -> None:
    # 2023-01-25 20:00 closes at 22938.09 (long); 21:00: open 22935.92, high 23700.0
    t = trade_at(bt, (False, "BTCUSDT"), "2023-01-25 21:00")
    assert t["entry_price"] == pytest.approx(22935.92 * 1.0002, rel=1e-12)
    # take-profit 3 % above the signal close, 23626.2327, traded through on the fill candle
    assert t["exit_time"] == ts("2023-01-25 21:00")
    assert t["exit_reason"] == "take_profit"
    assert t["exit_price"] == pytest.approx(22938.09 * 1.03, rel=1e-12)  # maker: no slippage
    assert t["exit_fee"] == pytest.approx(t["qty"] * 22938.09 * 1.03 * 0.001, rel=1e-12)


def test_the_entry_candle_can_stop_it_out(bt: Backtest) -> None:
    # 2023-02-27 15:00 closes at 23559.4 (long); 16:00: open 23557.66, low 23159.33
    t = trade_at(bt, (False, "BTCUSDT"), "2023-02-27 16:00")
    # stop 1.5 % below the signal close, 23206.009, touched on the fill candle
    assert t["exit_time"] == ts("2023-02-27 16:00")
    assert t["exit_reason"] == "stop_loss"
    assert t["exit_price"] == pytest.approx(23559.4 * 0.985 * 0.9998, rel=1e-12)  # taker


def test_returns_are_the_paper_fill_models_round_trips(wide: Wide, sig: TrendSignals) -> None:
    model = PaperFillModel(FeeSchedule(Decimal("0.0002"), Decimal("0.0005")), Decimal(3))
    bt = simulate(wide, sig, fees=model.fees, slippage_bps=model.slippage_bps, funding=False)
    closed = bt.trades[bt.trades["status"] == "closed"]
    checked = {"signal": 0, "take_profit": 0}
    for _, t in closed.iterrows():
        if t["exit_reason"] not in checked:
            continue
        s = t["symbol"]
        direction = common_pb2.DIRECTION_LONG if t["side"] == "long" else \
            common_pb2.DIRECTION_SHORT
        entry_open = wide.open.at[t["entry_time"], s]
        if t["exit_reason"] == "signal":
            exit_at, liquidity = wide.open.at[t["exit_time"], s], fill_pb2.LIQUIDITY_TAKER
        else:
            signal_close = wide.close.at[t["entry_time"] - H, s]
            sign = 1.0 if t["side"] == "long" else -1.0
            exit_at, liquidity = signal_close * (1 + sign * 0.03), fill_pb2.LIQUIDITY_MAKER
        expected = model.round_trip_return(direction, entry_open, exit_at, liquidity)
        assert t["return"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        checked[t["exit_reason"]] += 1
    assert min(checked.values()) > 20


# --------------------------------------------------------------------------- the paper path


def paper_replay(w: Wide, symbol: str, sig: TrendSignals, j: int, *, model: PaperFillModel,
                 budget: Decimal, leverage: Decimal, mmr: Decimal) -> tuple[list[dict], int]:
    """The executor's candle loop for one column, with its own objects: market orders at the
    next open (`PaperFillModel.market`), then the position's `protection.Guard` on the candle
    (`PaperFillModel.fill`), then the close's signal sized by `quantity_for_notional`."""
    o, h, lo, c = (getattr(w, f)[symbol].to_numpy() for f in ("open", "high", "low", "close"))
    le, lx, se, sx = (getattr(sig, n).iloc[:, j].to_numpy() for n in
                      ("long_entries", "long_exits", "short_entries", "short_exits"))
    sl, tp = sig.stop_loss.iloc[:, j].to_numpy(), sig.take_profit.iloc[:, j].to_numpy()
    rows = np.flatnonzero(w.present(symbol))
    trades: list[dict] = []
    pos, guard, pending, dropped = Decimal(0), None, None, 0

    def close(k: int, fill: Any, reason: str) -> None:
        trades[-1].update(exit_row=k, exit_price=float(fill.price), exit_fee=float(fill.fee),
                          reason=reason)

    for n, k in enumerate(rows.tolist()):
        t_ms = int(w.open_ms[k])
        if pending is not None:
            direction, qty, levels = pending
            pending = None
            if pos != 0 and (direction == 0 or (direction > 0) != (pos > 0)):
                close(k, model.market(SELL if pos > 0 else BUY, abs(pos), dec(o[k])), "signal")
                pos, guard = Decimal(0), None
            if direction != 0 and pos == 0 and qty > 0:
                f = model.market(BUY if direction > 0 else SELL, qty, dec(o[k]))
                pos = qty if direction > 0 else -qty
                guard = protection.guard(direction > 0, *levels, "", str(leverage), str(mmr),
                                         from_ms=t_ms, cause="replay")
                trades.append(dict(side=direction, entry_row=k, qty=float(qty),
                                   entry_price=float(f.price), entry_fee=float(f.fee)))
        if guard is not None and pos != 0:
            hit = guard.on_candle(t_ms, dec(o[k]), dec(h[k]), dec(lo[k]))
            if hit is not None:
                liq_fee = guard.liquidation_fee(abs(pos)) if hit.reason == triggers.LIQUIDATION \
                    else None
                close(k, model.fill(guard.exits.closing_side, abs(pos), hit, liq_fee), hit.reason)
                dropped += int(bool(se[k] if pos > 0 else le[k]))
                pos, guard = Decimal(0), None
        if n == rows.size - 1:
            break
        if le[k] or se[k]:
            sign = 1.0 if le[k] else -1.0
            qty = quantity_for_notional(budget, dec(c[k]), Decimal("0.00001"))
            levels = (repr(float(c[k] * (1.0 - sign * sl[k]))),
                      repr(float(c[k] * (1.0 + sign * tp[k]))))
            pending = (int(sign), qty, levels)
        elif (lx[k] and pos > 0) or (sx[k] and pos < 0):
            pending = (0, Decimal(0), ())
    return trades, dropped


def test_trades_are_the_paper_executors_candle_by_candle() -> None:
    w = load_wide(symbols=("BTCUSDT", "ETHUSDT"), start="2022-05-01", end="2022-07-01")
    sig = TrendFactory().run(w, allow_short=True, stop_loss=[0.01, 0.3],
                             take_profit=[0.02, 0.5], use_atr=[False, True])
    model = PaperFillModel(FeeSchedule(Decimal("0.0002"), Decimal("0.0005")), Decimal(3))
    bt = simulate(w, sig, fees=model.fees, slippage_bps=3, leverage=20, funding=False)
    reasons = set(bt.trades["exit_reason"])
    assert reasons >= {"signal", "stop_loss", "take_profit", "liquidation"}
    compared = dropped_total = 0
    for j, symbol in enumerate(sig.symbols):
        expected, dropped = paper_replay(w, symbol, sig, j, model=model, budget=Decimal(20_000),
                                         leverage=Decimal(20), mmr=Decimal("0.005"))
        dropped_total += dropped
        if dropped:
            continue  # vectorbt keeps one order per bar (execution module docstring)
        got = bt.trades[bt.trades["column"] == j]
        assert len(got) == len(expected)
        for e, (_, t) in zip(expected, got.iterrows(), strict=True):
            assert t["entry_time"] == w.index[e["entry_row"]]
            assert t["side"] == ("long" if e["side"] > 0 else "short")
            assert t["qty"] == pytest.approx(e["qty"], rel=1e-12)  # a reversal splits a fill
            assert t["entry_price"] == pytest.approx(e["entry_price"], rel=1e-12)
            assert t["entry_fee"] == pytest.approx(e["entry_fee"], abs=1e-8)
            if "exit_row" not in e:
                assert t["status"] == "open"
                continue
            assert t["exit_time"] == w.index[e["exit_row"]]
            assert t["exit_reason"] == e["reason"]
            assert t["exit_price"] == pytest.approx(e["exit_price"], rel=1e-12)
            assert t["exit_fee"] == pytest.approx(e["exit_fee"], abs=1e-8)
            compared += 1
    assert compared > 500
    assert bt.dropped_reversals == dropped_total
    assert bt.unmatched_stops == 0


# --------------------------------------------------------------------------- leverage


def test_leverage_2x_doubles_pnl_before_fees(wide: Wide, sig: TrendSignals) -> None:
    one = simulate(wide, sig, funding=False).trades
    two = simulate(wide, sig, funding=False, leverage=2).trades
    assert len(one) == len(two) > 100
    pd.testing.assert_series_equal(one["entry_time"], two["entry_time"])
    pd.testing.assert_series_equal(one["exit_time"], two["exit_time"])
    assert np.allclose(two["qty"], 2 * one["qty"], rtol=0, atol=1.01e-5)  # within one lot
    gross_one = one["pnl"] + one["entry_fee"] + one["exit_fee"]
    gross_two = two["pnl"] + two["entry_fee"] + two["exit_fee"]
    per_unit = (gross_two / two["qty"] - gross_one / one["qty"]).abs()
    assert (per_unit < 1e-9 * one["entry_price"]).all()  # the same price moves
    assert gross_two.sum() == pytest.approx(2 * gross_one.sum(), rel=2e-4)


def one_trade(w: Wide, symbol: str, at: str, side: str, stop: float,
              take: float) -> TrendSignals:
    """A single hand-made entry signal at the close of `at` (a column named by its symbol)."""
    cols = pd.MultiIndex.from_tuples([(symbol,)], names=["symbol"])
    none = pd.DataFrame(False, index=w.index, columns=cols)
    entry = none.copy()
    entry.loc[ts(at)] = True
    stop_frame = pd.DataFrame(np.nan, index=w.index, columns=cols)
    take_frame = stop_frame.copy()
    stop_frame.loc[ts(at)] = stop
    take_frame.loc[ts(at)] = take
    long_, short_ = (entry, none) if side == "long" else (none, entry)
    return TrendSignals(long_, none, short_, none, stop_frame, take_frame,
                        pd.DataFrame(np.int8(0), index=w.index, columns=cols),
                        pd.DataFrame({"symbol": [symbol]}, index=cols), [])


def test_leverage_per_column(wide: Wide, sig: TrendSignals) -> None:
    lev = pd.Series([1.0, 3.0, 1.0, 3.0], index=sig.columns)
    mixed = simulate(wide, sig, funding=False, leverage=lev).trades
    plain = simulate(wide, sig, funding=False).trades
    tripled = mixed["column"].isin([1, 3]).to_numpy()
    assert tripled.any()
    assert np.allclose(mixed["qty"][tripled], 3 * plain["qty"][tripled], rtol=0, atol=2.01e-5)
    assert (mixed["qty"][~tripled] == plain["qty"][~tripled]).all()


def test_a_signal_before_an_outage_fills_at_the_first_candle_after_it() -> None:
    w = load_wide(symbols=("BTCUSDT",), start="2023-03-24", end="2023-03-25")
    # the 12:00 candle is the last before the exchange's 13:00 outage; 14:00 opens at 28079.99
    bt = simulate(w, one_trade(w, "BTCUSDT", "2023-03-24 12:00", "long", 0.5, 0.5),
                  slippage_bps=1, funding=False)
    t = bt.trades.iloc[0]
    assert t["entry_time"] == ts("2023-03-24 14:00")
    assert t["entry_price"] == pytest.approx(28079.99 * 1.0001, rel=1e-12)


@pytest.fixture(scope="session")
def rally() -> Wide:
    # BTC from ~20.4k on 2023-03-12 to 26.4k on 03-14 (the USDC de-peg rebound)
    return load_wide(symbols=("BTCUSDT",), start="2023-03-08", end="2023-03-18")


def test_a_leveraged_short_in_a_rally_is_liquidated_at_margins_price(rally: Wide) -> None:
    sig = one_trade(rally, "BTCUSDT", "2023-03-12 00:00", "short", stop=0.5, take=0.5)
    bt = simulate(rally, sig, leverage=10, funding=False)
    t = bt.trades.iloc[0]
    fill_open = rally.open.at[ts("2023-03-12 01:00"), "BTCUSDT"]
    liq = liquidation_price_isolated("short", dec(fill_open), dec(t["qty"]), Decimal(10),
                                     Decimal("0.005"))
    assert liq == dec(fill_open) * Decimal("1.095")
    high = rally.high["BTCUSDT"]
    first = high[(high.index >= ts("2023-03-12 01:00")) & (high >= float(liq))].index[0]
    assert t["exit_reason"] == "liquidation"
    assert t["exit_time"] == first
    assert t["exit_price"] == float(liq)
    # the maintenance margin left is the fee: the loss is the initial margin (plus entry fee)
    margin = t["qty"] * fill_open / 10
    assert t["pnl"] == pytest.approx(-margin - t["entry_fee"], rel=1e-9)
    stats = bt.stats.iloc[0]
    assert stats["liquidated"]
    assert stats["liquidated_at"] == first
    assert bt.combos["liquidated"].iloc[0]


def test_cross_margin_carries_the_same_short_until_the_wallet_is_gone(rally: Wide) -> None:
    sig = one_trade(rally, "BTCUSDT", "2023-03-12 00:00", "short", stop=0.5, take=0.5)
    # 10x: isolated loses its margin at +9.5 %; the cross wallet (10k) carries the 10k short
    calm = simulate(rally, sig, leverage=10, margin_mode="cross", funding=False)
    assert not calm.stats["liquidated"].iloc[0]
    assert calm.trades["exit_reason"].iloc[0] == "open"
    assert calm.trades["pnl"].iloc[0] < -0.2 * 10_000  # carried through the rally
    # 50x: a 50k short on a 10k wallet; liquidated when the wallet at the candle's high falls
    # to the maintenance margin (qty x entry x 0.005)
    bt = simulate(rally, sig, leverage=50, margin_mode="cross", funding=False)
    t = bt.trades.iloc[0]
    equity_at_high = 10_000 + t["qty"] * (t["entry_price"] - rally.high["BTCUSDT"]) \
        - t["entry_fee"]
    after = rally.index >= t["entry_time"]
    below = equity_at_high[after] <= t["qty"] * t["entry_price"] * 0.005
    expected = equity_at_high[after][below].index[0]
    assert bt.stats["liquidated_at"].iloc[0] == expected
    assert bt.combos["liquidated"].iloc[0]
    assert (bt.equity.loc[expected:].to_numpy() == 0.0).all()
    isolated = simulate(rally, sig, leverage=50, funding=False)
    assert isolated.trades["exit_reason"].iloc[0] == "liquidation"
    assert isolated.stats["liquidated_at"].iloc[0] < expected  # 1/50 - mmr = 1.5 % away


def test_wallets_isolated_per_symbol_or_shared_across_them(wide: Wide,
                                                           sig: TrendSignals) -> None:
    iso = simulate(wide, sig, funding=False)
    cross = simulate(wide, sig, funding=False, margin_mode="cross")
    assert iso.equity.shape[1] == len(sig.columns)  # a wallet per column (5000 each)
    assert cross.equity.shape[1] == 2  # a wallet per combination (10000)
    assert (iso.equity.iloc[0] == 5000).all()
    # nothing liquidated, no entry refused: the same trades, the same combination equity
    pd.testing.assert_frame_equal(iso.trades, cross.trades)
    np.testing.assert_allclose(iso.combo_equity, cross.combo_equity, rtol=1e-12)
    assert not np.allclose(iso.stats["total_return"], cross.stats["total_return"])
    # 6000 of margin per entry: more than a 5000 isolated wallet holds, less than 10000 shared
    iso_big = simulate(wide, sig, funding=False, notional=6000)
    cross_big = simulate(wide, sig, funding=False, notional=6000, margin_mode="cross")
    assert len(iso_big.trades) == 0
    assert len(cross_big.trades) > 0
    held = cross_big.portfolio.assets().to_numpy() != 0
    for g in range(2):  # never both symbols of a combination at once
        assert not (held[:, 2 * g] & held[:, 2 * g + 1]).any()


# --------------------------------------------------------------------------- funding


def test_funding_is_qty_x_price_x_rate_at_each_settlement_held(wide: Wide,
                                                               bt: Backtest) -> None:
    rates = {pd.Timestamp(t, unit="ms", tz="UTC"): float(r)
             for t, r in CsvFundingSource(default_data_dir(), "BTCUSDT").rows()}
    trades = bt.trades[(bt.trades["symbol"] == "BTCUSDT") & (bt.trades["status"] == "closed")]
    longs_paid = shorts_paid = 0
    for _, t in trades.iterrows():
        sign = 1.0 if t["side"] == "long" else -1.0
        expected = 0.0
        for when, rate in rates.items():
            candle = when - H  # the candle closing at the settlement
            if t["entry_time"] <= candle < t["exit_time"]:
                expected += sign * t["qty"] * wide.close.at[candle, "BTCUSDT"] * rate
        assert t["funding"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        longs_paid += int(sign > 0 and expected > 0)
        shorts_paid += int(sign < 0 and expected < 0)  # shorts receive positive rates
    assert longs_paid > 20
    assert shorts_paid > 5
    # funding is in the equity: final equity = wallet + every trade's net PnL
    final = bt.equity.iloc[-1].to_numpy()
    np.testing.assert_allclose(final - 5000, bt.stats["pnl"].to_numpy(), atol=1e-6)
    by_column = bt.trades.groupby("column")["funding"].sum()
    np.testing.assert_allclose(bt.stats["funding"].to_numpy(), by_column.to_numpy(), atol=1e-9)


# --------------------------------------------------------------------------- interface


def test_results_are_indexed_by_column_and_combination(bt: Backtest,
                                                       sig: TrendSignals) -> None:
    assert bt.stats.index.equals(sig.columns)
    assert list(bt.combos.index) == [False, True]
    assert bt.combos.index.name == "allow_short"
    assert {"total_return", "max_drawdown", "trades", "pnl", "fees", "funding", "liquidated",
            "liquidated_at"} <= set(bt.stats.columns)
    assert {"allow_short", "symbol", "side", "entry_time", "exit_time", "qty", "entry_price",
            "exit_price", "pnl", "funding", "exit_reason"} <= set(bt.trades.columns)
    assert (bt.stats["max_drawdown"].between(0, 1)).all()
    assert not bt.stats["liquidated"].any()
    assert bt.combos["trades"].sum() == (bt.trades["status"] == "closed").sum()


def test_bad_arguments_are_refused(wide: Wide, sig: TrendSignals) -> None:
    with pytest.raises(ValueError, match="margin_mode"):
        simulate(wide, sig, margin_mode="portfolio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        simulate(wide, sig, fraction=0.1)
    with pytest.raises(ValueError, match="one leverage"):
        simulate(wide, sig, margin_mode="cross", leverage=[1, 2, 1, 2])
    with pytest.raises(ValueError, match="slippage_bps"):
        simulate(wide, sig, slippage_bps=5000)


def test_fraction_sizing_uses_the_initial_capital(wide: Wide, sig: TrendSignals) -> None:
    bt = simulate(wide, sig, notional=None, fraction=0.05, leverage=3, funding=False)
    t = bt.trades.iloc[0]
    signal_close = wide.close.at[t["entry_time"] - H, t["symbol"]]
    assert t["qty"] == float(quantity_for_notional(Decimal(1500), dec(signal_close),
                                                   Decimal("0.00001")))


def test_the_portfolio_is_on_the_data_s_own_index(wide: Wide, sig: TrendSignals,
                                                  bt: Backtest) -> None:
    # simulated on the times without their zone (cheaper for vectorbt), handed out on the real
    # index, built once
    assert bt.simulated.wrapper.index.tz is None
    pf = bt.portfolio
    assert pf is bt.portfolio
    assert pf.wrapper.index.equals(wide.index)
    assert pf.wrapper.index.tz is not None
    assert pf.wrapper.columns.equals(sig.columns)
    assert pf.close.index.equals(wide.index)
    np.testing.assert_array_equal(pf.close.to_numpy(),
                                  wide.close[sig.symbols].to_numpy())
    np.testing.assert_array_equal(pf.order_records, bt.simulated.order_records)
    assert len(pf.trades.records) == len(bt.trades)
