"""The gate's rules, each named "<layer>.<rule>" and reported in every decision.

Layers: strategy (is the signal tradable; is its strategy within its daily trade count, loss
cooldown and drawdown, judged from its trades as the gate approved them: see ledger.py), order
(the order itself: size, leverage, margin, exchange precision), position (the symbol's position
after the order: stop loss, liquidation, size), portfolio (every symbol together: exposure,
per-asset exposure, correlated exposure, open positions, drawdown from peak equity), system
(daily loss, stale data, price spike, order error rate, the breakers' escalation, kill switch;
see breakers.py). Each rule is a small function of a `Context` returning a RuleResult whose
detail states the numbers it compared.

Positions are the gate's own book of what it approved (see book.py), valued at the last close
or signal price seen per symbol. Exits (reduce-only orders) are never blocked by a limit on
size, exposure, margin, by a strategy limit or by the kill switch: only by rules the exchange
itself would enforce (a non-empty order, its minimum notional and precision).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from meridian.v1 import common_pb2, signal_pb2
from meridian.v1.risk_decision_pb2 import RuleResult
from meridian_common import margin
from meridian_common.money import MONEY_CONTEXT, ZERO, dec, to_str
from meridian_common.sizing import (
    MarketRules,
    Sizing,
    confidence_scaled,
    fixed_fraction,
    fractional_kelly,
    quantity_for_notional,
    volatility_adjusted,
)
from meridian_risk.book import Book
from meridian_risk.breakers import Breakers, Level
from meridian_risk.ledger import HOUR_MS, Ledger, Record, utc, utc_day
from meridian_risk.market import Market
from meridian_risk.settings import RiskSettings

BOT_PREFIX = "bot:"  # strategy name of a bot's orders (order.intent.v1)
KNOWN_DIRECTIONS = (common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT,
                    common_pb2.DIRECTION_FLAT)


@dataclass(frozen=True, slots=True)
class Proposal:
    side: int
    quantity: Decimal  # positive
    target: Decimal  # signed position after the order
    reduce_only: bool
    entry_after: Decimal  # entry price of the position after the order (0 when flat)
    sizing_note: str = ""  # why an entry sized to zero, "" otherwise

    @property
    def is_entry(self) -> bool:
        """An order that opens or adds: every limit applies to it."""
        return self.quantity > 0 and not self.reduce_only


@dataclass(frozen=True, slots=True)
class Context:
    key: str
    direction: int
    price: Decimal
    stop: Decimal | None  # the signal's stop_loss, None when absent or unparseable
    stop_error: str  # why the stop_loss did not parse, "" otherwise
    confidence: float
    proposal: Proposal
    book: Book
    settings: RiskSettings
    rules: MarketRules
    kill_switch: bool
    strategy: str  # the signal's strategy
    event_time_ms: int  # the signal's event time: the clock of the strategy rules
    ledger: Ledger  # each strategy's trades as the gate approved them
    breakers: Breakers
    market: Market
    lag_s: float  # wall-clock age of the signal at the decision (for the stale data guard)
    limits_from: str = ""  # "<strategy>@<version>" when active_configs set this strategy's limits
    owner: str = ""  # the strategy whose position or resting orders are on the key ("" none)
    committed: Decimal = ZERO  # quantity of resting reduce-only orders on the key (bots)

    def source(self, detail: str) -> str:
        """A detail naming where the limit came from, when not from the settings."""
        return f"{detail} (active config {self.limits_from})" if self.limits_from else detail

    @property
    def current(self) -> Decimal:
        return self.book.quantity(self.key)

    @property
    def order_value(self) -> Decimal:
        return MONEY_CONTEXT.multiply(self.proposal.quantity, self.price)

    @property
    def position_value(self) -> Decimal:
        return MONEY_CONTEXT.multiply(abs(self.proposal.target), self.price)


# --------------------------------------------------------------------------- sizing


def size_entry(direction: int, price: Decimal, stop: Decimal | None, confidence: float,
               settings: RiskSettings, rules: MarketRules,
               factor: Decimal = Decimal(1), record: Record | None = None
               ) -> tuple[Decimal, str]:
    """Quantity of a new entry (> 0) or 0 with the reason, by the configured method, times
    `factor` (the breakers' reduce stage), rounded down to the lot.

    Equity is settings.initial_capital: sizing neither compounds gains nor shrinks after
    losses (the breakers and the strategy drawdown rule answer losses).
    """
    qty, note = _size_entry(direction, price, stop, confidence, settings, rules, record)
    if factor == 1 or qty <= 0:
        return qty, note
    reduced = rules.round_qty(MONEY_CONTEXT.multiply(qty, factor))
    if reduced <= 0:
        return ZERO, (f"{to_str(qty)} x reduce factor {to_str(factor)} is less than one lot "
                      f"({to_str(rules.lot)})")
    return reduced, note


def _size_entry(direction: int, price: Decimal, stop: Decimal | None, confidence: float,
                settings: RiskSettings, rules: MarketRules,
                record: Record | None) -> tuple[Decimal, str]:
    s = settings
    if s.sizing == "fixed_notional":
        qty = quantity_for_notional(s.order_notional, price, s.quantity_step)
        note = "" if qty > 0 else (f"order_notional {to_str(s.order_notional)} buys less than "
                                   f"one lot ({to_str(s.quantity_step)}) at {to_str(price)}")
        return qty, note
    result: Sizing
    try:
        if s.sizing == "fixed_fraction":
            result = fixed_fraction(s.initial_capital, s.sizing_fraction, price, rules, s.leverage)
        elif s.sizing == "fractional_kelly":
            r = record or Record(0, 0, ZERO, ZERO)
            if r.wins + r.losses < s.kelly_min_trades:  # too few trades to estimate: warm up
                result = fixed_fraction(s.initial_capital, s.sizing_fraction, price, rules,
                                        s.leverage)
            else:
                result = fractional_kelly(s.initial_capital, r.wins, r.losses, r.avg_win,
                                          r.avg_loss, price, rules, s.leverage,
                                          s.kelly_multiplier, s.sizing_max_fraction,
                                          s.kelly_min_trades)
        elif s.sizing == "confidence_scaled":
            conf = Decimal(repr(confidence))
            result = confidence_scaled(s.initial_capital, s.sizing_fraction, conf,
                                       s.sizing_max_fraction, price, rules, s.leverage)
        else:
            if stop is None:
                return ZERO, "volatility_adjusted sizing needs the signal's stop_loss"
            wrong_side = stop >= price if direction == common_pb2.DIRECTION_LONG else stop <= price
            if wrong_side:
                return ZERO, (f"stop {to_str(stop)} is not on the protective side of entry "
                              f"{to_str(price)}")
            result = volatility_adjusted(s.initial_capital, s.risk_per_trade, price, stop, rules,
                                         s.leverage, s.max_position_notional)
    except (ValueError, ArithmeticError) as exc:
        return ZERO, f"{s.sizing}: {exc}"
    return result.quantity, "" if result.ok else f"{s.sizing}: {result.reason}"


def target_position(direction: int, current: Decimal, entry_size: Callable[[], Decimal]
                    ) -> Decimal:
    if direction not in KNOWN_DIRECTIONS:
        return current  # no trade; the strategy.direction rule reports it
    if direction == common_pb2.DIRECTION_FLAT:
        return ZERO
    if direction == common_pb2.DIRECTION_LONG:
        return current if current > 0 else entry_size()
    return current if current < 0 else -entry_size()


def propose(direction: int, key: str, price: Decimal, stop: Decimal | None, confidence: float,
            book: Book, settings: RiskSettings, rules: MarketRules,
            factor: Decimal = Decimal(1), record: Record | None = None) -> Proposal:
    current = book.quantity(key)
    note = ""

    def entry_size() -> Decimal:
        nonlocal note
        qty, note = size_entry(direction, price, stop, confidence, settings, rules, factor,
                               record)
        return qty

    target = target_position(direction, current, entry_size)
    delta = target - current
    side = common_pb2.SIDE_BUY if delta > 0 else common_pb2.SIDE_SELL
    reduce_only = target == 0 or (abs(target) < abs(current) and (target > 0) == (current > 0))
    after = Book({k: p for k, p in book.positions.items()})
    if delta != 0:
        after.apply(key, delta, price)
    pos = after.positions.get(key)
    return Proposal(side, abs(delta), target, reduce_only, pos.entry if pos else ZERO, note)


def parse_stop(signal: signal_pb2.Signal) -> tuple[Decimal | None, str]:
    if not signal.stop_loss:
        return None, ""
    try:
        stop = dec(signal.stop_loss, "Signal.stop_loss")
    except ValueError as exc:
        return None, str(exc)
    if stop <= 0:
        return None, f"Signal.stop_loss: {signal.stop_loss!r} is not positive"
    return stop, ""


# --------------------------------------------------------------------------- rules


def _result(rule: str, passed: bool, detail: str) -> RuleResult:
    return RuleResult(rule=rule, passed=passed, detail=detail)


def _exempt(rule: str, ctx: Context, detail: str) -> RuleResult:
    """Limits judge entries only: an exit (reduce-only) or a non-order always passes them."""
    what = "reduce-only exit" if ctx.proposal.quantity > 0 else "no order"
    return _result(rule, True, f"{what}: {detail}")


def strategy_direction(ctx: Context) -> RuleResult:
    known = ctx.direction in KNOWN_DIRECTIONS
    return _result("strategy.direction", known,
                   "long, short or flat" if known else f"unknown direction {ctx.direction}")


def strategy_owner(ctx: Context) -> RuleResult:
    """A bot's symbol is its own: its grid or DCA cycle holds inventory and resting orders
    another strategy's order would disturb (a trend FLAT would sell the grid's inventory), and
    a bot does not trade a symbol another strategy holds. Signal strategies among themselves
    share a symbol as before (a flip closes the other's trade)."""
    name, owner = "strategy.owner", ctx.owner
    bots = owner.startswith(BOT_PREFIX) or ctx.strategy.startswith(BOT_PREFIX)
    if not owner or owner == ctx.strategy or not bots:
        held = f"held by {owner!r}" if owner else "held by no strategy"
        return _result(name, True, f"{ctx.key} {held}")
    return _result(name, False, f"{ctx.key} is held by {owner!r}, not {ctx.strategy!r}: a "
                                "bot's symbol is its own")


def strategy_max_trades_per_day(ctx: Context) -> RuleResult:
    name, high = "strategy.max_trades_per_day", ctx.settings.max_trades_per_day
    count = ctx.ledger.entries_on(ctx.strategy, ctx.event_time_ms)
    detail = (f"{count} entries of {ctx.strategy!r} on {utc_day(ctx.event_time_ms)} (UTC) vs "
              + (f"max {high}" if high else "no limit"))
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, high == 0 or count < high, detail)


