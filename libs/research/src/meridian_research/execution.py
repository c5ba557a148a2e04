"""The paper executor's fill rules on vectorbt: what `portfolio.simulate` gives
`Portfolio.from_signals`, and how it turns vectorbt's orders into the executor's fills.

Timing. A signal is known at its candle's close and its market order fills at the open of the
symbol's next candle. The executor then checks the new position's protective exits against
that same candle (its open, high and low): a position can be stopped out on the candle it was
entered on. vectorbt checks stops only from the bar after an order, so the orders are placed
on the signal's own bar with the *next* open as their price (`Market.next_open`): vectorbt's
first stop check is then on the fill candle, as in the executor, and its stops sort before the
bar's signal as the executor's stops of candle k come before the market orders at the open of
k + 1. Afterwards every signal order is moved to the candle it filled on (`Market.fill_row`), so
positions, equity and trades carry the real fill times.

Stops. Levels are the signals service's (a distance from the signal candle's close, not from
the fill), given to vectorbt as fractions of the fill open. vectorbt decides on which candle a
stop exits; the price and fee of that exit are then re-decided by `meridian_common.triggers`
(`check`, the executor's own rule) on that candle:
- stop-loss (taker): a touch of the level, slipped like a market order; a candle opening beyond
  it exits at that open (vectorbt agrees);
- take-profit (maker): only a trade *through* the level fills (vectorbt fills on a touch: its
  level is moved out by 1e-12 so a touch does not trigger), at the level itself, also when a
  candle gaps through it (vectorbt would take the better open), no slippage, maker fee;
- both in one candle: the stop wins, unless the candle opened beyond the take-profit (then the
  take-profit filled first): vectorbt checks its stop first either way, the re-decision fixes
  the price and reason on that same candle;
- isolated margin above 1x: the liquidation price `margin.liquidation_price_isolated` from the
  fill open is a stop too (the nearer of it and the stop-loss is given to vectorbt); when hit,
  also through a gap, the exit is at the liquidation price with the maintenance margin left as
  the fee (`PaperFillModel.fill`), so the loss is the initial margin.

What vectorbt cannot do, and what that changes:
- One order per column and bar: a signal that reverses a position (long -> short) on the candle
  where the position was stopped out is dropped; the executor would open the new side at the
  next open (the rules, still in the old position, do not signal that side again). `Backtest`
  counts these (`dropped_reversals`): 1.3-1.8 % of the trades in sweeps of the four symbols
  over 2022-2023 with 1-2 % stops. An exit signal on such a candle is dropped too, as the
  executor refuses it (a reduce-only order with nothing to reduce).
- Its stop levels are the fill open x (1 -/+ fraction), equal to the service's levels to within
  a few float ulps, and the service rounds its prices to the close's decimals: a candle whose
  low is within that rounding of a stop can decide differently.
- Cash: vectorbt refuses an entry (as a whole: no partial fills) whose notional exceeds its
  free cash. With the wallet x leverage as vectorbt's cash (see `portfolio`) that is "margin <=
  free wallet" (realized PnL included), close to the risk gate's rule (margin of all positions
  <= initial capital); the gate's other limits (position and exposure caps, breakers,
  cooldowns) and the trailing stop (off by default) are not modelled.
- Sizing is at the signal's close, as the gate sizes at the signal's reference price; the
  fill is at the next open (the same in both paths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import pandas as pd

from meridian_common import margin, sizing, triggers
from meridian_research.data import Wide

Array = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

# Exit reasons of an order (what closed the position it closes).
SIGNAL, STOP_LOSS, TAKE_PROFIT, LIQUIDATION = 0, 1, 2, 3
REASONS = {SIGNAL: "signal", STOP_LOSS: "stop_loss", TAKE_PROFIT: "take_profit",
           LIQUIDATION: "liquidation"}
_TRIGGER_REASON = {triggers.STOP_LOSS: STOP_LOSS, triggers.TAKE_PROFIT: TAKE_PROFIT,
                   triggers.LIQUIDATION: LIQUIDATION}
# A take-profit fills when the price trades through it: vectorbt's level goes this much further.
THROUGH = 1e-12


@dataclass(frozen=True, slots=True)
class Costs:
    """The paper fill model's numbers as floats (`PaperFillModel`: fees and slippage)."""

    taker: float
    maker: float
    slippage: float  # fraction (bps / 10_000)


