"""Paper execution: approved orders and candles in, order events and fills out.

Per key, candles and orders are taken in event time: a candle is evaluated once the order
stream has reached its open (every order that could act on it has arrived), so fills never
depend on how the two input streams interleave. Evaluating a candle, in this order:
1. market orders with event time <= its open fill at its open (± slippage, taker fee): the
   first candle at or after the order, however late the order arrives;
2. the position's protective exits (the stop-loss, take-profit and trailing stop of the order
   that opened it) are checked against its open/high/low by `meridian_common.triggers` (stop
   first when both are in range, a gap through the stop exits at the open, the take-profit is
   a maker fill at its price, the trailing stop trails from the best price before this
   candle); a position opened at this open is checked on this candle already;
3. resting limit orders fill when the price trades through them (`triggers.RestingLimit`),
   several on one candle in `triggers.path_order` (those filled at the open, then buys from the
   highest limit down, then sells from the lowest up: the rule the bots' simulation uses); a
   position a limit order opened inside a candle is protected from the next candle on (the
   path inside the candle is unknown).
A protective exit is an order of the executor's own (client id derived from the entry's), with
its events and fill like any other. A reduce-only order never opens or increases a position:
it is capped to the position, and refused when there is none (an exit that came after the
stop). Every fill in a candle carries the candle's open time, in the order above.

Cancels (`ApprovedOrder.action` CANCEL, a bot's) act from their event time t: the order with
that client id, still waiting for its candle (market) or resting (limit) on the key, may fill
on a candle that opened before t, never on one that opens at or after t. So the candles before
t are evaluated first (an order still to come has event time >= t: none can act on them), and
the order is removed and CANCELED (event time t) once no candle before t can still come: at
once when a received candle closes at or after t (the usual case: the gate decides at a
candle's close), else just before the first candle evaluated after t, or when the one that
spans t has been. An id that is not waiting, or that fills before t (filled, refused, unknown:
the bot's cancel raced its fill) changes nothing but the order watermark, and is logged. A
cancel is no order: no events of its own.

fill.v1 is sparse; its watermark for a key is min(order watermark, last candle open): every
candle up to it has been evaluated. The order watermark is the gate's Watermark, or an order's
event time t: a signal's order (action UNSPECIFIED, one per key and candle) vouches for t itself,
a bot's record (action PLACE or CANCEL, several at one t) only for t - 1, so the candle opening
at t waits for the gate's watermark and every order at t is in before it is evaluated. After
a crash the host rebuilds the state from the inputs; records after the committed offsets are
handled again and publish the same fills (same ids, same bytes), which the ledger counts once.

Tracing: an order's fill and its later events are emitted while a later candle is handled, but
they belong to the order, so they continue the order's trace (`tracing.caused_by` with the
context its record was handled in, kept with the order); a protective exit is an order this
executor makes on the candle that triggers it, so it continues that candle's trace; a CANCELED
event is the answer to the cancel record, so it continues that record's trace. After a
restart the rebuilt orders keep the context their records carried (the risk gate's span), or
none when tracing was off then: such a fill falls back to the trace of the record being handled.
Tracing never changes what is emitted or in which order.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from opentelemetry.context import Context
from prometheus_client import CollectorRegistry

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, order_approved_pb2
from meridian_common import ids, orders, protection, topics, tracing, triggers
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel, SimulatedFill
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox
from meridian_common.money import ZERO, dec, to_str
from meridian_common.orders import Order
from meridian_execution.metrics import ExecutionMetrics
from meridian_execution.settings import ExecutionSettings

log = logging.getLogger(__name__)
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL


@dataclass(frozen=True, slots=True)
class _Bar:
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close_ms: int  # 0 when the candle does not say
    trace: Context | None = field(default=None, compare=False)  # the candle's


@dataclass(slots=True)
class _Pending:
    """A market order waiting for its candle."""

    order: order_approved_pb2.ApprovedOrder
    state: Order
    trace: Context | None = None  # the order's
    cancel_at: int | None = None  # a cancel's event time: gone from the candle opening then
    cancel_reason: str = ""
    cancel_trace: Context | None = None  # the cancel's (its CANCELED event continues it)


@dataclass(slots=True)
class _Resting:
    order: order_approved_pb2.ApprovedOrder
    state: Order
    limit: triggers.RestingLimit[Decimal]
    trace: Context | None = None  # the order's
    cancel_at: int | None = None  # as _Pending's
    cancel_reason: str = ""
    cancel_trace: Context | None = None


@dataclass(slots=True)
class _Book:
    bars: deque[_Bar] = field(default_factory=deque)  # received, not yet evaluated
    pending: list[_Pending] = field(default_factory=list)
    resting: list[_Resting] = field(default_factory=list)
    position: Decimal = ZERO  # signed, from this executor's fills
    protect: protection.Guard | None = None
    order_wm: int = 0
    last_open: int = 0  # newest candle received
    last_close: int = 0  # its close: no candle opening before it can still come
    done_open: int = 0  # newest candle evaluated
    fill_wm: int = 0


class ExecutionHandler(Handler):
    name = "execution"
    inputs = (topics.ORDER_APPROVED, topics.CANDLE)
    outputs = (topics.ORDER_EVENT, topics.FILL)
    # The state (orders waiting for their candle, candles waiting for the orders, positions and
    # their stops) is a function of the two inputs per key: rebuilt on start up to the
    # committed offsets, so an order consumed (and committed) before a crash still fills.
    rebuild_from_inputs = True
    metrics: ExecutionMetrics | None = None  # bound by the host (`bind_metrics`)

    def __init__(self, settings: ExecutionSettings) -> None:
        self.settings = settings
        self.model = PaperFillModel(FeeSchedule(settings.maker_fee, settings.taker_fee),
                                    settings.slippage_bps)
        self.books: dict[str, _Book] = {}
        self.fills = 0

    def reset_state(self) -> None:
        """Drop every book (orders, candles, positions, stops) and the fill count, as
        `__init__` leaves them: the host rebuilds them from offset 0 after a rebalance."""
        self.books = {}
        self.fills = 0

    def _book(self, key: str) -> _Book:
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = _Book()
        return book

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        self.metrics = ExecutionMetrics(registry)
        self._observe(out=None, since=0)

    def _observe(self, out: Outbox | None, since: int) -> None:
        """Count what this record made the executor emit (outputs from `since` on; nothing while
        the host replays the inputs to rebuild the state); the open orders from the state."""
        if self.metrics is None:
            return
        if out is not None and not getattr(self, "replaying", False):
            self.metrics.published(out.items[since:])
        self.metrics.open_orders.set(sum(len(b.pending) + len(b.resting)
                                         for b in self.books.values()))

    def handle(self, msg: Inbound, out: Outbox) -> None:
        since = len(out.items)
        self._handle(msg, out)
        self._observe(out, since)

    def _handle(self, msg: Inbound, out: Outbox) -> None:
        book = self._book(msg.key)
        if msg.is_watermark:
            if msg.topic == topics.ORDER_APPROVED:  # candles are dense: no watermarks needed
                book.order_wm = max(book.order_wm, msg.event_time_ms)
        elif msg.topic == topics.CANDLE:
            self._candle(book, msg.message, msg.trace_context)  # type: ignore[arg-type]
        else:
            approved: order_approved_pb2.ApprovedOrder = msg.message  # type: ignore[assignment]
            if approved.action == order_approved_pb2.ORDER_ACTION_CANCEL:
                self._cancel(msg.key, book, approved, out, msg.trace_context)
            elif approved.action in orders.PLACE_ACTIONS:
                self._order(msg.key, book, approved, out, msg.trace_context)
            else:
                raise InvalidMessage(f"approved order {approved.meta.id}: unknown action "
                                     f"{approved.action}")
        self._evaluate(msg.key, book, out)
        self._advance(msg.key, book, out)

    # -- inputs --------------------------------------------------------------------------------

    def _candle(self, book: _Book, candle: candle_pb2.Candle, trace: Context | None) -> None:
        if candle.open_time_ms <= book.last_open:
            return  # redelivered or a revision of a candle already used for fills
        try:
            bar = _Bar(candle.open_time_ms, dec(candle.open, "Candle.open"),
                       dec(candle.high, "Candle.high"), dec(candle.low, "Candle.low"),
                       candle.close_time_ms, trace)
        except ValueError as exc:
            raise InvalidMessage(f"candle {candle.meta.id}: {exc}") from None
        book.bars.append(bar)
        book.last_open, book.last_close = candle.open_time_ms, candle.close_time_ms

    def _order(self, key: str, book: _Book, order: order_approved_pb2.ApprovedOrder,
               out: Outbox, trace: Context | None) -> None:
        t = order.meta.event_time_ms
        # a signal's order (no action) is the only one of its key at t; a bot asks for several
        # at once (same t), so only the gate's watermark says the last of them has come
        strict = order.action != order_approved_pb2.ORDER_ACTION_UNSPECIFIED
        book.order_wm = max(book.order_wm, t - 1 if strict else t)
        state = Order(order.client_order_id, order.exchange, order.symbol, order.side,
                      dec(order.quantity, "ApprovedOrder.quantity"), order.meta.id, self.name)
        out.emit(topics.ORDER_EVENT, key, state.created(t))
        out.emit(topics.ORDER_EVENT, key, state.to(orders.OPEN, t))  # paper accepts at once
        if t <= book.done_open:
            out.emit(topics.ORDER_EVENT, key, state.to(
                orders.REJECTED, t, reason="order arrived after its fill candle left the buffer"))
            return
        if order.order_type == order_approved_pb2.ORDER_TYPE_LIMIT:
            try:
                limit = triggers.RestingLimit(order.side, dec(order.limit_price, "limit_price"),
                                              t)
            except ValueError as exc:
                out.emit(topics.ORDER_EVENT, key, state.to(orders.REJECTED, t, reason=str(exc)))
                return
            book.resting.append(_Resting(order, state, limit, trace))
        else:
            book.pending.append(_Pending(order, state, trace))

    def _cancel(self, key: str, book: _Book, cancel: order_approved_pb2.ApprovedOrder,
                out: Outbox, trace: Context | None) -> None:
        """Mark the waiting order the cancel names (module docstring, "Cancels")."""
        t, coid = cancel.meta.event_time_ms, cancel.client_order_id
        # the candles before t are final: an order still to come has event time >= t and
        # cannot fill on them, and the order being canceled may still fill on them
        book.order_wm = max(book.order_wm, t - 1)  # more of the bot's records at t may follow
        self._evaluate(key, book, out)
        entry = next((e for e in [*book.pending, *book.resting]
                      if e.order.client_order_id == coid), None)
        if entry is None:
            log.info("cancel of an order that is not waiting (filled, refused or unknown: "
                     "the cancel raced its fill)", extra={"client_order_id": coid, "key": key})
            return
        if entry.cancel_at is None or t < entry.cancel_at:
            entry.cancel_at = t
            entry.cancel_reason = f"canceled by {cancel.strategy or 'the risk gate'}"
            entry.cancel_trace = trace
        self._cancels_due(key, book, book.last_close, out)

    def _cancels_due(self, key: str, book: _Book, upto: int, out: Outbox) -> None:
        """Remove and CANCEL the marked orders whose cancel time is <= `upto` (a time no
        candle opening before can still be evaluated), pending ones first, in arrival order."""
        book.pending = _cancel_marked(key, book.pending, upto, out)
        book.resting = _cancel_marked(key, book.resting, upto, out)

    # -- evaluation, one candle at a time ------------------------------------------------------

    def _evaluate(self, key: str, book: _Book, out: Outbox) -> None:
        """Every received candle the order stream has reached; and the oldest ones beyond the
        buffer bound (an order for them arrives too late and is refused)."""
        while book.bars and (book.bars[0].open_ms <= book.order_wm
                             or len(book.bars) > self.settings.candle_buffer):
            bar = book.bars.popleft()
            book.done_open = bar.open_ms
            self._cancels_due(key, book, bar.open_ms, out)
            self._market_orders(key, book, bar, out)
            with tracing.caused_by(bar.trace):
                self._protective(key, book, bar, out)
            self._limit_orders(key, book, bar, out)
            self._cancels_due(key, book, bar.close_ms, out)

    def _market_orders(self, key: str, book: _Book, bar: _Bar, out: Outbox) -> None:
        if not book.pending:
            return
        due = [p for p in book.pending if p.order.meta.event_time_ms <= bar.open_ms]
        book.pending = [p for p in book.pending if p.order.meta.event_time_ms > bar.open_ms]
        for p in due:
            _raced(p, bar)
            sim = self.model.market(p.order.side, p.state.quantity, bar.open)
            with tracing.caused_by(p.trace):
                self._execute(key, book, p.order, p.state, bar.open_ms, sim, out, at_open=True)

    def _protective(self, key: str, book: _Book, bar: _Bar, out: Outbox) -> None:
        protect = book.protect
        if protect is None or book.position == 0:
            return
        hit = protect.on_candle(bar.open_ms, bar.open, bar.high, bar.low)
        if hit is None:
            return
        side = protect.exits.closing_side
        quantity = abs(book.position)
        coid = protection.exit_order_id(protect.cause, hit.reason)
        state = Order(coid, *key.split(":", 1), side, quantity, protect.cause, self.name)
        out.emit(topics.ORDER_EVENT, key, state.created(bar.open_ms))
        out.emit(topics.ORDER_EVENT, key, state.to(orders.OPEN, bar.open_ms,
                                                   reason=f"{hit.reason} triggered"))
        exchange, symbol = key.split(":", 1)
        exit_order = order_approved_pb2.ApprovedOrder(
            client_order_id=coid, exchange=exchange, symbol=symbol, side=side,
            quantity=to_str(quantity), reduce_only=True)
        fill = self.model.fill(side, quantity, hit, protect.liquidation_fee(quantity)
                               if hit.reason == triggers.LIQUIDATION else None)
        self._execute(key, book, exit_order, state, bar.open_ms, fill, out, at_open=hit.at_open)

    def _limit_orders(self, key: str, book: _Book, bar: _Bar, out: Outbox) -> None:
        still = []
        hits: list[tuple[_Resting, triggers.Hit[Decimal]]] = []
        for resting in book.resting:
            hit, after = resting.limit.on_candle(bar.open_ms, bar.open, bar.high, bar.low)
            if hit is not None:
                hits.append((resting, hit))
            elif after is None:
                out.emit(topics.ORDER_EVENT, key, resting.state.to(
                    orders.EXPIRED, bar.open_ms, reason="limit order expired"),
                    cause=resting.trace)
            else:
                resting.limit = after
                still.append(resting)
        book.resting = still
        # in the candle's path order (stable: placement order among equals), as bot_sim does
        for resting, hit in sorted(hits, key=lambda rh: triggers.path_order(
                rh[0].order.side, rh[0].limit.limit, rh[1])):
            _raced(resting, bar)
            sim = self.model.fill(resting.order.side, resting.state.quantity, hit)
            with tracing.caused_by(resting.trace):
                self._execute(key, book, resting.order, resting.state, bar.open_ms, sim,
                              out, at_open=hit.at_open)

    # -- fills and positions -------------------------------------------------------------------

    def _execute(self, key: str, book: _Book, order: order_approved_pb2.ApprovedOrder,
                 state: Order, time_ms: int, sim: SimulatedFill, out: Outbox, *,
                 at_open: bool) -> None:
        quantity = state.quantity
        signed = quantity if order.side == BUY else -quantity
        if order.reduce_only:
            closing = book.position != 0 and (book.position > 0) != (signed > 0)
            if not closing:
                out.emit(topics.ORDER_EVENT, key, state.to(
                    orders.REJECTED, time_ms, reason="reduce-only order with no position to "
                    "reduce (closed before it, e.g. by its stop)"))
                return
            quantity = min(quantity, abs(book.position))
            signed = quantity if order.side == BUY else -quantity
        fid = ids.fill_id(order.client_order_id, 1)
        fee = sim.fee if quantity == state.quantity else \
            self.model.fees.fee(quantity, sim.price, sim.liquidity)
        self.fills += 1
        out.emit(topics.FILL, key, fill_pb2.Fill(
            meta=common_pb2.Meta(id=fid, cause_id=order.client_order_id, event_time_ms=time_ms,
                                 producer=self.name),
            fill_id=fid, client_order_id=order.client_order_id, exchange=order.exchange,
            symbol=order.symbol, side=order.side, quantity=to_str(quantity),
            price=to_str(sim.price), fee=to_str(fee), fee_currency=self.settings.fee_currency,
            liquidity=sim.liquidity,  # type: ignore[arg-type]
        ))
        if quantity == state.quantity:
            out.emit(topics.ORDER_EVENT, key, state.to(orders.FILLED, time_ms, filled=quantity,
                                                       average_price=sim.price))
        else:  # a reduce-only order capped to the position
            out.emit(topics.ORDER_EVENT, key, state.to(
                orders.PARTIALLY_FILLED, time_ms, filled=quantity, average_price=sim.price))
            out.emit(topics.ORDER_EVENT, key, state.to(
                orders.CANCELED, time_ms, reason="reduce-only: capped to the position"))
        self._position(book, order, signed, time_ms if at_open else time_ms + 1)

    def _position(self, book: _Book, order: order_approved_pb2.ApprovedOrder,
                  signed: Decimal, check_from_ms: int) -> None:
        """The new position and its protection (`meridian_common.protection`)."""
        before = book.position
        after = book.position = before + signed
        what = protection.change(before, after, order.reduce_only)
        if what == "none":
            book.protect = None
        elif what == "new":
            try:
                book.protect = protection.guard(
                    after > 0, order.stop_loss, order.take_profit, order.trailing_stop,
                    order.leverage, order.maintenance_margin_rate, from_ms=check_from_ms,
                    cause=order.client_order_id)
            except ValueError as exc:
                log.warning("order's stop/take-profit ignored", extra={
                    "client_order_id": order.client_order_id, "error": str(exc)})
                book.protect = None

    def _advance(self, key: str, book: _Book, out: Outbox) -> None:
        wm = min(book.order_wm, book.last_open)
        if wm > book.fill_wm:
            book.fill_wm = wm
            out.watermark(topics.FILL, key, wm)


_Waiting = TypeVar("_Waiting", _Pending, _Resting)


def _cancel_marked(key: str, waiting: list[_Waiting], upto: int,
                   out: Outbox) -> list[_Waiting]:
    """`waiting` without the orders canceled by `upto`, their CANCELED events emitted."""
    if all(e.cancel_at is None or e.cancel_at > upto for e in waiting):
        return waiting
    still = []
    for e in waiting:
        if e.cancel_at is not None and e.cancel_at <= upto:
            out.emit(topics.ORDER_EVENT, key, e.state.to(
                orders.CANCELED, e.cancel_at, reason=e.cancel_reason), cause=e.cancel_trace)
        else:
            still.append(e)
    return still


def _raced(entry: _Pending | _Resting, bar: _Bar) -> None:
    """An order filling on a candle before the time of the cancel that names it: the cancel
    came too late and does nothing (logged, as a cancel of an order already filled)."""
    if entry.cancel_at is not None:
        log.info("canceled order filled before the cancel's time (the cancel raced its fill)",
                 extra={"client_order_id": entry.order.client_order_id,
                        "cancel_ms": entry.cancel_at, "fill_ms": bar.open_ms})
