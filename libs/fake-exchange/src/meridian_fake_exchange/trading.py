"""Accounts, orders, executions and positions, and the arithmetic that moves them.

This is the exchange's ledger, kept in exact `Decimal` so a test can recompute every wallet
change by hand: a linear (USDT-margined) fill changes the wallet by realised PnL minus the fee;
a spot fill moves two coin balances (Bybit takes a spot buy's fee in the coin received, a
sell's in the quote coin). Nothing here knows about HTTP or about when fills happen; the
matching engine (matching.py) decides that and calls `apply_fill`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from meridian_fake_exchange.specs import split_symbol

ZERO = Decimal(0)
#: average entry prices are kept to this many decimals (an average of several fills
#: does not terminate in general); everything else is exact
ENTRY_QUANTUM = Decimal("1e-8")
OPEN_STATUSES = frozenset({"New", "PartiallyFilled"})
#: maintenance margin rate reported for positions (risk tier 1); the fake never liquidates
MAINTENANCE_RATE = Decimal("0.005")

PriceOf = Callable[[str], Decimal | None]


@dataclass(frozen=True)
class Fees:
    """Fee rates (fractions of the traded value); Bybit's non-VIP defaults."""

    linear_taker: Decimal = Decimal("0.00055")
    linear_maker: Decimal = Decimal("0.0002")
    spot_taker: Decimal = Decimal("0.001")
    spot_maker: Decimal = Decimal("0.001")

    def rate(self, category: str, maker: bool) -> Decimal:
        if category == "spot":
            return self.spot_maker if maker else self.spot_taker
        return self.linear_maker if maker else self.linear_taker


@dataclass
class Order:
    """One accepted order. Quantities are base-coin amounts, except a spot market order with
    `market_unit == "quoteCoin"`, whose `qty` is the quote amount to spend or receive."""

    order_id: str
    link_id: str
    account: str
    category: str
    symbol: str
    side: str                       # "Buy" | "Sell"
    order_type: str                 # "Market" | "Limit"
    qty: Decimal
    price: Decimal | None           # limit price; None for market orders
    time_in_force: str              # GTC | IOC | FOK | PostOnly
    position_idx: int
    reduce_only: bool
    created_ms: int
    last_price_on_created: Decimal
    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None
    market_unit: str = ""           # spot market orders: "baseCoin" | "quoteCoin"
    status: str = "New"
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    fee_coin: str = ""
    updated_ms: int = 0
    reject_reason: str = "EC_NoError"
    cancel_type: str = "UNKNOWN"
    create_type: str = "CreateByUser"
    stop_order_type: str = ""
    closing: bool = False           # reduces a position (reduce-only, or hedge-mode close side)
    trigger_price: Decimal | None = None  # the TP/SL level that created this order
    #: the engine's bookkeeping: evaluated up to this fake time; taker while marketable
    eval_ms: int = 0
    taker: bool = True
    piece_qty: Decimal | None = None
    pieces_left: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def quote_qty(self) -> bool:
        return self.market_unit == "quoteCoin"

    @property
    def leaves_qty(self) -> Decimal:
        if not self.is_open or self.quote_qty:
            return ZERO
        return self.qty - self.cum_qty

    @property
    def avg_price(self) -> Decimal | None:
        if self.cum_qty == 0:
            return None
        return (self.cum_value / self.cum_qty).quantize(ENTRY_QUANTUM).normalize()

    def finish(self, now: int, cancel_type: str = "UNKNOWN") -> None:
        """Close an order that will not fill further: Filled when complete, else cancelled
        (a partly filled spot order becomes PartiallyFilledCanceled; linear keeps
        "Cancelled" with cumExecQty > 0, as Bybit reports it)."""
        self.updated_ms = now
        if self.cum_qty > 0 and (self.quote_qty or self.cum_qty >= self.qty):
            self.status = "Filled"
            return
        self.cancel_type = cancel_type
        if self.cum_qty > 0 and self.category == "spot":
            self.status = "PartiallyFilledCanceled"
        else:
            self.status = "Cancelled"