def strategy_cooldown(ctx: Context) -> RuleResult:
    name, s = "strategy.cooldown", ctx.settings
    if s.cooldown_losses == 0:
        return _result(name, True, "off (cooldown_losses 0)")
    stats = ctx.ledger.stats(ctx.strategy)
    losses = f"{stats.losses} consecutive losses of {ctx.strategy!r} vs {s.cooldown_losses}"
    if stats.losses < s.cooldown_losses or stats.last_loss_ms is None:
        return _result(name, True, losses)
    until = stats.last_loss_ms + int(s.cooldown_hours * HOUR_MS)
    active = ctx.event_time_ms < until
    detail = (f"{losses}: entries refused until {utc(until)}" if active
              else f"{losses}: cooldown ended {utc(until)}")
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, not active, detail)


def strategy_max_drawdown(ctx: Context) -> RuleResult:
    name, high = "strategy.max_drawdown", ctx.settings.strategy_max_drawdown
    stats = ctx.ledger.stats(ctx.strategy)
    dd = stats.drawdown.quantize(Decimal("0.0001"), context=MONEY_CONTEXT)
    detail = (f"drawdown {to_str(dd)} (equity {to_str(stats.equity)} from peak "
              f"{to_str(stats.peak)} over {stats.trades} closed trades of {ctx.strategy!r}) vs "
              + (f"max {to_str(high)}" if high < 1 else "no limit (1 = off)"))
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, high >= 1 or stats.drawdown <= high, detail)


