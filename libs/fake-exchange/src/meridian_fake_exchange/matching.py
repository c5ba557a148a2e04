"""The matching engine: accepts orders against account state and fills them as the clock moves.

Fills depend only on the fake clock and the price path (pricing.py), never on how often the
engine looks: `step(now)` replays everything that happened since the last look in time order
(a resting limit fills at the first millisecond the price reaches it, at its limit price, as
maker; an attached stop loss triggers at the first millisecond the price crosses it and closes
the position at the path price then, as taker; a stop reached after an entry fill in the same
step is still seen). The server calls `step` on every private request and from a background
task; tests may call it too. The one exception is the partial-fill fault, which by design
fills one piece per distinct clock instant at which the engine looks.

There is no order book: market orders and marketable limits fill completely at the current
price (rounded to the tick), never better than the limit.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from meridian_fake_exchange.faults import OrderFaults
from meridian_fake_exchange.order_rules import (
    PARAMS,
    OrderRequest,
    category_param,
    check_tpsl,
    params_error,
    parse_order,
)
from meridian_fake_exchange.pricing import PricePath
from meridian_fake_exchange.specs import Spec, split_symbol
from meridian_fake_exchange.trading import (
    DEFAULT_LEVERAGE,
    ZERO,
    Account,
    Execution,
    Fees,
    Order,
    Position,
    apply_linear_fill,
    apply_spot_fill,
    floor_to,
    round_to,
)
from meridian_fake_exchange.venue import ParamError

SpecOf = Callable[[str, str], Spec]
SPOT_BALANCE = (170131, "Balance insufficient")
Answer = tuple[int, str]


@dataclass(frozen=True)
class Rules:
    """What differs between the venues a matching engine serves: the code and message of each
    rejection the engine itself decides (the front-ends validate the request fields), how
    unique client ids must be, the default leverage and the shape of ids.

    `min_notional`'s message may use `{min_notional}`."""

    params: int
    not_enough_margin: Answer
    duplicate_link_id: Answer
    zero_position: Answer
    reduce_only: Answer
    min_notional: Answer
    not_found: Answer
    position_idx: Answer
    #: True: a client id may not repeat among OPEN orders only (Binance: "a unique id among
    #: open orders"); False: among all orders of the account (Bybit)
    unique_among_open_only: bool = False
    default_leverage: Decimal = Decimal(10)
    #: integer order/trade ids from a counter (Binance) instead of seeded UUIDs (Bybit)
    numeric_ids: bool = False


BYBIT_RULES = Rules(
    params=PARAMS,
    not_enough_margin=(110007, "ab not enough for new order"),
    duplicate_link_id=(110072, "OrderLinkedID is duplicate"),
    zero_position=(110017, "current position is zero, cannot fix reduce-only order qty"),
    reduce_only=(110017, "Reduce-only rule not satisfied"),
    min_notional=(110094, "Order does not meet minimum order value {min_notional}USDT"),
    not_found=(110001, "order not exists or too late to cancel"),
    position_idx=(PARAMS, "params error: position idx not match position mode"),
)
#: first ids a numeric-id engine hands out (above 2**31, like the venue's, so a client that
#: stores them in 32 bits breaks here and not in production)
FIRST_ORDER_ID, FIRST_TRADE_ID = 4_000_000_001, 300_000_001


class Fill(NamedTuple):
    """A pending fill found by a step: when, at what price, maker or taker."""

    time_ms: int
    price: Decimal
    maker: bool