@dataclass(frozen=True)
class Execution:
    """One fill (Bybit's execution list item)."""

    exec_id: str
    order: Order
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_rate: Decimal
    fee_coin: str
    maker: bool
    time_ms: int
    closed_qty: Decimal
    leaves_qty: Decimal
    mark_price: Decimal
    seq: int
    realised: Decimal = ZERO        # closed qty x (price - entry), before the fee

    @property
    def value(self) -> Decimal:
        return self.price * self.qty


@dataclass
class Position:
    """A linear position. `qty` is signed: > 0 long, < 0 short (hedge mode keeps longs on
    positionIdx 1 and shorts on 2)."""

    symbol: str
    idx: int
    qty: Decimal = ZERO
    entry: Decimal = ZERO
    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None
    created_ms: int = 0
    updated_ms: int = 0
    cur_realised: Decimal = ZERO
    cum_realised: Decimal = ZERO
    eval_ms: int = 0                # TP/SL evaluated up to this fake time

    @property
    def side(self) -> str:
        return "Buy" if self.qty > 0 else "Sell" if self.qty < 0 else ""

    @property
    def size(self) -> Decimal:
        return abs(self.qty)

    @property
    def value(self) -> Decimal:
        return self.size * self.entry

    def upl(self, price: Decimal | None) -> Decimal:
        return ZERO if price is None or self.qty == 0 else self.qty * (price - self.entry)


@dataclass
class Account:
    """One API key's unified trading account."""

    api_key: str
    balances: dict[str, Decimal]
    leverage: dict[str, Decimal] = field(default_factory=dict)
    hedged: set[str] = field(default_factory=set)
    positions: dict[tuple[str, int], Position] = field(default_factory=dict)
    orders: list[Order] = field(default_factory=list)
    by_id: dict[str, Order] = field(default_factory=dict)
    by_link: dict[str, Order] = field(default_factory=dict)
    executions: list[Execution] = field(default_factory=list)
    #: every order/position change, in order (read by private WebSocket streams)
    changes: list[Order | Position] = field(default_factory=list)

    def touch(self, *changed: Order | Position) -> None:
        self.changes.extend(changed)

    def position(self, symbol: str, idx: int) -> Position:
        key = (symbol, idx)
        if key not in self.positions:
            self.positions[key] = Position(symbol, idx)
        return self.positions[key]

    def open_orders(self) -> list[Order]:
        return [o for o in self.orders if o.is_open]

    def add(self, order: Order) -> None:
        self.orders.append(order)
        self.by_id[order.order_id] = order
        if order.link_id:
            self.by_link[order.link_id] = order

    # -- margin --------------------------------------------------------------------------------

    def upl(self, price_of: PriceOf) -> Decimal:
        return sum((p.upl(price_of(p.symbol)) for p in self.positions.values()), ZERO)

    def position_im(self, symbol: str | None = None) -> Decimal:
        return sum((p.value / self.leverage_of(p.symbol) for p in self.positions.values()
                    if symbol in (None, p.symbol)), ZERO)

    def order_im(self, fees: Fees) -> Decimal:
        """Margin held by open linear orders that can open or increase a position."""
        total = ZERO
        for o in self.orders:
            if o.is_open and o.category == "linear" and not o.closing and o.price is not None:
                qty = self.opening_qty(o.symbol, o.position_idx, o.side, o.leaves_qty)
                notional = qty * o.price
                total += notional / self.leverage_of(o.symbol) + notional * fees.linear_taker
        return total

    def opening_qty(self, symbol: str, idx: int, side: str, qty: Decimal) -> Decimal:
        """The part of `qty` that opens or increases a position (one-way mode: an order on
        the other side first closes what is there)."""
        held = self.position(symbol, idx).qty
        if idx == 0 and held != 0 and (held > 0) != (side == "Buy"):
            return max(qty - abs(held), ZERO)
        return qty

    def spot_locked(self, coin: str) -> Decimal:
        """Balance held by open spot limit orders (quote for buys, base for sells)."""
        total = ZERO
        for o in self.orders:
            if not (o.is_open and o.category == "spot" and o.price is not None):
                continue
            base, quote = split_symbol(o.symbol)
            if o.side == "Buy" and quote == coin:
                total += o.leaves_qty * o.price
            elif o.side == "Sell" and base == coin:
                total += o.leaves_qty
        return total

    def available(self, coin: str, price_of: PriceOf, fees: Fees) -> Decimal:
        """What a new order may use: for USDT the margin balance (wallet + unrealised PnL)
        minus position and order margin and spot locks; other coins: balance minus locks."""
        free = self.balances.get(coin, ZERO) - self.spot_locked(coin)
        if coin == "USDT":
            free += self.upl(price_of) - self.position_im() - self.order_im(fees)
        return free

    def leverage_of(self, symbol: str) -> Decimal:
        return self.leverage.get(symbol, DEFAULT_LEVERAGE)