@dataclass(frozen=True, slots=True)
class Market:
    """The symbols' candles on the wide axis (rows x symbols), where their orders fill, and the
    symbol of each column (`columns` spreads a field over the columns for vectorbt)."""

    open: Array
    high: Array
    low: Array
    close: Array
    next_open: Array  # the open of the symbol's next candle (NaN at its last one)
    fill_row: Ints  # the row of that candle (-1 where there is none)
    symbol: Ints  # per column: its symbol's index

    def columns(self, field: str) -> Array:
        return np.take(getattr(self, field), self.symbol, axis=1)

    def at(self, field: str, rows: Ints, cols: Ints) -> Array:
        """A field at (row, column) pairs."""
        return getattr(self, field)[rows, self.symbol[cols]]  # type: ignore[no-any-return]


def market(wide: Wide, column_symbols: list[str]) -> Market:
    """The candles of `wide`, and each column's symbol."""
    symbols = wide.symbols
    take = np.array([symbols.index(s) for s in column_symbols], dtype=np.intp)
    o, h, lo, c = (getattr(wide, f).to_numpy(dtype=np.float64)
                   for f in ("open", "high", "low", "close"))
    n = c.shape[0]
    next_open = np.full((n, len(symbols)), np.nan)
    fill_row = np.full((n, len(symbols)), -1, dtype=np.int64)
    for k in range(len(symbols)):
        rows = np.flatnonzero(~np.isnan(c[:, k]))
        next_open[rows[:-1], k] = o[rows[1:], k]
        fill_row[rows[:-1], k] = rows[1:]
    return Market(o, h, lo, c, next_open, fill_row, take)


def liquidation_distance(leverage: Array, mmr: float) -> Array:
    """The isolated liquidation price's distance from the entry as a fraction of it
    (1/L - mmr, `margin.liquidation_price_isolated`); NaN at 1x (nothing to liquidate)."""
    with np.errstate(divide="ignore"):
        return np.where(leverage > 1.0, 1.0 / leverage - mmr, np.nan)


@dataclass(frozen=True, slots=True)
class Stops:
    """vectorbt's stop fractions of the fill (rows x columns, at entry rows), and the exact
    levels (the service's) of each entry, found by `levels`."""

    sl_fraction: Array  # the nearer of the stop-loss and the isolated liquidation
    tp_fraction: Array
    keys: Ints  # column x rows + row of each entry, ascending
    sl_level: Array  # per entry
    tp_level: Array

    def levels(self, rows: Ints, cols: Ints) -> tuple[Array, Array]:
        """(stop-loss, take-profit) levels of the entries at (row, column) pairs."""
        n = self.sl_fraction.shape[0]
        at = np.searchsorted(self.keys, cols * n + rows)
        return self.sl_level[at], self.tp_level[at]


def stops(m: Market, long_entries: Mask, short_entries: Mask, stop_loss: Array,
          take_profit: Array, liq_distance: Array) -> Stops:
    """Levels from the signal close, as vectorbt fractions of the next open (clipped at 0: a
    fill open already beyond a level exits at that open on the fill candle, as `check` does).
    Only entry rows carry stops (NaN elsewhere)."""
    cols, rows = np.nonzero((long_entries | short_entries).T)  # column-major: keys ascend
    long_ = long_entries[rows, cols]
    c, p = m.at("close", rows, cols), m.at("next_open", rows, cols)
    sl_d, tp_d = stop_loss[rows, cols], take_profit[rows, cols]
    sl_level = np.where(long_, c * (1.0 - sl_d), c * (1.0 + sl_d))
    tp_level = np.where(long_, c * (1.0 + tp_d), c * (1.0 - tp_d))
    with np.errstate(invalid="ignore"):
        sl = np.where(long_, 1.0 - sl_level / p, sl_level / p - 1.0)
        tp = np.where(long_, tp_level * (1.0 + THROUGH) / p - 1.0,
                      1.0 - tp_level * (1.0 - THROUGH) / p)
    sl_fraction = np.full(long_entries.shape, np.nan)
    tp_fraction = np.full(long_entries.shape, np.nan)
    sl_fraction[rows, cols] = np.fmin(np.maximum(sl, 0.0), liq_distance[cols])
    tp_fraction[rows, cols] = np.maximum(tp, 0.0)
    keys = cols.astype(np.int64) * long_entries.shape[0] + rows
    return Stops(sl_fraction, tp_fraction, keys, sl_level, tp_level)


