"""What vectorbt does not book: leverage, funding and liquidation, on top of its fills.

Leverage. vectorbt has no leverage: each wallet is given to it as wallet x leverage of cash (so
an entry is refused when its margin, notional / leverage, exceeds the free wallet) and the
entries are sized at budget x leverage. The equity is booked here from the settled fills
(`pnl_curves`): wallet + cash flows of the fills + positions at the close - funding paid, which
is vectorbt's value less the wallet x (leverage - 1) of borrowed buying power.

Funding (the ledger's rule, `meridian_ledger`): a settlement at time T is paid on the candle
whose close is the first at or after T (for an 8h settlement on hourly candles, the candle
ending at T), on the position held through that candle (fills up to its open, stop exits inside
it included), valued at its close: paid = position x close x rate, so a long pays a positive
rate and a short receives it. Only settlements the data has are paid (the shared data has no
funding before 2022 for BTC, 2023 for ETH): none are invented.

Liquidation.
- isolated: per trade, in the fills (`execution`): an exit at the liquidation price;
- cross: the whole wallet, per candle: equity with every open position at its adverse extreme
  of the candle (a long at the low, a short at the high, which need not coincide) at or below
  the maintenance margin (`margin.maintenance_margin`: position value at entry x mmr, summed)
  liquidates the account. The maintenance margin is kept by the exchange as in the isolated
  rule, so the equity is 0 from that candle on (the trades vectorbt simulated after it stay in
  the trade list; the flag says the column's result is void).
A wallet whose equity reaches 0 or less is ruined from there (as `meridian_common.performance`
treats ruin): its equity stays at that mark. Liquidated and ruined wallets are flagged; their
numbers are not results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from meridian_research.arrays import cummax_rows, cumsum_rows, ffill_rows
from meridian_research.data import Wide, to_ms
from meridian_research.execution import LIQUIDATION, Market, Orders

Array = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def funding_rates(wide: Wide) -> Array:
    """Per row and symbol, the sum of the funding rates settled on that candle (0 elsewhere)."""
    n = len(wide.index)
    step = int(pd.Timedelta(wide.timeframe).total_seconds() * 1000)
    per_symbol = np.zeros((n, len(wide.symbols)))
    open_ms = wide.open_ms
    for k, symbol in enumerate(wide.symbols):
        rates = wide.funding.get(symbol)
        rows = np.flatnonzero(wide.present(symbol))
        if rates is None or rates.empty or rows.size == 0:
            continue
        times = to_ms(rates.index)  # type: ignore[arg-type]
        # paid on the first candle closing at or after the settlement; settlements at or
        # before the first open belong to candles before the data
        at = np.searchsorted(open_ms[rows], times - step, side="left")
        ok = (at < rows.size) & (times > open_ms[rows[0]])
        np.add.at(per_symbol[:, k], rows[at[ok]], rates.to_numpy()[ok])
    return per_symbol


def funding_paid(assets: Array, m: Market, rates: Array) -> Array:
    """Per row and column: position x close x rate (0 where nothing settles)."""
    paid = np.zeros(assets.shape)
    rows = np.flatnonzero((rates != 0.0).any(axis=1))
    if rows.size:
        rate = rates[rows][:, m.symbol]
        close = np.nan_to_num(m.close[rows][:, m.symbol])
        paid[rows] = np.where(rate != 0.0, assets[rows] * close * rate, 0.0)
    return paid


def _last_in_cell(rec: npt.NDArray[np.void]) -> npt.NDArray[np.bool_]:
    """The last order of each (row, column) cell (records sorted by column, then sequence)."""
    key = rec["col"] * (int(rec["idx"].max(initial=0)) + 1) + rec["idx"]
    return np.r_[key[1:] != key[:-1], True] if key.size else np.zeros(0, dtype=bool)


def positions(orders: Orders, shape: tuple[int, int]) -> Array:
    """Each column's position at the end of each row (after every fill on that candle)."""
    rec = orders.records
    last = _last_in_cell(rec)
    marks = np.full(shape, np.nan)
    marks[0] = 0.0
    marks[rec["idx"][last], rec["col"][last]] = orders.position[last]
    return ffill_rows(marks)


def pnl_curves(orders: Orders, assets: Array, m: Market, paid: Array) -> Array:
    """Each column's PnL after fees and funding at each row's close: cash flows of its fills
    and funding plus its position at the close (the symbol's last close on rows it has none)."""
    rec = orders.records
    signed = np.where(rec["side"] == 0, rec["size"], -rec["size"])
    flow = -paid
    np.add.at(flow, (rec["idx"], rec["col"]), -signed * rec["price"] - rec["fees"])
    marks = np.take(np.nan_to_num(ffill_rows(m.close)), m.symbol, axis=1)
    return cumsum_rows(flow) + assets * marks