DEFAULT_LEVERAGE = Decimal(10)


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """`value` rounded down to a multiple of `step`."""
    return (value / step).to_integral_value(ROUND_DOWN) * step


def round_to(value: Decimal, step: Decimal) -> Decimal:
    """`value` rounded to the nearest multiple of `step` (ties to even)."""
    return (value / step).to_integral_value(ROUND_HALF_EVEN) * step


def apply_linear_fill(account: Account, order: Order, qty: Decimal, price: Decimal,
                      fee: Decimal, now: int) -> tuple[Decimal, Decimal]:
    """Move the position and the USDT wallet for one linear fill; returns the closed qty and
    the realised PnL (before the fee).

    Opening or adding: the entry becomes the size-weighted average. Closing: realised PnL
    = closed qty x (exit - entry) for a long (reversed for a short) is booked to the wallet;
    in one-way mode the rest of the fill opens the other side at the fill price. The fee is
    always paid from the wallet and counted in the position's realised PnL, as Bybit does.
    """
    pos = account.position(order.symbol, order.position_idx)
    signed = qty if order.side == "Buy" else -qty
    realised, closed = ZERO, ZERO
    if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
        if pos.qty == 0:
            pos.created_ms, pos.cur_realised = now, ZERO
        total = pos.size + qty
        pos.entry = ((pos.size * pos.entry + qty * price) / total).quantize(ENTRY_QUANTUM)
        pos.qty += signed
    else:
        closed = min(qty, pos.size)
        direction = 1 if pos.qty > 0 else -1
        realised = closed * (price - pos.entry) * direction
        pos.qty += closed * (-direction)
        rest = qty - closed
        if pos.qty == 0:
            pos.entry, pos.take_profit, pos.stop_loss = ZERO, None, None
        if rest > 0:  # one-way flip: the remainder opens the other side
            pos.qty, pos.entry, pos.created_ms = signed / qty * rest, price, now
    account.balances["USDT"] = account.balances.get("USDT", ZERO) + realised - fee
    pos.cur_realised += realised - fee
    pos.cum_realised += realised - fee
    pos.updated_ms = now
    # an order's TP/SL applies to the position it opened or increased (on its own side), not
    # to a position on the other side it only reduced
    if pos.side == order.side and not order.closing \
            and (order.take_profit is not None or order.stop_loss is not None):
        pos.take_profit, pos.stop_loss, pos.eval_ms = order.take_profit, order.stop_loss, now
    return closed, realised


def apply_spot_fill(account: Account, order: Order, qty: Decimal, price: Decimal,
                    fee: Decimal) -> None:
    """Move the two coin balances of one spot fill (the fee in the coin received)."""
    base, quote = split_symbol(order.symbol)
    bal = account.balances
    if order.side == "Buy":
        bal[base] = bal.get(base, ZERO) + qty - fee
        bal[quote] = bal.get(quote, ZERO) - qty * price
    else:
        bal[base] = bal.get(base, ZERO) - qty
        bal[quote] = bal.get(quote, ZERO) + qty * price - fee