def entry_sizes(m: Market, budget: Array, lot: float, entries: Mask) -> Array:
    """Quantities at the entry rows: `sizing.quantity_for_notional` (exact decimals, the most
    whole lots whose value at the signal close, the risk gate's reference price, fits the
    budget), called once per distinct (close, budget) pair; 0 elsewhere."""
    size = np.zeros(entries.shape)
    rows, cols = np.nonzero(entries)
    if rows.size == 0:
        return size
    budget_code, budgets = pd.factorize(budget)
    key = (m.symbol[cols] * entries.shape[0] + rows) * len(budgets) + budget_code[cols]
    _, first, which = np.unique(key, return_index=True, return_inverse=True)
    step = Decimal(repr(lot))
    closes = m.at("close", rows[first], cols[first]).tolist()
    qty = [float(sizing.quantity_for_notional(_money(b), Decimal(repr(p)), step))
           for p, b in zip(closes, budget[cols[first]].tolist(), strict=True)]
    size[rows, cols] = np.asarray(qty)[which]
    return size


def _money(x: float) -> Decimal:
    """A float budget as the decimal it stands for (10_000 x 0.1 x 3 is 3000, not
    3000.0000000000005)."""
    return Decimal(repr(round(x, 8)))


@dataclass(frozen=True, slots=True)
class Orders:
    """vectorbt's order records, sorted by (column, sequence), moved to their fill candles and
    re-priced by the executor's rules, with what each one closed."""

    records: npt.NDArray[np.void]
    reason: Ints  # REASONS code of the position the order closes (SIGNAL for pure entries)
    closed_side: Ints  # +1 / -1 for the side of the position it closes, 0 if it closes none
    position: Array  # the column's position after the order
    unmatched: int  # stops vectorbt took that `triggers.check` does not see (float ties)


def _positions(rec: npt.NDArray[np.void]) -> tuple[Array, Array]:
    """(position before, position after) each order, per column (records sorted by column)."""
    signed = np.where(rec["side"] == 0, rec["size"], -rec["size"])
    # summed within each column only (a running sum over all columns would carry rounding from
    # other columns' sizes into this one's flat positions)
    after = pd.Series(signed).groupby(rec["col"]).cumsum().to_numpy()
    after = np.where(np.abs(after) <= 1e-9 * np.abs(signed), 0.0, after)
    return after - signed, after


def _vbt_stop_hit(long: Mask, p: Array, sl: Array, tp: Array, o: Array, h: Array,
                  lo: Array) -> Mask:
    """vectorbt's stop decision (`get_stop_price_nb`) with its own arithmetic."""
    with np.errstate(invalid="ignore"):
        sl_price = np.where(long, p * (1.0 - sl), p * (1.0 + sl))
        tp_price = np.where(long, p * (1.0 + tp), p * (1.0 - tp))
        in_range_sl = (lo <= sl_price) & (sl_price <= h)
        in_range_tp = (lo <= tp_price) & (tp_price <= h)
        gap_sl = np.where(long, o <= sl_price, sl_price <= o)
        gap_tp = np.where(long, tp_price <= o, o <= tp_price)
    return gap_sl | in_range_sl | gap_tp | in_range_tp