def order_nonzero(ctx: Context) -> RuleResult:
    p = ctx.proposal
    if p.quantity > 0:
        detail = f"order of {to_str(p.quantity)} changes the position {to_str(ctx.current)}"
    elif p.sizing_note:
        detail = f"entry sized to 0: {p.sizing_note}"
    else:
        detail = f"position {to_str(ctx.current)} already at target"
    return _result("order.nonzero", p.quantity > 0, detail)


def order_reduce_only(ctx: Context) -> RuleResult:
    """A reduce-only order sells no more than the position not already promised to resting
    reduce-only orders (a bot's take-profits), so the resting exits can all fill."""
    name, p = "order.reduce_only", ctx.proposal
    if not p.reduce_only:
        return _result(name, True, "not reduce-only")
    free = max(abs(ctx.current) - ctx.committed, ZERO)
    detail = (f"{to_str(p.quantity)} vs position {to_str(abs(ctx.current))} - resting exits "
              f"{to_str(ctx.committed)} = {to_str(free)}")
    return _result(name, p.quantity <= free, detail)


def order_min_notional(ctx: Context) -> RuleResult:
    value, low = ctx.order_value, ctx.settings.min_order_notional
    return _result("order.min_notional", value >= low, f"{to_str(value)} vs min {to_str(low)}")


