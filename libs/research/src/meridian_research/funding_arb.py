"""Backtest of the funding-rate arbitrage rules (`meridian_common.strategy.funding_arb`) on the
shared data: settled 8h funding rates and hourly spot candles.

Timeline at each settlement time t (symbols in the order given, one capital for all):
1. funding on the position held BEFORE t (filled at a candle before t): the perp leg of
   quantity Q receives d * Q * mark_t * rate_t (d = +1 carry: short perp, paid by longs when the
   rate is positive); mark_t = the open of the spot candle at t (the first at or after t). A
   reverse position (short spot) also pays `borrow_rate` per settlement on Q * mark_t.
2. the rules observe rate_t and decide with the predicted next rate = rate_t (the honest proxy,
   see the rules' docstring): nothing at or after t + 8h is known.
3. an entry or exit fills at the open of the first candle strictly after t (the settlement is
   stamped a few ms after t, so the candle opening at t has already started): both legs through
   `meridian_common.fills.PaperFillModel` (spot and perp each with its own `FeeSchedule`, taker,
   slipped against each leg), so each round trip pays four fees.
The equity mark (after the actions at t) is recorded; at the window end open positions are
closed at the first candle at or after the end.

Prices: there is no perpetual price series in the shared data, so the perp leg is priced at the
spot open and the basis (perp - spot) is MODELLED, not observed: each entry and each exit pays a
basis-drift cost of notional * (basis_bps / 1e4 + basis_rate_multiple * |predicted rate|) --
the perp's premium tracks the funding rate, and the model assumes it always moves against the
trade by a fixed amount plus that many funding intervals' worth (conservative default: 2 bps +
one interval). Spot and perp price moves then cancel except for the slippage of the four fills.

Money is Decimal (the same fill and fee model as the live path); the metrics are floats from
`meridian_common.performance.backtest_metrics` with bars = settlements (1095 a year).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from meridian.v1 import common_pb2
from meridian_common.accounting import funding_paid
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.marketdata import CsvCandleSource, CsvFundingSource, default_data_dir
from meridian_common.money import ZERO, cash
from meridian_common.performance import BacktestMetrics, TradeRecord, backtest_metrics
from meridian_common.strategy.funding_arb import (
    ENTER,
    EXIT,
    REVERSE,
    Decision,
    FundingArbParams,
    FundingArbRules,
    target_notional,
)

HOUR_MS = 3_600_000
SETTLEMENT_MS = 8 * HOUR_MS
SETTLEMENTS_PER_YEAR = 3 * 365
QTY_QUANTUM = Decimal("0.00001")
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL


@dataclass(frozen=True, slots=True)
class Costs:
    """Both legs' fill models and the modelled basis and borrow costs (see module docstring).
    Defaults: Binance spot 0.1 % / USDT-M perp 0.02 % maker, 0.05 % taker, 1 bp slippage."""

    spot: PaperFillModel = field(default_factory=lambda: PaperFillModel(
        FeeSchedule(Decimal("0.001"), Decimal("0.001")), Decimal(1)))
    perp: PaperFillModel = field(default_factory=lambda: PaperFillModel(
        FeeSchedule(Decimal("0.0002"), Decimal("0.0005")), Decimal(1)))
    basis_bps: Decimal = Decimal(2)
    basis_rate_multiple: Decimal = Decimal(1)
    borrow_rate: Decimal = Decimal("0.0001")

    def __post_init__(self) -> None:
        if self.basis_bps < 0 or self.basis_rate_multiple < 0 or self.borrow_rate < 0:
            raise ValueError("basis_bps, basis_rate_multiple and borrow_rate must be >= 0")

    def basis_cost(self, notional: Decimal, predicted: Decimal) -> Decimal:
        return cash(notional * (self.basis_bps / Decimal(10_000)
                                + self.basis_rate_multiple * abs(predicted)))


@dataclass(frozen=True, slots=True)
class SymbolData:
    """One symbol's settlements (ms, rate as Decimal) and spot candle opens (ms, Decimal)."""

    symbol: str
    settle_ms: tuple[int, ...]
    rates: tuple[Decimal, ...]
    candle_ms: tuple[int, ...]
    opens: tuple[Decimal, ...]

    def open_at_or_after(self, time_ms: int) -> tuple[int, Decimal] | None:
        i = bisect_left(self.candle_ms, time_ms)
        return (self.candle_ms[i], self.opens[i]) if i < len(self.candle_ms) else None

    def open_after(self, time_ms: int) -> tuple[int, Decimal] | None:
        i = bisect_right(self.candle_ms, time_ms)
        return (self.candle_ms[i], self.opens[i]) if i < len(self.candle_ms) else None