def settle_orders(rec: npt.NDArray[np.void], m: Market, s: Stops, costs: Costs,
                  leverage: Array, mmr: float) -> Orders:
    """Sort, re-time and re-price vectorbt's orders (module docstring)."""
    rec = rec[np.lexsort((rec["id"], rec["col"]))]
    if rec.size == 0:
        none = np.zeros(0, dtype=np.int64)
        return Orders(rec, none, none, np.zeros(0), 0)
    before, after = _positions(rec)
    opening = (after != 0.0) & (np.sign(after) != np.sign(before))
    last_open = np.maximum.accumulate(np.where(opening, np.arange(rec.size), 0))
    entry = np.r_[0, last_open[:-1]]  # the order that opened the position held before
    col, i = rec["col"], rec["idx"]
    e_idx = i[entry]
    held = before != 0.0
    stop = held & _vbt_stop_hit(before > 0, m.at("next_open", e_idx, col),
                                s.sl_fraction[e_idx, col], s.tp_fraction[e_idx, col],
                                m.at("open", i, col), m.at("high", i, col), m.at("low", i, col))
    out = rec.copy()
    out["idx"] = np.where(stop, i, m.at("fill_row", i, col))
    reason = np.full(rec.size, SIGNAL, dtype=np.int64)
    at = np.flatnonzero(stop)
    e, k, j = e_idx[at], i[at], col[at]
    long = before[at] > 0
    # The rule's decision depends only on these; sweeps repeat the same trade in many columns,
    # so each distinct case is decided once.
    cases = np.column_stack([long, m.at("next_open", e, j), *s.levels(e, j), leverage[j],
                             m.at("open", k, j), m.at("high", k, j), m.at("low", k, j)])
    distinct, which = _distinct_rows(cases)
    decided = [_decide(*case, mmr=mmr) for case in distinct.tolist()]
    code = np.array([d[0] for d in decided], dtype=np.int64)[which]
    level = np.array([d[1] for d in decided], dtype=np.float64)[which]
    matched = code > 0
    price, fee = _exit_fills(code, level, long, rec["size"][at], cases[:, 1], costs, mmr)
    out["price"][at] = np.where(matched, price, rec["price"][at])
    out["fees"][at] = np.where(matched, fee, rec["fees"][at])
    guess = np.where((rec["price"][at] < cases[:, 1]) == long, STOP_LOSS, TAKE_PROFIT)
    reason[at] = np.where(matched, code, guess)
    closed_side = np.where(held & ((after == 0.0) | opening), np.sign(before), 0).astype(np.int64)
    return Orders(out, reason, closed_side, after, int((~matched).sum()))


def _distinct_rows(a: Array) -> tuple[Array, npt.NDArray[np.intp]]:
    """The distinct rows of `a` and, per row, which of them it is (as np.unique(axis=0)
    returns them, up to order). Rows are told apart by their bits, so ranked by a lexsort of
    integers: several times faster than np.unique's sort of the rows as records."""
    if not len(a):
        return a, np.zeros(0, dtype=np.intp)
    bits = np.ascontiguousarray(a, dtype=np.float64).view(np.int64)
    order = np.lexsort(bits.T[::-1])
    ranked = bits[order]
    first = np.r_[True, (ranked[1:] != ranked[:-1]).any(axis=1)]
    which = np.empty(len(a), dtype=np.intp)
    which[order] = np.cumsum(first) - 1
    return a[order[first]], which


def _decide(long: float, entry_open: float, sl_level: float, tp_level: float,
            leverage: float, o: float, h: float, lo: float, *, mmr: float) -> tuple[int, float]:
    """(reason code, price before slippage) of one stop exit by `triggers.check` on its candle
    (the liquidation price from `margin` for a liquidation); (0, NaN) when the rule sees no
    exit there (float ties with vectorbt's levels: its fill is kept)."""
    side = "long" if long else "short"
    exits = triggers.Exits(side, stop_loss=_finite(sl_level), take_profit=_finite(tp_level),
                           liquidation=_liquidation(bool(long), entry_open, leverage, mmr))
    hit = triggers.check(exits, o, h, lo)
    if hit is None:
        return 0, math.nan
    if hit.reason == triggers.LIQUIDATION:
        price = margin.liquidation_price_isolated(side, Decimal(repr(entry_open)), Decimal(1),
                                                  Decimal(repr(leverage)), Decimal(repr(mmr)))
        return LIQUIDATION, float(price)
    return _TRIGGER_REASON[hit.reason], hit.price


def _exit_fills(code: Ints, level: Array, long: Mask, qty: Array, entry_open: Array,
                costs: Costs, mmr: float) -> tuple[Array, Array]:
    """(price, fee) of triggered exits as `PaperFillModel.fill` makes them: a stop is slipped
    and pays the taker fee; a take-profit fills at its level with the maker fee; a liquidation
    fills at its price and pays the maintenance margin left (qty x entry x mmr, the rest of the
    margin), so the loss is the initial margin."""
    slipped = np.where(long, level * (1.0 - costs.slippage), level * (1.0 + costs.slippage))
    price = np.where(code == STOP_LOSS, slipped, level)
    rate = np.where(code == TAKE_PROFIT, costs.maker, costs.taker)
    fee = np.where(code == LIQUIDATION, qty * entry_open * mmr, qty * price * rate)
    return price, fee


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _liquidation(long: bool, entry: float, leverage: float, mmr: float) -> float | None:
    """The isolated liquidation price from the fill open, in `margin`'s own term order."""
    if not leverage > 1.0:
        return None
    cushion = entry / leverage - entry * mmr
    return entry - cushion if long else entry + cushion