class Engine:
    """All accounts of one server and the rules that move them."""

    def __init__(self, path: PricePath, spec_of: SpecOf, symbols: tuple[str, ...],
                 fees: Fees, faults: OrderFaults, api_keys: Iterable[str],
                 balances: Mapping[str, Decimal], seed: int = 0,
                 rules: Rules = BYBIT_RULES) -> None:
        self.path = path
        self.spec_of = spec_of
        self.symbols = symbols
        self.fees = fees
        self.faults = faults
        self.rules = rules
        leverage = {} if rules.default_leverage == DEFAULT_LEVERAGE else \
            dict.fromkeys(symbols, rules.default_leverage)
        self.accounts = {key: Account(key, dict(balances), dict(leverage)) for key in api_keys}
        self.create_requests: Counter[str] = Counter()
        self._rng = random.Random(seed)  # noqa: S311 - reproducible ids, not crypto
        self._seq = 0
        self._ids = {"order": FIRST_ORDER_ID, "trade": FIRST_TRADE_ID}

    # -- helpers -------------------------------------------------------------------------------

    def new_id(self, kind: str = "order") -> str:
        """A fresh order ("order") or execution ("trade") id in the venue's style."""
        if self.rules.numeric_ids:
            self._ids[kind] += 1
            return str(self._ids[kind] - 1)
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def reject(self, answer: Answer, **fields: Any) -> ParamError:
        code, msg = answer
        return ParamError(code, msg.format(**fields) if fields else msg)

    def price(self, symbol: str, now: int) -> Decimal | None:
        return self.path.price_at(symbol, now)

    def price_of(self, now: int) -> Callable[[str], Decimal | None]:
        return lambda symbol: self.path.price_at(symbol, now)

    def last(self, symbol: str, now: int) -> Decimal:
        last = self.price(symbol, now)
        if last is None:
            raise ParamError(self.rules.params, f"{symbol} has no market price yet at {now} "
                                                "(before the first candle of the data)")
        return last

    # -- orders --------------------------------------------------------------------------------

    def place(self, account: Account, params: Mapping[str, Any], now: int) -> Order:
        """Validate and accept one order, and match it at once; ParamError if rejected."""
        return self.accept(account, parse_order(params, self.symbols, self.spec_of), now)

    def accept(self, account: Account, req: OrderRequest, now: int) -> Order:
        """Check a request that passed its venue's field validation against the account, and
        accept and match it; ParamError (with the venue's codes, see Rules) if rejected."""
        known = account.by_link.get(req.link_id) if req.link_id else None
        if known is not None and (known.is_open or not self.rules.unique_among_open_only):
            raise self.reject(self.rules.duplicate_link_id)
        last = self.last(req.symbol, now)
        qty, idx, closing = req.qty, 0, False
        if req.category == "linear":
            idx, closing, qty = self._check_linear(account, req, last, now)
        else:
            self._check_spot(account, req, last, now)
        order = Order(self.new_id(), req.link_id, account.api_key, req.category, req.symbol,
                      req.side, req.order_type, qty, req.price, req.time_in_force, idx,
                      req.reduce_only, now, last, None if closing else req.take_profit,
                      None if closing else req.stop_loss, req.market_unit, updated_ms=now,
                      closing=closing, eval_ms=now)
        pieces = self.faults.take_pieces()
        if pieces > 1 and not order.quote_qty and order.time_in_force != "FOK":
            step = Decimal(self.spec_of(req.category, req.symbol).step)
            piece = floor_to(qty / pieces, step)
            if piece > 0:
                order.piece_qty, order.pieces_left = piece, pieces
        account.add(order)
        self._submit(account, order, last, now)
        account.touch(order)
        return order

    def _check_linear(self, account: Account, req: OrderRequest, last: Decimal,
                      now: int) -> tuple[int, bool, Decimal]:
        """Position mode, reduce-only, TP/SL and margin rules; -> (positionIdx, closing, qty)."""
        hedged = req.symbol in account.hedged
        idx = req.position_idx if req.position_idx is not None else 0
        if hedged != (idx in (1, 2)):
            raise self.reject(self.rules.position_idx)
        if hedged:
            closing = (req.side == "Sell") == (idx == 1)
            if req.reduce_only and not closing:
                raise self.reject(self.rules.reduce_only)
        else:
            closing = req.reduce_only
        qty = req.qty
        if closing:
            held = account.position(req.symbol, idx).qty
            if held == 0:
                raise self.reject(self.rules.zero_position)
            if (held > 0) == (req.side == "Buy"):
                raise self.reject(self.rules.reduce_only)
            return idx, True, min(qty, abs(held))
        ref = req.price if req.price is not None else last
        check_tpsl(req.side, req.take_profit, req.stop_loss, ref, "order")
        spec = self.spec_of("linear", req.symbol)
        if qty * ref < Decimal(spec.min_notional):
            raise self.reject(self.rules.min_notional, min_notional=spec.min_notional)
        opening = account.opening_qty(req.symbol, idx, req.side, qty)
        notional = opening * ref
        need = notional / account.leverage_of(req.symbol) + notional * self.fees.linear_taker
        if need > account.available("USDT", self.price_of(now), self.fees):
            raise self.reject(self.rules.not_enough_margin)
        return idx, False, qty

    def _check_spot(self, account: Account, req: OrderRequest, last: Decimal,
                    now: int) -> None:
        base, quote = split_symbol(req.symbol)
        spec = self.spec_of("spot", req.symbol)
        ref = req.price if req.price is not None else last
        if req.market_unit == "baseCoin" and req.qty * last < Decimal(spec.min_notional):
            raise ParamError(170140, "Order value exceeded lower limit.")
        if req.side == "Buy":
            coin, need = quote, req.qty if req.market_unit == "quoteCoin" else req.qty * ref
        else:
            coin, need = base, req.qty / ref if req.market_unit == "quoteCoin" else req.qty
        if need > account.available(coin, self.price_of(now), self.fees):
            raise ParamError(*SPOT_BALANCE)

    def _submit(self, account: Account, order: Order, last: Decimal, now: int) -> None:
        """The first match, at acceptance: take liquidity if marketable, else rest."""
        marketable = order.order_type == "Market" or self._crosses(order, last)
        if order.time_in_force == "PostOnly" and marketable:
            order.reject_reason = "EC_PostOnlyWillTakeLiquidity"
            order.finish(now, "CancelByUser")
            return
        if not marketable:
            order.taker = False
            if order.time_in_force in ("IOC", "FOK"):
                order.finish(now)
            return
        self._fill(account, order, Fill(now, self._taker_price(order, last), False),
                   whole=order.time_in_force == "FOK")
        # an IOC limit keeps only what it got at once; a market order under the partial-fill
        # fault keeps filling piece by piece (that is the fault's point)
        if order.is_open and (order.order_type == "Limit" or order.piece_qty is None) \
                and order.time_in_force in ("IOC", "FOK"):
            order.finish(now)

    @staticmethod
    def _crosses(order: Order, price: Decimal) -> bool:
        assert order.price is not None
        return price <= order.price if order.side == "Buy" else price >= order.price

    def _taker_price(self, order: Order, last: Decimal) -> Decimal:
        tick = Decimal(self.spec_of(order.category, order.symbol).tick)
        price = round_to(last, tick)
        if order.price is not None:  # never worse than the limit
            price = min(price, order.price) if order.side == "Buy" else max(price, order.price)
        return price

    def _fill(self, account: Account, order: Order, fill: Fill, *,
              whole: bool = False) -> None:
        """Execute one fill (a piece under the partial-fill fault, else everything left)."""
        qty = order.leaves_qty
        if order.piece_qty is not None and not whole and order.pieces_left > 1:
            qty = min(qty, order.piece_qty)
        spec = self.spec_of(order.category, order.symbol)
        if order.quote_qty:  # spot market order sized in quote coin
            qty = floor_to(order.qty / fill.price, Decimal(spec.step))
        closed = realised = ZERO
        if order.closing:
            held = account.position(order.symbol, order.position_idx).qty
            closable = abs(held) if held != 0 and (held > 0) != (order.side == "Buy") else ZERO
            qty = min(qty, closable)
        if qty <= 0:
            order.finish(fill.time_ms, "CancelByReduceOnly" if order.closing else "UNKNOWN")
            account.touch(order)
            return
        rate = self.fees.rate(order.category, fill.maker)
        if order.category == "spot":
            base, quote = split_symbol(order.symbol)
            fee_coin = base if order.side == "Buy" else quote
            fee = qty * rate if order.side == "Buy" else qty * fill.price * rate
            apply_spot_fill(account, order, qty, fill.price, fee)
        else:
            fee_coin, fee = "USDT", qty * fill.price * rate
            closed, realised = apply_linear_fill(account, order, qty, fill.price, fee,
                                                 fill.time_ms)
        order.cum_qty += qty
        order.cum_value += qty * fill.price
        order.cum_fee += fee
        order.fee_coin = fee_coin
        order.updated_ms = fill.time_ms
        order.pieces_left = max(order.pieces_left - 1, 0)
        self._seq += 1
        account.executions.append(Execution(
            self.new_id("trade"), order, fill.price, qty, fee, rate, fee_coin, fill.maker,
            fill.time_ms, closed, order.qty - order.cum_qty if not order.quote_qty else ZERO,
            self.price(order.symbol, fill.time_ms) or fill.price, self._seq, realised))
        if order.quote_qty or order.cum_qty >= order.qty:
            order.finish(fill.time_ms)
        else:
            order.status = "PartiallyFilled"
        account.touch(order)
        if order.category == "linear":
            account.touch(account.position(order.symbol, order.position_idx))
            self._drop_stale_closers(account, order.symbol, order.position_idx, fill.time_ms)

    @staticmethod
    def _drop_stale_closers(account: Account, symbol: str, idx: int, now: int) -> None:
        """Bybit cancels reduce-only orders that can no longer reduce anything (the position
        is gone, or in one-way mode now on the order's own side)."""
        held = account.position(symbol, idx).qty
        for other in account.open_orders():
            if other.closing and other.symbol == symbol and other.position_idx == idx \
                    and (held == 0 or (held > 0) == (other.side == "Buy")):
                other.finish(now, "CancelByReduceOnly")
                account.touch(other)

    def cancel(self, account: Account, params: Mapping[str, Any], now: int) -> Order:
        category, symbol = category_param(params), str(params.get("symbol") or "")
        order = self._find(account, params)
        if order is not None and (order.category != category
                                  or (symbol and order.symbol != symbol)):
            order = None
        return self.cancel_order(account, order, now)

    def cancel_order(self, account: Account, order: Order | None, now: int) -> Order:
        """Cancel an open order by the user; the venue's not-found answer if it is not open."""
        if order is None or not order.is_open:
            raise self.reject(self.rules.not_found)
        order.finish(now, "CancelByUser")
        account.touch(order)
        return order

    def cancel_all(self, account: Account, params: Mapping[str, Any], now: int) -> list[Order]:
        category = category_param(params)
        symbol = str(params.get("symbol") or "")
        base = str(params.get("baseCoin") or "")
        settle = str(params.get("settleCoin") or "")
        if category == "linear" and not (symbol or base or settle):
            raise params_error("params error: symbol, baseCoin or settleCoin is required")
        done = []
        for order in account.open_orders():
            coins = split_symbol(order.symbol)
            if order.category == category and symbol in ("", order.symbol) \
                    and base in ("", coins[0]) and settle in ("", coins[1]):
                order.finish(now, "CancelByUser")
                account.touch(order)
                done.append(order)
        return done

    @staticmethod
    def _find(account: Account, params: Mapping[str, Any]) -> Order | None:
        order_id, link_id = params.get("orderId"), params.get("orderLinkId")
        if not order_id and not link_id:
            raise params_error("params error: orderId or orderLinkId is required")
        if order_id:
            return account.by_id.get(str(order_id))
        return account.by_link.get(str(link_id))

    # -- the clock moves -----------------------------------------------------------------------

    def step(self, now: int) -> None:
        """Apply everything that happened up to fake time `now`, in time order."""
        for account in self.accounts.values():
            self._step_account(account, now)

    def _step_account(self, account: Account, now: int) -> None:
        while True:
            best: tuple[int, int, int, Order | Position, Fill] | None = None
            for pos in account.positions.values():
                found = self._stop_due(pos, now)
                if found is not None and (best is None or (found.time_ms, 0) < best[:2]):
                    best = (found.time_ms, 0, 0, pos, found)
            for n, order in enumerate(account.open_orders()):
                found = self._fill_due(order, now)
                if found is not None and (best is None or (found.time_ms, 1, n) < best[:3]):
                    best = (found.time_ms, 1, n, order, found)
            if best is None:
                return
            _, _, _, what, fill = best
            if isinstance(what, Position):
                self._trigger(account, what, fill)
            else:
                self._fill(account, what, fill)
                what.eval_ms = now if what.piece_qty is not None else fill.time_ms

    def _fill_due(self, order: Order, now: int) -> Fill | None:
        """The order's next fill in (eval_ms, now], if any (updates eval_ms when none)."""
        if order.eval_ms >= now:
            order.eval_ms = min(order.eval_ms, now)  # the clock may have been set back
            return None
        last = self.price(order.symbol, now)
        if last is None:
            return None
        if order.taker:  # still taking: fills at the step's price
            if order.order_type == "Market" or self._crosses(order, last):
                return Fill(now, self._taker_price(order, last), False)
            order.taker = False  # the price moved away: it rests from now on
            order.eval_ms = now
            return None
        assert order.price is not None
        touch = self.path.first_reach(order.symbol, order.eval_ms, now, order.price,
                                      down=order.side == "Buy")
        if touch is None:
            order.eval_ms = now
            return None
        return Fill(touch.time_ms, order.price, True)

    def _stop_due(self, pos: Position, now: int) -> Fill | None:
        if pos.qty == 0 or (pos.take_profit is None and pos.stop_loss is None):
            return None
        if pos.eval_ms >= now:
            pos.eval_ms = min(pos.eval_ms, now)
            return None
        long = pos.qty > 0
        touches = []
        for level, down in ((pos.stop_loss, long), (pos.take_profit, not long)):
            if level is not None:
                touch = self.path.first_reach(pos.symbol, pos.eval_ms, now, level, down)
                if touch is not None:
                    touches.append(touch)
        if not touches:
            pos.eval_ms = now
            return None
        first = min(touches)
        return Fill(first.time_ms, first.price, False)

    def _trigger(self, account: Account, pos: Position, fill: Fill) -> None:
        """A take profit / stop loss was reached: close the position with a market order."""
        long = pos.qty > 0
        price = fill.price
        is_sl = pos.stop_loss is not None and (price <= pos.stop_loss if long
                                               else price >= pos.stop_loss)
        trigger = pos.stop_loss if is_sl else pos.take_profit
        order = Order(self.new_id(), "", account.api_key, "linear", pos.symbol,
                      "Sell" if long else "Buy", "Market", pos.size, None, "IOC", pos.idx, True,
                      fill.time_ms, price, updated_ms=fill.time_ms, closing=True,
                      create_type="CreateByStopLoss" if is_sl else "CreateByTakeProfit",
                      stop_order_type="StopLoss" if is_sl else "TakeProfit",
                      eval_ms=fill.time_ms, trigger_price=trigger)
        account.add(order)
        tick = Decimal(self.spec_of("linear", pos.symbol).tick)
        self._fill(account, order, Fill(fill.time_ms, round_to(price, tick), False))
        pos.eval_ms = fill.time_ms

