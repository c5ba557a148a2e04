"""Backtest a signal grid with vectorbt under the paper executor's fill rules and our margin
model: `simulate(wide, signals, ...) -> Backtest`.

One `vbt.Portfolio.from_signals` call simulates every column (combination x symbol). Around it:
- fills and stops: `execution` (next-open market fills, stops from the signal close checked
  from the fill candle on, re-priced by `meridian_common.triggers`; what vectorbt cannot do is
  listed there), fees and slippage from the shared `PaperFillModel` numbers (taker fee and
  slippage on market fills and stops, maker fee and no slippage on take-profits);
- sizes: `sizing.quantity_for_notional` at the signal's close (the risk gate's reference
  price), rounded down to the lot, for a budget of `notional` (fixed notional per entry) or
  `fraction` x `init_cash` (fixed fraction of the initial capital, not compounded, as the risk
  gate sizes), times the leverage. Unlike the risk gate's `fixed_notional` (whose notional is
  the position value at any leverage) the budget here is margin: leverage 2 doubles the
  position, so it doubles the PnL before fees;
- wallets: `margin_mode="isolated"` gives each symbol its own wallet (init_cash split evenly
  over the symbols of a combination) and liquidates single positions at
  `margin.liquidation_price_isolated`; `"cross"` gives a combination one wallet for all its
  symbols (vectorbt cash sharing, grouped by combination) liquidated as a whole (`accounts`);
- funding and leverage accounting: `accounts`.

Results: `Backtest.stats` per column, `Backtest.combos` per combination (what an optimizer
ranks; it must discard `liquidated` rows), `Backtest.trades` one row per round trip.
`Backtest.portfolio` is vectorbt's portfolio with the orders at their real fill candles and
prices; its value includes neither funding nor the leverage offset (use `Backtest.equity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import vectorbt as vbt

from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_research import accounts
from meridian_research.arrays import cumsum_rows
from meridian_research.data import Wide
from meridian_research.execution import (
    REASONS,
    SIGNAL,
    Costs,
    Market,
    Orders,
    entry_sizes,
    liquidation_distance,
    market,
    settle_orders,
    stops,
)
from meridian_research.signals import TrendSignals

Array = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
MarginMode = Literal["isolated", "cross"]
LeverageLike = float | int | npt.ArrayLike | pd.Series

DEFAULT_MMR = 0.005  # the risk gate's default maintenance margin rate
DEFAULT_LOT = 1e-5  # the risk gate's default quantity step


@dataclass(frozen=True, slots=True)
class Backtest:
    """The simulation's results (module docstring).

    equity: per wallet (isolated: per column; cross: per combination), quote currency.
    combo_equity: per combination (its wallets together).
    stats: per column: total_return, max_drawdown (of the column's wallet: in cross mode the
      shared one), trades (closed), pnl (net of fees and funding, open trades marked at the last
      close), fees, funding (paid; negative = received), liquidated, liquidated_at, ruined.
    combos: the same per combination (all its symbols' wallets together), and final_equity.
    dropped_reversals: reversal signals vectorbt dropped because a stop filled on that candle.
    unmatched_stops: stops vectorbt took where the executor's rule saw none (float ties).
    portfolio (a property): vectorbt's portfolio (module docstring).
    """

    equity: pd.DataFrame
    combo_equity: pd.DataFrame
    stats: pd.DataFrame
    combos: pd.DataFrame
    trades: pd.DataFrame
    margin_mode: MarginMode
    dropped_reversals: int
    unmatched_stops: int
    simulated: vbt.Portfolio = field(repr=False)  # the portfolio on the zoneless index
    index: pd.DatetimeIndex = field(repr=False)  # the real one
    _built: dict[str, vbt.Portfolio] = field(default_factory=dict, repr=False, compare=False)

    @property
    def portfolio(self) -> vbt.Portfolio:
        """vectorbt's portfolio on the data's own index, built on first use: building a
        portfolio on times with a zone costs vectorbt one Timestamp object per row (`_zoneless`),
        and the results above do not need it."""
        found = self._built.get("portfolio")
        if found is None:
            pf = self.simulated
            close = pd.DataFrame(pf.close.to_numpy(), index=self.index, columns=pf.wrapper.columns,
                                 copy=False)
            found = self._built.setdefault("portfolio", pf.replace(
                wrapper=pf.wrapper.replace(index=self.index), close=close))
        return found


@dataclass(frozen=True, slots=True)
class _Layout:
    """How the columns form combinations and wallets."""

    columns: pd.MultiIndex
    symbols: list[str]
    combo: Ints  # combination id per column
    combo_index: pd.Index
    wallet: Ints  # wallet id per column
    leverage: Array  # per column


def _layout(signals: TrendSignals, leverage: LeverageLike, margin_mode: MarginMode) -> _Layout:
    cols = signals.columns
    if signals.combo_levels:
        keys = cols.droplevel("symbol")
        combo, uniques = pd.factorize(keys)
        combo_index = pd.MultiIndex.from_tuples(list(uniques), names=signals.combo_levels) \
            if isinstance(keys, pd.MultiIndex) else pd.Index(uniques, name=keys.name)
    else:
        combo, combo_index = np.zeros(len(cols), dtype=np.int64), pd.RangeIndex(1, name="combo")
    combo = np.asarray(combo, dtype=np.int64)
    lev = _leverage(leverage, cols)
    if margin_mode == "cross":
        for g in range(len(combo_index)):
            if np.unique(lev[combo == g]).size > 1:
                raise ValueError("cross margin: one wallet has one leverage, but combination "
                                 f"{combo_index[g]} has {sorted(set(lev[combo == g]))}")
        wallet = combo
    else:
        wallet = np.arange(len(cols), dtype=np.int64)
    return _Layout(cols, signals.symbols, combo, combo_index, wallet, lev)


def _leverage(leverage: LeverageLike, cols: pd.MultiIndex) -> Array:
    if isinstance(leverage, pd.Series):
        lev = leverage.reindex(cols).to_numpy(dtype=np.float64)
    else:
        lev = np.broadcast_to(np.asarray(leverage, dtype=np.float64), (len(cols),)).copy()
    if np.isnan(lev).any() or (lev < 1.0).any() or (lev > 125.0).any():
        raise ValueError("leverage must be in [1, 125] for every column")
    return lev


def _budget(notional: float | None, fraction: float | None, init_cash: float,
            leverage: Array) -> Array:
    if (notional is None) == (fraction is None):
        raise ValueError("size by exactly one of notional (per entry) or fraction (of init_cash)")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        return init_cash * fraction * leverage
    if notional is None or not notional > 0.0:
        raise ValueError(f"notional must be > 0, got {notional}")
    return notional * leverage


def _fillable(signals: TrendSignals, next_open: Array) -> dict[str, npt.NDArray[np.bool_]]:
    """Signal arrays without the signals no candle follows (nothing could fill them)."""
    ok = ~np.isnan(next_open)
    return {name: np.ascontiguousarray(getattr(signals, name).to_numpy(dtype=bool) & ok)
            for name in ("long_entries", "long_exits", "short_entries", "short_exits")}


def simulate(wide: Wide, signals: TrendSignals, *, fees: FeeSchedule | None = None,
             slippage_bps: float | Decimal = 0, notional: float | None = 1000.0,
             fraction: float | None = None, leverage: LeverageLike = 1.0,
             margin_mode: MarginMode = "isolated", init_cash: float = 10_000.0,
             funding: bool = True, mmr: float = DEFAULT_MMR,
             lot: float = DEFAULT_LOT) -> Backtest:
    """Simulate every column of `signals` on `wide`'s candles (module docstring).

    fees / slippage_bps: as the paper executor's `PaperFillModel` (defaults: its defaults).
    notional: budget (margin) per entry; or fraction: of init_cash per entry (give one).
    leverage: one number, or one per column (array in column order, or a Series by column);
      in cross mode every symbol of a combination shares its wallet's leverage.
    init_cash: the capital of one combination (isolated: split evenly over its symbols).
    mmr: maintenance margin rate (single tier, `meridian_common.margin`).
    """
    if margin_mode not in ("isolated", "cross"):
        raise ValueError(f"margin_mode must be 'isolated' or 'cross', got {margin_mode!r}")
    model = PaperFillModel(fees or FeeSchedule(), Decimal(str(slippage_bps)))
    costs = Costs(float(model.fees.taker), float(model.fees.maker),
                  float(model.slippage_bps) / 10_000.0)
    lay = _layout(signals, leverage, margin_mode)
    m = market(wide, lay.symbols)
    next_open = m.columns("next_open")
    sig = _fillable(signals, next_open)
    liq = liquidation_distance(lay.leverage, mmr) if margin_mode == "isolated" else \
        np.full(len(lay.columns), np.nan)
    st = stops(m, sig["long_entries"], sig["short_entries"], signals.stop_loss.to_numpy(),
               signals.take_profit.to_numpy(), liq)
    wallet_cash = _wallet_cash(lay, init_cash, margin_mode)
    budget = _budget(notional, fraction, init_cash, lay.leverage)
    # Every array in one memory layout, whatever slicing made the signals: vectorbt's numba
    # kernel is compiled per layout (~5 s each; a single column is typed apart regardless,
    # because vectorbt's own call_seq and close arrays then look C-ordered).
    c = np.ascontiguousarray
    close = m.columns("close")
    pf = vbt.Portfolio.from_signals(
        pd.DataFrame(close, index=_zoneless(wide.index), columns=lay.columns, copy=False),
        entries=sig["long_entries"], exits=sig["long_exits"],
        short_entries=sig["short_entries"], short_exits=sig["short_exits"],
        size=c(entry_sizes(m, budget, lot, sig["long_entries"] | sig["short_entries"])),
        size_type="amount", price=c(next_open), fees=costs.taker,
        slippage=costs.slippage, open=c(m.columns("open")), high=c(m.columns("high")),
        low=c(m.columns("low")), sl_stop=c(st.sl_fraction), tp_stop=c(st.tp_fraction),
        stop_entry_price="price", stop_exit_price="stopmarket", upon_opposite_entry="reverse",
        accumulate=False, lock_cash=True, allow_partial=False,
        init_cash=wallet_cash * _wallet_values(lay, lay.leverage),
        cash_sharing=margin_mode == "cross",
        group_by=lay.combo if margin_mode == "cross" else None,
        use_stops=True, freq=wide.timeframe)
    orders = settle_orders(pf.order_records, m, st, costs, lay.leverage, mmr)
    pf = pf.replace(order_records=orders.records)
    return _book(wide, pf, orders, m, lay, wallet_cash, funding, mmr, margin_mode,
                 _dropped_reversals(orders, sig))


def _zoneless(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The same times without their zone, for vectorbt. It turns the index of every portfolio
    it builds into an array of objects, which for times with a zone means one Timestamp per row
    (0.17 s and ~50k objects for the garbage collector to count, for 52,915 rows) and for times
    without one is a view. Neither the simulation nor the trades look at the times (the
    timeframe is given as `freq`), so they run on these; `Backtest.portfolio` puts the real
    index back when asked for."""
    return index.tz_localize(None) if index.tz is not None else index


def _wallet_cash(lay: _Layout, init_cash: float, margin_mode: MarginMode) -> Array:
    """Each wallet's capital: a combination's init_cash, split over its symbols when isolated."""
    if margin_mode == "isolated":
        return init_cash / np.bincount(lay.combo)[lay.combo].astype(np.float64)
    return np.full(len(lay.combo_index), float(init_cash))


def _wallet_values(lay: _Layout, per_column: Array) -> Array:
    """A per-column value that is constant within each wallet, per wallet."""
    out = np.zeros(int(lay.wallet.max()) + 1)
    out[lay.wallet] = per_column
    return out


def _dropped_reversals(orders: Orders, sig: dict[str, npt.NDArray[np.bool_]]) -> int:
    """Stops that filled on a candle whose close signalled the opposite entry (vectorbt keeps
    one order per bar, so that entry is lost; module docstring of `execution`)."""
    rec = orders.records
    stop = orders.reason != SIGNAL
    i, col, side = rec["idx"][stop], rec["col"][stop], orders.closed_side[stop]
    opposite = np.where(side > 0, sig["short_entries"][i, col], sig["long_entries"][i, col])
    return int(opposite.sum())


def _book(wide: Wide, pf: vbt.Portfolio, orders: Orders, m: Market, lay: _Layout,
          wallet_cash: Array, funding: bool, mmr: float, margin_mode: MarginMode,
          dropped: int) -> Backtest:
    """Equity, liquidations, funding, stats and trades from the settled fills."""
    assets = accounts.positions(orders, (m.close.shape[0], m.symbol.size))
    paid = accounts.funding_paid(assets, m, accounts.funding_rates(wide)) if funding else \
        np.zeros_like(assets)
    n_wallets = len(wallet_cash)
    net = accounts.pnl_curves(orders, assets, m, paid)
    raw = wallet_cash + accounts.group_sum(net, lay.wallet, n_wallets)
    if margin_mode == "cross":
        liq_row = accounts.cross_liquidation(raw, lay.wallet, assets, m,
                                             accounts.entry_prices(orders, assets), mmr)
        wallets = accounts.end_wallets(raw, wallet_cash, liq_row)
    else:
        wallets = accounts.end_wallets(raw, wallet_cash,
                                       np.full(n_wallets, -1, dtype=np.int64))
        liq_row = accounts.isolated_liquidations(orders, len(lay.columns))
    wallets = accounts.Wallets(wallets.equity, wallet_cash, liq_row, wallets.ruined_row)
    trades = trade_frame(pf.trades.records, orders, paid, lay.columns, wide.index)
    wallet_index = lay.columns if margin_mode == "isolated" else lay.combo_index
    stats = column_stats(wallets, lay, orders, paid, trades, wide.index)
    k = len(lay.combo_index)
    wallet_combo = np.zeros(n_wallets, dtype=np.int64)
    wallet_combo[lay.wallet] = lay.combo
    combo_equity = accounts.group_sum(wallets.equity, wallet_combo, k)
    combo_init = np.bincount(wallet_combo, weights=wallet_cash, minlength=k)
    return Backtest(
        pd.DataFrame(wallets.equity, index=wide.index, columns=wallet_index, copy=False),
        pd.DataFrame(combo_equity, index=wide.index, columns=lay.combo_index, copy=False),
        stats, combo_stats(combo_equity, combo_init, lay, stats), trades, margin_mode, dropped,
        orders.unmatched, pf, wide.index)


def _times(index: pd.DatetimeIndex, rows: Ints) -> pd.DatetimeIndex:
    """Times of rows, NaT where the row is -1."""
    return index[np.maximum(rows, 0)].where(rows >= 0)


def trade_frame(rec: npt.NDArray[np.void], orders: Orders, paid: Array,
                columns: pd.MultiIndex, index: pd.DatetimeIndex) -> pd.DataFrame:
    """One row per (exit) trade: its column's levels, side, times, quantity, prices, fees,
    funding, net PnL and why it ended ('open' while still held at the end)."""
    n = len(index)
    col = rec["col"]
    closed = rec["status"] == 1
    end = np.where(closed, rec["exit_idx"], n)
    fund = _paid_between(paid, col, rec["entry_idx"], end)
    side = np.where(rec["direction"] == 0, 1, -1)
    reason = _exit_reasons(orders, col, rec["exit_idx"], side, n)
    levels = columns.to_frame(index=False).iloc[col].reset_index(drop=True)
    pnl = rec["pnl"] - fund
    frame = pd.DataFrame({
        "side": np.where(side > 0, "long", "short"),
        "status": np.where(closed, "closed", "open"),
        "entry_time": index[rec["entry_idx"]],
        "exit_time": _times(index, np.where(closed, rec["exit_idx"], -1)),
        "qty": rec["size"], "entry_price": rec["entry_price"],
        "exit_price": np.where(closed, rec["exit_price"], np.nan),
        "entry_fee": rec["entry_fees"], "exit_fee": rec["exit_fees"], "funding": fund,
        "pnl": pnl, "return": pnl / (rec["size"] * rec["entry_price"]),
        "exit_reason": np.where(closed, reason, "open"),
    })
    frame.insert(0, "column", col)
    return pd.concat([levels, frame], axis=1)


def _paid_between(paid: Array, col: Ints, start: Ints, end: Ints) -> Array:
    """Funding paid by each column over rows start .. end - 1 (settlement rows are sparse:
    summed over those only)."""
    rows = np.flatnonzero((paid != 0.0).any(axis=1))
    cum = cumsum_rows(np.vstack([np.zeros((1, paid.shape[1])), paid[rows]]))
    upto = np.searchsorted(rows, end), np.searchsorted(rows, start)
    return cum[upto[0], col] - cum[upto[1], col]


def _exit_reasons(orders: Orders, col: Ints, exit_idx: Ints, side: Ints,
                  n: int) -> npt.NDArray[np.str_]:
    """The reason of the order that closed each trade, found by (column, row, side closed):
    unique, as a candle has at most a market order at its open and a stop inside it, which
    close different sides."""
    rec = orders.records
    closing = orders.closed_side != 0
    keys = (rec["col"][closing] * (n + 1) + rec["idx"][closing]) * 2 + \
        (orders.closed_side[closing] > 0)
    lookup = dict(zip(keys.tolist(), orders.reason[closing].tolist(), strict=True))
    wanted = (col * (n + 1) + exit_idx) * 2 + (side > 0)
    names = [REASONS[lookup.get(k, SIGNAL)] for k in wanted.tolist()]
    return np.asarray(names, dtype=str)


def column_stats(w: accounts.Wallets, lay: _Layout, orders: Orders, paid: Array,
                 trades: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    n_cols = len(lay.columns)
    rec = orders.records
    per_col = trades["column"].to_numpy()
    closed = (trades["status"] == "closed").to_numpy()
    liq_row = w.liquidated_row if len(w.liquidated_row) == n_cols else \
        w.liquidated_row[lay.wallet]
    ruined = w.ruined_row[lay.wallet] >= 0
    return pd.DataFrame({
        "total_return": (w.equity[-1] / w.init - 1.0)[lay.wallet],
        "max_drawdown": accounts.max_drawdown(w.equity)[lay.wallet],
        "trades": np.bincount(per_col[closed], minlength=n_cols),
        "pnl": np.bincount(per_col, weights=trades["pnl"].to_numpy(), minlength=n_cols),
        "fees": np.bincount(rec["col"], weights=rec["fees"], minlength=n_cols),
        "funding": paid.sum(axis=0),
        "liquidated": (liq_row >= 0) | ruined,
        "liquidated_at": _times(index, liq_row),
        "ruined": ruined,
    }, index=lay.columns)


def combo_stats(equity: Array, init: Array, lay: _Layout, stats: pd.DataFrame) -> pd.DataFrame:
    """Per combination: its wallets' equity together, its columns' figures summed."""
    by = stats.groupby(lay.combo)
    out = pd.DataFrame({
        "total_return": equity[-1] / init - 1.0,
        "max_drawdown": accounts.max_drawdown(equity),
        "trades": by["trades"].sum().to_numpy(),
        "pnl": by["pnl"].sum().to_numpy(),
        "fees": by["fees"].sum().to_numpy(),
        "funding": by["funding"].sum().to_numpy(),
        "liquidated": by["liquidated"].any().to_numpy(),
        "final_equity": equity[-1],
    }, index=lay.combo_index)
    out.insert(len(out.columns) - 1, "liquidated_at",
               pd.to_datetime(by["liquidated_at"].min().to_list(), utc=True))
    return out