def order_precision(ctx: Context) -> RuleResult:
    qty = ctx.proposal.quantity
    if qty <= 0:
        return _result("order.precision", True, "no order to check")
    # A market order sends no price: the quantity is checked against the lot, and the stop
    # (sent as a trigger price) against the tick. The minimum notional is order.min_notional's.
    price = ctx.stop if ctx.stop is not None and ctx.proposal.is_entry else None
    check_price = price if price is not None else ctx.rules.tick
    reasons = [r for r in ctx.rules.valid(qty, check_price) if "min_notional" not in r]
    subject = f"quantity {to_str(qty)} on lot {to_str(ctx.rules.lot)}"
    if price is not None:
        subject += f", stop {to_str(price)} on tick {to_str(ctx.rules.tick)}"
    return _result("order.precision", not reasons, "; ".join(reasons) if reasons else subject)


def _entry_limit(name: str, ctx: Context, value: Decimal, high: Decimal) -> RuleResult:
    """value <= high for entries; exits are exempt (reported with the same numbers)."""
    detail = f"{to_str(value)} vs max {to_str(high)}"
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, value <= high, detail)


def order_max_notional(ctx: Context) -> RuleResult:
    return _entry_limit("order.max_notional", ctx, ctx.order_value,
                        ctx.settings.max_order_notional)


def order_max_leverage(ctx: Context) -> RuleResult:
    s = ctx.settings
    used = MONEY_CONTEXT.divide(ctx.order_value, s.initial_capital)
    detail = ctx.source(
        f"{to_str(ctx.order_value)} / capital {to_str(s.initial_capital)} = "
        f"{to_str(used.quantize(Decimal('0.0001'), context=MONEY_CONTEXT))}x vs max "
        f"{to_str(s.leverage)}x")
    if not ctx.proposal.is_entry:
        return _exempt("order.max_leverage", ctx, detail)
    return _result("order.max_leverage", used <= s.leverage, detail)


