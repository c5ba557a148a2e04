"""Funding-rate carry bot: the delta-neutral spot/perpetual pair of `funding_arb` on the bus.

The rules (`FundingArbRules`, baseline or improved) decide; this bot turns their direction into
orders on two keys -- long spot, short perpetual (CARRY only: shorting spot needs a borrow the
bus does not model, so `allow_reverse` is refused) -- and keeps its own book from its fills.

Timing (the research backtest's, `meridian_research.funding_arb`): a settlement at t is told
before the candles that open at or after t. Before the bot's first full candle group it only
feeds the rules' features (warm-up: nothing is held, nothing can be traded). Afterwards it is
queued and decided, `rules.step(t, rate)`, on the next full group (the candles of both keys
that opened at the same time); the answers are stamped at that group's close and market orders
fill at the next candle's open -- for the group opening at t, the open of t + 1h, the same
candle the backtest fills at. A group missing a leg only updates the closes it has: decisions
wait for a full group, so both legs are always sized from prices of the same hour.

Funding: a settlement while the perpetual leg is held books -perp_qty x last perp close x rate
(cash-quantized; a short receives when the rate is positive), the ledger's rule: the position
held through the settlement, marked at the close of the candle that closes at t.

Acting on a full group, from the state rather than from the decision just made (so a retry, a
late fill and several queued settlements all land in the same few cases):
- rules CARRY, both legs flat, nothing outstanding: enter. Notional from `target_notional`
  (equity, its peak, no other exposure); quantity = notional / perp close rounded down to the
  coarser lot (the params require the lots to nest, so it is valid on both markets). Under
  either market's min_qty / min_notional the rules are forced flat and nothing is sent (the
  reason goes to `notes`): a one-legged pair would be a naked position.
- rules CARRY, legs held as spot == -perp > 0: hold.
- rules CARRY with anything outstanding: wait (both entry legs go together, and a pair half
  filled is judged only once the other half is known).
- rules CARRY and the legs unequal with nothing outstanding (a leg filled short of its order):
  the pair is no longer delta-neutral and topping one leg up would be a new, unsized trade, so
  the rules are forced flat and both legs are closed (an unwind).
- rules FLAT: every leg that is held and has no order outstanding is closed exactly, reduce-only:
  an exit decision, an unwind of a pair whose other entry leg was refused, a refused exit leg
  retried, or a reduce-only close that was capped.

Client order ids: `<bot>-s-<seq>` (spot) and `<bot>-p-<seq>` (perp), seq the bot's order counter
(entries send spot first): a replay of the same calls gives the same ids and intents. Tags:
`carry entry: <decision reason>`, `carry exit: <decision reason>`, `unwind: <why>`.

Not modelled here: the capital is only the equity's base (for the improved rules' drawdown
steps); whether it covers the spot leg and the perp margin is the risk gate's business. A
settlement at or before one already taken (a redelivery) is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from meridian_common.accounting import funding_paid
from meridian_common.money import MONEY_CONTEXT, ZERO, to_str
from meridian_common.sizing import MarketRules, quantity_for_notional
from meridian_common.strategy.funding_arb import (
    CARRY,
    EXIT,
    Decision,
    FundingArbParams,
    FundingArbRules,
    target_notional,
)
from meridian_common.strategy.intents import (
    BUY,
    SELL,
    Bar,
    BotFill,
    PlaceOrder,
    Routed,
    Settlement,
    check_bot_id,
    order_id,
)

ENTRY_ORDER, EXIT_ORDER = "entry", "exit"


@dataclass(frozen=True, slots=True)
class FundingArbBotParams:
    """The rules, both markets' order constraints and the capital the equity starts from."""

    rules: FundingArbParams
    spot: MarketRules
    perp: MarketRules
    capital: Decimal

    def __post_init__(self) -> None:
        if self.rules.allow_reverse:
            raise ValueError("rules.allow_reverse: the reverse pair shorts spot, which needs a "
                             "borrow the bus does not model; use allow_reverse=False")
        if not self.capital > 0:
            raise ValueError(f"capital must be positive, got {self.capital}")
        fine, coarse = sorted((self.spot.lot, self.perp.lot))
        if MONEY_CONTEXT.remainder(coarse, fine) != 0:
            raise ValueError(f"lots: spot {to_str(self.spot.lot)} and perp "
                             f"{to_str(self.perp.lot)} must nest (one a multiple of the other) "
                             "so that one quantity is valid on both legs")

    @property
    def lot(self) -> Decimal:
        """The coarser lot: a multiple of it is a valid quantity on both markets."""
        return max(self.spot.lot, self.perp.lot)


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """Funding booked on the perp leg at one settlement (amount > 0: received)."""

    time_ms: int
    perp_quantity: Decimal  # signed: negative = short
    mark: Decimal
    rate: Decimal
    amount: Decimal