def load_symbol(symbol: str, start_ms: int, end_ms: int,
                data_dir: str | Path | None = None) -> SymbolData:
    """Settlements in [start_ms, end_ms) and candles in [start_ms, end_ms + 1 day) (the last
    decision fills, and the window end closes, on a candle after the last settlement)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    funding = CsvFundingSource(root, symbol)
    if not funding.exists():
        raise FileNotFoundError(f"no funding file {funding.path} for {symbol}")
    settle = [(t, Decimal(r)) for t, r in funding.rows(start_ms, end_ms - 1)]
    candles = list(CsvCandleSource(root, symbol, "1h").rows(start_ms, end_ms + 24 * HOUR_MS))
    return SymbolData(symbol, tuple(t for t, _ in settle), tuple(r for _, r in settle),
                      tuple(c.open_time_ms for c in candles),
                      tuple(Decimal(c.open) for c in candles))


@dataclass(slots=True)
class OpenPair:
    symbol: str
    direction: int
    quantity: Decimal
    entry_ms: int
    spot_entry: Decimal
    perp_entry: Decimal
    notional: Decimal
    fees: Decimal
    basis: Decimal
    funding: Decimal = ZERO  # received (+) / paid (-) on the perp leg
    borrow: Decimal = ZERO
    settlements: int = 0
    entry_reason: str = ""

    def mark(self) -> Decimal:
        """Value of the two legs at any common price: only the entry slippage remains."""
        return self.direction * self.quantity * (self.perp_entry - self.spot_entry)


@dataclass(frozen=True, slots=True)
class PairTrade:
    """One closed round trip, exact; `net` = price legs + funding - borrow - fees - basis."""

    symbol: str
    direction: int
    entry_ms: int
    exit_ms: int
    quantity: Decimal
    notional: Decimal
    spot_entry: Decimal
    spot_exit: Decimal
    perp_entry: Decimal
    perp_exit: Decimal
    fees: Decimal
    basis: Decimal
    funding: Decimal
    borrow: Decimal
    settlements: int
    net: Decimal
    entry_reason: str
    exit_reason: str

    def record(self) -> TradeRecord:
        return TradeRecord(self.symbol, self.direction, self.entry_ms, self.exit_ms,
                           float(self.quantity), float(self.spot_entry), float(self.spot_exit),
                           float(self.net), float(self.fees), -float(self.funding))


@dataclass(frozen=True, slots=True)
class Payment:
    """Funding on the perp leg at one settlement (amount > 0: received)."""

    time_ms: int
    symbol: str
    quantity: Decimal
    mark: Decimal
    rate: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class FundingArbResult:
    times_ms: tuple[int, ...]
    equity: tuple[Decimal, ...]
    exposure: tuple[Decimal, ...]  # open notional (one leg, all symbols) after each step
    trades: tuple[PairTrade, ...]
    payments: tuple[Payment, ...]
    decisions: tuple[tuple[str, Decision], ...]
    metrics: BacktestMetrics
    fees: Decimal
    funding: Decimal
    basis: Decimal
    borrow: Decimal


@dataclass(slots=True)
class _Book:
    """The portfolio while a backtest runs: cash (realized), open pairs and the records."""

    capital: Decimal
    realized: Decimal = ZERO
    peak: Decimal = ZERO
    open: dict[str, OpenPair] = field(default_factory=dict)
    trades: list[PairTrade] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    basis: Decimal = ZERO
    borrow: Decimal = ZERO

    def equity(self) -> Decimal:
        return self.capital + self.realized + sum((p.mark() for p in self.open.values()), ZERO)

    def exposure(self, excluding: str | None = None) -> Decimal:
        return sum((p.notional for s, p in self.open.items() if s != excluding), ZERO)


def _legs(costs: Costs, direction: int, opening: bool, quantity: Decimal,
          price: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(spot fill price, perp fill price, fees of both legs) of opening or closing a pair."""
    spot_buys = (direction == 1) == opening
    spot = costs.spot.market(BUY if spot_buys else SELL, quantity, price)
    perp = costs.perp.market(SELL if spot_buys else BUY, quantity, price)
    return spot.price, perp.price, spot.fee + perp.fee