def _margin(quantity: Decimal, entry: Decimal, leverage: Decimal) -> Decimal:
    return margin.initial_margin(MONEY_CONTEXT.multiply(abs(quantity), entry), leverage)


def order_margin(ctx: Context) -> RuleResult:
    s, p = ctx.settings, ctx.proposal
    others = sum((_margin(pos.quantity, pos.entry, s.leverage)
                  for _, pos in ctx.book.others(ctx.key)), ZERO)
    pos = ctx.book.positions.get(ctx.key)
    same_side = pos is not None and p.target != 0 and (pos.quantity > 0) == (p.target > 0)
    committed = others + (_margin(pos.quantity, pos.entry, s.leverage) if same_side and pos
                          else ZERO)
    total = others + _margin(p.target, p.entry_after, s.leverage)
    order = max(total - committed, ZERO)
    detail = (f"order {to_str(order)} + committed {to_str(committed)} = {to_str(total)} vs "
              f"capital {to_str(s.initial_capital)}")
    if not p.is_entry:
        return _exempt("order.margin", ctx, detail)
    return _result("order.margin", total <= s.initial_capital, detail)


def position_stop_loss_required(ctx: Context) -> RuleResult:
    name, p = "position.stop_loss_required", ctx.proposal
    if not p.is_entry:
        return _result(name, True, "no entry: no stop needed")
    if ctx.stop_error:
        return _result(name, False, ctx.stop_error)
    required = ctx.settings.require_stop_loss
    if ctx.stop is None:
        return _result(name, not required,
                       "entry without stop_loss" + ("" if required else " (not required)"))
    long = p.target > 0
    ok = ctx.stop < ctx.price if long else ctx.stop > ctx.price
    relation = ("below" if long else "above") if ok else ("not below" if long else "not above")
    detail = f"stop {to_str(ctx.stop)} {relation} entry {to_str(ctx.price)}"
    if not required:
        return _result(name, True, detail + " (not required)")
    return _result(name, ok, detail)


def _liquidation(ctx: Context) -> Decimal:
    s, p = ctx.settings, ctx.proposal
    side = "long" if p.target > 0 else "short"
    mmr = s.maintenance_margin_rate
    if s.margin_mode == "isolated":
        return margin.liquidation_price_isolated(side, p.entry_after, abs(p.target), s.leverage,
                                                 mmr)
    other_mm, other_pnl = ZERO, ZERO
    for key, pos in ctx.book.others(ctx.key):
        other_mm += margin.maintenance_margin(MONEY_CONTEXT.multiply(abs(pos.quantity),
                                                                     pos.entry), mmr)
        mark = ctx.book.marks.get(key, pos.entry)
        other_pnl += MONEY_CONTEXT.multiply(pos.quantity, MONEY_CONTEXT.subtract(mark, pos.entry))
    return margin.liquidation_price_cross(side, p.entry_after, abs(p.target), s.initial_capital,
                                          mmr, other_mm, other_pnl)


def position_stop_before_liquidation(ctx: Context) -> RuleResult:
    name, s, p = "position.stop_before_liquidation", ctx.settings, ctx.proposal
    if not p.is_entry:
        return _result(name, True, "no entry: nothing to liquidate")
    if s.leverage <= 1:
        return _result(name, True, "leverage 1: no liquidation above a price of 0")
    try:
        liq = _liquidation(ctx)
    except ValueError as exc:
        return _result(name, False, f"{s.margin_mode}: {exc}")
    if ctx.stop is None:
        return _result(name, False, f"leveraged entry without a stop before liquidation "
                                    f"{to_str(liq)} ({s.margin_mode}, {to_str(s.leverage)}x)")
    long = p.target > 0
    ok = margin.stop_before_liquidation("long" if long else "short", ctx.stop, liq)
    relation = (">" if long else "<") if ok else ("<=" if long else ">=")
    return _result(name, ok, ctx.source(f"stop {to_str(ctx.stop)} {relation} liquidation "
                                        f"{to_str(liq)} ({s.margin_mode}, "
                                        f"{to_str(s.leverage)}x)"))