def entry_prices(orders: Orders, assets: Array) -> Array:
    """Per row and column, the fill price of the open position's entry (NaN when flat)."""
    rec = orders.records
    opened = np.full(assets.shape, np.nan)
    # orders are sorted by sequence within a column: the last write to a cell is its last order
    opens = (orders.closed_side == 0) | _reverses(orders)
    opened[rec["idx"][opens], rec["col"][opens]] = rec["price"][opens]
    filled = ffill_rows(opened)
    return np.where(assets != 0.0, filled, np.nan)


def _reverses(orders: Orders) -> npt.NDArray[np.bool_]:
    """Orders that close one side and open the other in one fill."""
    rec = orders.records
    sign = np.where(rec["side"] == 0, 1, -1)
    return (orders.closed_side != 0) & (sign == orders.closed_side)


@dataclass(frozen=True, slots=True)
class Wallets:
    """Equity per wallet (rows x wallets) and what ended each."""

    equity: Array
    init: Array  # each wallet's capital
    liquidated_row: Ints  # first row of a liquidation, -1 if none
    ruined_row: Ints  # first row with equity <= 0, -1 if none


def cross_liquidation(equity: Array, groups: Ints, assets: Array, m: Market, entry: Array,
                      mmr: float) -> Ints:
    """First row per wallet (group of columns) where the equity, every position at its adverse
    extreme of the candle, is at or below the maintenance margin; -1 if never."""
    pos = np.nan_to_num(assets)
    close = m.columns("close")
    adverse = np.where(pos > 0, m.columns("low"), np.where(pos < 0, m.columns("high"), close))
    shift = np.where(pos != 0.0, pos * (adverse - close), 0.0)
    maint = np.where(pos != 0.0, np.abs(pos) * np.nan_to_num(entry) * mmr, 0.0)
    n_groups = equity.shape[1]
    worst = equity + group_sum(np.nan_to_num(shift), groups, n_groups)
    mm = group_sum(maint, groups, n_groups)
    hit = (mm > 0.0) & (worst <= mm)
    return np.where(hit.any(axis=0), hit.argmax(axis=0), -1)


def group_sum(values: Array, groups: Ints, n_groups: int) -> Array:
    """Columns summed per group (groups are contiguous blocks of columns, in order)."""
    if n_groups == values.shape[1]:
        return values
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    if starts.size != n_groups or (np.diff(groups) < 0).any():
        raise ValueError("groups must be contiguous blocks of columns numbered in order")
    return np.add.reduceat(values, starts, axis=1)


def end_wallets(equity: Array, init: Array, liquidated_row: Ints) -> Wallets:
    """Apply the end of a wallet: 0 from a cross liquidation on, and ruin as absorbing."""
    eq = equity.copy()
    for w in np.flatnonzero(liquidated_row >= 0):
        eq[liquidated_row[w]:, w] = 0.0
    ruin = eq <= 0.0
    ruined_row = np.where(ruin.any(axis=0), ruin.argmax(axis=0), -1)
    for w in np.flatnonzero(ruined_row >= 0):
        eq[ruined_row[w]:, w] = eq[ruined_row[w], w]
    return Wallets(eq, init, liquidated_row, ruined_row)


def max_drawdown(equity: Array) -> Array:
    """Largest fall below the running peak per column, as a fraction in [0, 1] (1 after ruin)."""
    peak = cummax_rows(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0.0, 1.0 - equity / peak, 1.0)
    # clipped after the maximum, not before: the same figure (clipping keeps the order) for
    # one pass over the column's largest value instead of all rows
    return np.clip(dd.max(axis=0), 0.0, 1.0)  # type: ignore[no-any-return]


def isolated_liquidations(orders: Orders, n_cols: int) -> Ints:
    """First row per column at which an isolated position was liquidated; -1 if never."""
    out = np.full(n_cols, -1, dtype=np.int64)
    rec = orders.records
    hit = np.flatnonzero(orders.reason == LIQUIDATION)
    for n in hit[::-1].tolist():  # the earliest row wins
        col = int(rec["col"][n])
        row = int(rec["idx"][n])
        if out[col] < 0 or row < out[col]:
            out[col] = row
    return out