def _settle(book: _Book, data: SymbolData, pair: OpenPair, time_ms: int, rate: Decimal,
            costs: Costs) -> None:
    """Funding (and borrow) at settlement `time_ms` on a pair filled before it."""
    mark_candle = data.open_at_or_after(time_ms)
    if mark_candle is None or pair.entry_ms >= time_ms:
        return
    mark = mark_candle[1]
    # received by the perp leg, which holds -direction x quantity
    amount = -funding_paid(-pair.direction * pair.quantity, mark, rate)
    pair.funding += amount
    pair.settlements += 1
    book.realized += amount
    book.funding += amount
    book.payments.append(Payment(time_ms, data.symbol, pair.quantity, mark, rate, amount))
    if pair.direction == REVERSE:
        cost = cash(pair.quantity * mark * costs.borrow_rate)
        pair.borrow += cost
        book.realized -= cost
        book.borrow += cost


def _open(book: _Book, data: SymbolData, decision: Decision, params: FundingArbParams,
          costs: Costs, rules: FundingArbRules) -> None:
    fill = data.open_after(decision.time_ms)
    size = target_notional(params, decision.score, book.equity(), book.peak,
                           book.exposure(excluding=data.symbol))
    quantity = ZERO if fill is None else (size / fill[1]).quantize(QTY_QUANTUM, ROUND_DOWN)
    if quantity <= 0:
        rules.force_flat()  # refused: no candle, or no room under the cap / drawdown
        return
    fill_ms, price = fill
    spot, perp, fees = _legs(costs, decision.direction, True, quantity, price)
    notional = cash(quantity * price)
    basis = costs.basis_cost(notional, Decimal(repr(decision.predicted)))
    book.realized -= fees + basis
    book.fees += fees
    book.basis += basis
    book.open[data.symbol] = OpenPair(data.symbol, decision.direction, quantity, fill_ms, spot,
                                      perp, notional, fees, basis, entry_reason=decision.reason)


def _close(book: _Book, data: SymbolData, fill: tuple[int, Decimal], predicted: Decimal,
           costs: Costs, reason: str) -> None:
    pair = book.open.pop(data.symbol)
    fill_ms, price = fill
    spot, perp, fees = _legs(costs, pair.direction, False, pair.quantity, price)
    basis = costs.basis_cost(pair.notional, predicted)
    legs = cash(pair.direction * pair.quantity * ((spot - pair.spot_entry)
                                                  + (pair.perp_entry - perp)))
    book.realized += legs - fees - basis
    book.fees += fees
    book.basis += basis
    net = legs + pair.funding - pair.borrow - pair.fees - fees - pair.basis - basis  # exact
    book.trades.append(PairTrade(
        data.symbol, pair.direction, pair.entry_ms, fill_ms, pair.quantity, pair.notional,
        pair.spot_entry, spot, pair.perp_entry, perp, pair.fees + fees, pair.basis + basis,
        pair.funding, pair.borrow, pair.settlements, net, pair.entry_reason, reason))