class FundingArbBot:
    """The carry pair state machine (rules: module docstring); a `MarketsBot`."""

    def __init__(self, bot_id: str, spot_key: str, perp_key: str,
                 params: FundingArbBotParams) -> None:
        if spot_key == perp_key:
            raise ValueError(f"spot_key and perp_key must differ, both are {spot_key!r}")
        self._bot_id = check_bot_id(bot_id)
        self.spot_key = spot_key
        self.perp_key = perp_key
        self.params = params
        self.rules = FundingArbRules(params.rules)
        self.positions: dict[str, Decimal] = {spot_key: ZERO, perp_key: ZERO}
        self.cash = ZERO  # fills' cash flows: buy -q*p - fee, sell +q*p - fee
        self.funding = ZERO
        self.payments: list[FundingPayment] = []
        self.closes: dict[str, Decimal] = {}
        self.outstanding: dict[str, tuple[str, str]] = {}  # client id -> (key, entry/exit)
        self.seq = 0
        self.started = False
        self.pending: list[Settlement] = []
        self.decisions: list[Decision] = []
        self.notes: list[str] = []
        self.peak = params.capital
        self.last_settlement_ms: int | None = None
        self.exit_tag = "unwind: position held while the rules are flat"

    # -- MarketsBot ---------------------------------------------------------------------------

    @property
    def bot_id(self) -> str:
        return self._bot_id

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.spot_key, self.perp_key)

    @property
    def funding_keys(self) -> tuple[str, ...]:
        return (self.perp_key,)

    def equity(self) -> Decimal:
        """Capital + cash flows + funding + the legs marked at their last closes."""
        marked = sum((qty * self.closes[key] for key, qty in self.positions.items() if qty),
                     ZERO)
        return self.params.capital + self.cash + self.funding + marked

    def on_funding(self, key: str, settlement: Settlement) -> list[Routed]:
        """Warm-up: observe only. Then book funding on a held perp leg and queue the
        settlement for the next full candle group."""
        if key != self.perp_key:
            raise ValueError(f"funding for {key!r}: this bot takes funding of {self.perp_key!r}")
        t = settlement.time_ms
        if self.last_settlement_ms is not None and t <= self.last_settlement_ms:
            return []  # a redelivery: already observed (and booked)
        self.last_settlement_ms = t
        if not self.started:
            self.rules.observe(t, float(settlement.rate))
            return []
        self._book_funding(settlement)
        self.pending.append(settlement)
        return []

    def on_candles(self, bars: Mapping[str, Bar]) -> list[Routed]:
        """Update the closes; on a full group, decide the queued settlements and act."""
        for key in self.keys:
            bar = bars.get(key)
            if bar is not None:
                self.closes[key] = bar.close
        if self.spot_key not in bars or self.perp_key not in bars:
            return []
        spot_bar, perp_bar = bars[self.spot_key], bars[self.perp_key]
        if spot_bar.open_ms != perp_bar.open_ms:
            raise ValueError(f"a candle group must open at one time, got spot "
                             f"{spot_bar.open_ms} and perp {perp_bar.open_ms}")
        self.started = True
        self._decide_pending()
        self.peak = max(self.peak, self.equity())
        return self._act(spot_bar.open_ms)

    def on_fill(self, key: str, fill: BotFill) -> list[Routed]:
        """The leg's position and the cash follow every fill on its key (a capped reduce-only
        order included); the order is no longer outstanding."""
        if key not in self.positions:
            raise ValueError(f"fill on {key!r}: this bot trades {self.keys}")
        self.outstanding.pop(fill.client_order_id, None)
        value = fill.quantity * fill.price
        if fill.side == BUY:
            self.positions[key] += fill.quantity
            self.cash -= value + fill.fee
        else:
            self.positions[key] -= fill.quantity
            self.cash += value - fill.fee
        return []

    def on_rejected(self, key: str, client_order_id: str, reason: str) -> list[Routed]:
        """A refused entry leg abandons the pair (the other leg, if it fills, is unwound at the
        next full group); a refused exit leg is retried then. Unknown ids are ignored."""
        order = self.outstanding.pop(client_order_id, None)
        if order is None or order[1] != ENTRY_ORDER:
            return []
        self.rules.force_flat()
        self.exit_tag = f"unwind: entry leg {client_order_id} refused: {reason}"
        self.notes.append(f"entry leg {client_order_id} on {order[0]} refused: {reason}")
        return []

    # -- helpers ------------------------------------------------------------------------------

    def _book_funding(self, settlement: Settlement) -> None:
        qty = self.positions[self.perp_key]
        if qty == 0:
            return
        mark = self.closes[self.perp_key]
        amount = -funding_paid(qty, mark, settlement.rate)
        self.funding += amount
        self.payments.append(FundingPayment(settlement.time_ms, qty, mark, settlement.rate,
                                            amount))

    def _decide_pending(self) -> None:
        for settlement in self.pending:
            decision = self.rules.step(settlement.time_ms, float(settlement.rate))
            self.decisions.append(decision)
            if decision.action == EXIT:
                self.exit_tag = f"carry exit: {decision.reason}"
        self.pending.clear()

    def _act(self, time_ms: int) -> list[Routed]:
        if self.rules.direction != CARRY:
            return self._close_held()
        if self.outstanding:
            return []
        spot, perp = self.positions[self.spot_key], self.positions[self.perp_key]
        if spot == 0 and perp == 0:
            return self._enter(time_ms)
        if spot > 0 and spot == -perp:
            return []
        self.rules.force_flat()
        self.exit_tag = f"unwind: legs unequal (spot {to_str(spot)}, perp {to_str(perp)})"
        self.notes.append(f"{time_ms}: {self.exit_tag}")
        return self._close_held()

    def _enter(self, time_ms: int) -> list[Routed]:
        decision = self.decisions[-1]
        notional = target_notional(self.params.rules, decision.score, self.equity(), self.peak,
                                   ZERO)
        qty = quantity_for_notional(notional, self.closes[self.perp_key], self.params.lot)
        problem = self._size_problem(qty, notional)
        if problem:
            self.rules.force_flat()
            self.notes.append(f"{time_ms}: entry refused: {problem}")
            return []
        tag = f"carry entry: {decision.reason}"
        return [self._place(self.spot_key, BUY, qty, tag, ENTRY_ORDER),
                self._place(self.perp_key, SELL, qty, tag, ENTRY_ORDER)]

    def _size_problem(self, qty: Decimal, notional: Decimal) -> str:
        """Why `qty` cannot be traded on both legs ('' when it can)."""
        if qty == 0:
            return (f"notional {to_str(notional)} buys less than one lot "
                    f"{to_str(self.params.lot)} at {to_str(self.closes[self.perp_key])}")
        for key, market in ((self.spot_key, self.params.spot), (self.perp_key, self.params.perp)):
            # the market's own order checks, at its close on the market's tick
            reasons = market.valid(qty, market.round_price(self.closes[key], mode="nearest"))
            if reasons:
                return f"{key}: {reasons[0]}"
        return ""

    def _close_held(self) -> list[Routed]:
        """Close every held leg without an outstanding order, exactly and reduce-only."""
        busy = {key for key, _ in self.outstanding.values()}
        intents: list[Routed] = []
        for key in self.keys:
            qty = self.positions[key]
            if qty != 0 and key not in busy:
                side = SELL if qty > 0 else BUY
                intents.append(self._place(key, side, abs(qty), self.exit_tag, EXIT_ORDER,
                                           reduce_only=True))
        return intents

    def _place(self, key: str, side: int, qty: Decimal, tag: str, kind: str,
               reduce_only: bool = False) -> Routed:
        self.seq += 1
        coid = order_id(self.bot_id, "s" if key == self.spot_key else "p", self.seq)
        self.outstanding[coid] = (key, kind)
        return key, PlaceOrder(coid, side, qty, None, tag, reduce_only=reduce_only)