def position_max_notional(ctx: Context) -> RuleResult:
    result = _entry_limit("position.max_notional", ctx, ctx.position_value,
                          ctx.settings.max_position_notional)
    result.detail = ctx.source(result.detail)
    return result


def portfolio_exposure(ctx: Context) -> Decimal:
    """Sum of |position value| over every symbol once the order is booked (this symbol at the
    signal's price, the others at their last price)."""
    others = sum((ctx.book.value(key) for key, _ in ctx.book.others(ctx.key)), ZERO)
    return others + ctx.position_value


def portfolio_max_exposure(ctx: Context) -> RuleResult:
    total, high = portfolio_exposure(ctx), ctx.settings.max_portfolio_notional
    detail = f"{to_str(total)} vs max {to_str(high)}"
    if not ctx.proposal.is_entry:
        return _exempt("portfolio.max_exposure", ctx, detail)
    return _result("portfolio.max_exposure", total <= high, detail)


def portfolio_max_open_positions(ctx: Context) -> RuleResult:
    count = len(ctx.book.others(ctx.key)) + (1 if ctx.proposal.target != 0 else 0)
    high = ctx.settings.max_open_positions
    detail = f"{count} vs max {high}"
    if not ctx.proposal.is_entry:
        return _exempt("portfolio.max_open_positions", ctx, detail)
    return _result("portfolio.max_open_positions", count <= high, detail)


QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "USD", "EUR")


def base_asset(key: str) -> str:
    """The asset a market key trades ("bybit:BTCUSDT" -> "BTC"; "binance:BTC/USDT:USDT" ->
    "BTC"): one asset's positions on several venues or contracts share its exposure limit."""
    symbol = key.rpartition(":")[2] if key.count(":") == 1 else key.split(":", 1)[1]
    if "/" in symbol:
        return symbol.split("/", 1)[0]
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return symbol


def portfolio_asset_exposure(ctx: Context) -> RuleResult:
    name, high = "portfolio.asset_exposure", ctx.settings.max_asset_notional
    asset = base_asset(ctx.key)
    total = ctx.position_value + sum((ctx.book.value(k) for k, _ in ctx.book.others(ctx.key)
                                      if base_asset(k) == asset), ZERO)
    detail = f"{asset}: {to_str(total)} vs max {to_str(high)}"
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, total <= high, detail)


def portfolio_correlated_exposure(ctx: Context) -> RuleResult:
    name, s = "portfolio.correlated_exposure", ctx.settings
    if not ctx.proposal.is_entry:  # the correlations cost: measured for entries only
        return _exempt(name, ctx, f"max {to_str(s.max_correlated_notional)} not measured")
    overlap = s.correlation_window // 2
    group, total = [], ctx.position_value
    for key, _ in ctx.book.others(ctx.key):
        corr = ctx.market.correlation(ctx.key, key, overlap)
        if corr is not None and corr >= s.correlation_min:
            group.append(f"{key} {corr:.2f}")
            total += ctx.book.value(key)
    members = ", ".join(group) if group else "no open position correlates"
    detail = (f"{to_str(total)} vs max {to_str(s.max_correlated_notional)} ({members} at >= "
              f"{s.correlation_min:g})")
    return _result(name, total <= s.max_correlated_notional, detail)