def _events(data: Sequence[SymbolData], first_ms: int,
            end_ms: int) -> list[tuple[int, int, Decimal]]:
    """(time, symbol index, rate) of every settlement in [first_ms, end_ms), in time order."""
    events = [(t, i, r) for i, d in enumerate(data) for t, r in zip(d.settle_ms, d.rates,
                                                                    strict=True)
              if first_ms <= t < end_ms]
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def run_backtest(data: Sequence[SymbolData], params: FundingArbParams, start_ms: int,
                 end_ms: int, *, capital: Decimal = Decimal(100_000), costs: Costs | None = None,
                 warmup_ms: int = 10 * 24 * HOUR_MS) -> FundingArbResult:
    """Trade settlements in [start_ms, end_ms); the `warmup_ms` before start only feed the
    rules' features (known history, no trading). All open pairs close at the end."""
    if end_ms <= start_ms:
        raise ValueError(f"end ({end_ms}) must be after start ({start_ms})")
    costs = costs or Costs()
    book = _Book(capital, peak=capital)
    rules = [FundingArbRules(params) for _ in data]
    decisions: list[tuple[str, Decision]] = []
    times: list[int] = []
    equity: list[Decimal] = []
    exposure: list[Decimal] = []
    for t, i, rate in _events(data, start_ms - warmup_ms, end_ms):
        if t < start_ms:
            rules[i].observe(t, float(rate))
            continue
        _step(book, data[i], rules[i], t, rate, params, costs, decisions)
        value = book.equity()
        book.peak = max(book.peak, value)
        if times and times[-1] == t:
            equity[-1], exposure[-1] = value, book.exposure()
        else:
            times.append(t)
            equity.append(value)
            exposure.append(book.exposure())
    _close_all(book, data, end_ms, costs)
    times.append(max(end_ms, times[-1] + 1) if times else end_ms)
    equity.append(book.equity())
    exposure.append(ZERO)
    return _result(book, times, equity, exposure, decisions)


def _step(book: _Book, data: SymbolData, rules: FundingArbRules, t: int, rate: Decimal,
          params: FundingArbParams, costs: Costs,
          decisions: list[tuple[str, Decision]]) -> None:
    pair = book.open.get(data.symbol)
    if pair is not None:
        _settle(book, data, pair, t, rate, costs)
    decision = rules.step(t, float(rate))
    decisions.append((data.symbol, decision))
    if decision.action == ENTER:
        _open(book, data, decision, params, costs, rules)
    elif decision.action == EXIT and pair is not None:
        fill = data.open_after(t)
        if fill is not None:
            _close(book, data, fill, rate, costs, decision.reason)


def _close_all(book: _Book, data: Sequence[SymbolData], end_ms: int, costs: Costs) -> None:
    by_symbol = {d.symbol: d for d in data}
    for symbol in list(book.open):
        d = by_symbol[symbol]
        fill = d.open_at_or_after(end_ms) or (d.candle_ms[-1], d.opens[-1])
        i = bisect_left(d.settle_ms, end_ms) - 1
        predicted = d.rates[i] if i >= 0 else ZERO
        _close(book, d, fill, predicted, costs, "window end")


def _result(book: _Book, times: list[int], equity: list[Decimal], exposure: list[Decimal],
            decisions: list[tuple[str, Decision]]) -> FundingArbResult:
    records = [t.record() for t in book.trades]
    metrics = backtest_metrics(times, [float(e) for e in equity], records,
                               initial_capital=float(book.capital),
                               fees_paid=float(book.fees), funding_paid=-float(book.funding),
                               bars_per_year=SETTLEMENTS_PER_YEAR)
    return FundingArbResult(tuple(times), tuple(equity), tuple(exposure), tuple(book.trades),
                            tuple(book.payments), tuple(decisions), metrics, book.fees,
                            book.funding, book.basis, book.borrow)