def _fall_limit(name: str, ctx: Context, fall: Decimal, below: str, reference: Decimal,
                high: Decimal, tripped: bool) -> RuleResult:
    """A fall of equity (a fraction) below a reference value vs its limit (1 = off), judged by
    the breaker's own predicate; exits are exempt."""
    detail = (f"{to_str(fall.quantize(Decimal('0.0001'), context=MONEY_CONTEXT))} below {below} "
              f"{to_str(reference)} vs " + (f"max {to_str(high)}" if high < 1
                                            else "no limit (1 = off)"))
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, not tripped, detail)


def portfolio_max_drawdown(ctx: Context) -> RuleResult:
    b = ctx.breakers
    return _fall_limit("portfolio.max_drawdown", ctx, b.drawdown(), "peak equity", b.peak,
                       ctx.settings.max_drawdown, b.drawdown_tripped())


def system_daily_loss(ctx: Context) -> RuleResult:
    b = ctx.breakers
    return _fall_limit("system.daily_loss", ctx, b.day_loss(), "the day's start", b.day_start,
                       ctx.settings.daily_loss_limit, b.day_loss_tripped())


def system_stale_data(ctx: Context) -> RuleResult:
    name, high = "system.stale_data", ctx.settings.max_data_lag_s
    if high <= 0:
        return _result(name, True, "off (max_data_lag_s 0)")
    detail = f"signal is {ctx.lag_s:.1f} s old vs max {high:g} s"
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, ctx.lag_s <= high, detail)


def system_price_spike(ctx: Context) -> RuleResult:
    name, spike = "system.price_spike", ctx.breakers.spike
    if spike is None:
        return _result(name, True, "no spike at this candle")
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, spike.detail)
    return _result(name, False, spike.detail)


def system_error_rate(ctx: Context) -> RuleResult:
    name, b, s = "system.error_rate", ctx.breakers, ctx.settings
    failed, n = sum(b.outcomes), len(b.outcomes)
    # Order events arrive on the exchange's clock, not in event time: with no failure the
    # detail does not count them, so a paper replay (nothing rejected) reads the same each run.
    seen = f"{failed} of the last {n} orders" if failed else "no order"
    detail = f"{seen} rejected or unknown vs max share " + (
        to_str(s.error_rate_max) if s.error_rate_max < 1 else "1 (off)")
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, not b.error_rate_tripped(), detail)


def system_breaker(ctx: Context) -> RuleResult:
    name, b = "system.breaker", ctx.breakers
    detail = b.describe()
    if not ctx.proposal.is_entry:
        return _exempt(name, ctx, detail)
    return _result(name, b.level in (Level.NORMAL, Level.REDUCE), detail)


def system_kill_switch(ctx: Context) -> RuleResult:
    if not ctx.kill_switch:
        return _result("system.kill_switch", True, "clear")
    if not ctx.proposal.is_entry:
        return _exempt("system.kill_switch", ctx, "engaged: only reduce-only orders pass")
    return _result("system.kill_switch", False, "engaged: only reduce-only orders pass")


RULES: tuple[Callable[[Context], RuleResult], ...] = (
    strategy_direction,
    strategy_owner,
    strategy_max_trades_per_day,
    strategy_cooldown,
    strategy_max_drawdown,
    order_nonzero,
    order_reduce_only,
    order_min_notional,
    order_precision,
    order_max_notional,
    order_max_leverage,
    order_margin,
    position_stop_loss_required,
    position_stop_before_liquidation,
    position_max_notional,
    portfolio_max_exposure,
    portfolio_asset_exposure,
    portfolio_correlated_exposure,
    portfolio_max_open_positions,
    portfolio_max_drawdown,
    system_daily_loss,
    system_stale_data,
    system_price_spike,
    system_error_rate,
    system_breaker,
    system_kill_switch,
)
RULE_NAMES = tuple("{}.{}".format(*f.__name__.split("_", 1)) for f in RULES)


def evaluate(ctx: Context) -> list[RuleResult]:
    """Every rule's result, in RULES order (every decision reports every rule)."""
    return [rule(ctx) for rule in RULES]
