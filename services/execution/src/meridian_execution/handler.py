"""Paper execution: approved orders and candles in, order events and fills out.

A market order fills at the open of the first candle whose open time is at or after the order's
event time, however late the order arrives (the candle is looked up in a buffer), so the fills do
not depend on how the two input streams interleave. fill.v1 is sparse; its watermark for a key is
min(order watermark, last candle open): no later fill can be earlier than either.

Every order goes through the shared state machine (`meridian_common.orders`) and each transition
is an order.event.v1 message. After a crash the host rebuilds the state from the inputs; records
after the committed offsets are handled again and publish the same fills (same ids, same bytes),
which the ledger counts once.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, order_approved_pb2
from meridian_common import ids, orders, topics
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.handler import Handler, Inbound, Outbox
from meridian_common.money import dec, to_str
from meridian_common.orders import Order
from meridian_execution.settings import ExecutionSettings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Book:
    opens: list[int] = field(default_factory=list)  # candle open times, ascending
    prices: list[str] = field(default_factory=list)  # candle open prices
    # orders waiting for their fill candle, with their state machine
    pending: list[tuple[order_approved_pb2.ApprovedOrder, Order]] = field(default_factory=list)
    order_wm: int = 0
    last_open: int = 0
    fill_wm: int = 0


class ExecutionHandler(Handler):
    name = "execution"
    inputs = (topics.ORDER_APPROVED, topics.CANDLE)
    outputs = (topics.ORDER_EVENT, topics.FILL)
    # The state (orders waiting for their candle, the candle buffer, the watermarks) is a
    # function of the two inputs per key: rebuilt on start up to the committed offsets, so an
    # order consumed (and committed) before a crash still fills at its candle afterwards.
    rebuild_from_inputs = True

    def __init__(self, settings: ExecutionSettings) -> None:
        self.settings = settings
        self.model = PaperFillModel(FeeSchedule(settings.maker_fee, settings.taker_fee),
                                    settings.slippage_bps)
        self.books: dict[str, _Book] = {}
        self.fills = 0

    def _book(self, key: str) -> _Book:
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = _Book()
        return book

    def handle(self, msg: Inbound, out: Outbox) -> None:
        book = self._book(msg.key)
        if msg.is_watermark:
            if msg.topic == topics.ORDER_APPROVED:  # candles are dense: no watermarks needed
                book.order_wm = max(book.order_wm, msg.event_time_ms)
        elif msg.topic == topics.CANDLE:
            self._candle(msg.key, book, msg.message, out)  # type: ignore[arg-type]
        else:
            self._order(msg.key, book, msg.message, out)  # type: ignore[arg-type]
        self._advance(msg.key, book, out)

    def _candle(self, key: str, book: _Book, candle: candle_pb2.Candle, out: Outbox) -> None:
        if candle.open_time_ms <= book.last_open:
            return  # redelivered or a revision of a candle already used for fills
        book.opens.append(candle.open_time_ms)
        book.prices.append(candle.open)
        book.last_open = candle.open_time_ms
        still = []
        for order, state in book.pending:
            if order.meta.event_time_ms <= candle.open_time_ms:
                self._fill(key, order, state, candle.open_time_ms, candle.open, out)
            else:
                still.append((order, state))
        book.pending = still
        self._prune(book)

    def _order(self, key: str, book: _Book, order: order_approved_pb2.ApprovedOrder,
               out: Outbox) -> None:
        t = order.meta.event_time_ms
        book.order_wm = max(book.order_wm, t)
        state = Order(order.client_order_id, order.exchange, order.symbol, order.side,
                      dec(order.quantity, "ApprovedOrder.quantity"), order.meta.id, self.name)
        out.emit(topics.ORDER_EVENT, key, state.created(t))
        out.emit(topics.ORDER_EVENT, key, state.to(orders.OPEN, t))  # paper accepts at once
        i = bisect.bisect_left(book.opens, t)
        if i < len(book.opens):
            if i == 0 and book.opens[0] > t and len(book.opens) >= self.settings.candle_buffer:
                out.emit(topics.ORDER_EVENT, key, state.to(
                    orders.REJECTED, t,
                    reason="order arrived after its fill candle left the buffer"))
                return
            self._fill(key, order, state, book.opens[i], book.prices[i], out)
        else:
            book.pending.append((order, state))

    def _fill(self, key: str, order: order_approved_pb2.ApprovedOrder, state: Order,
              open_ms: int, open_price: str, out: Outbox) -> None:
        sim = self.model.market(order.side, state.quantity, dec(open_price, "Candle.open"))
        fid = ids.fill_id(order.client_order_id, 1)
        self.fills += 1
        out.emit(topics.FILL, key, fill_pb2.Fill(
            meta=common_pb2.Meta(id=fid, cause_id=order.client_order_id, event_time_ms=open_ms,
                                 producer=self.name),
            fill_id=fid, client_order_id=order.client_order_id, exchange=order.exchange,
            symbol=order.symbol, side=order.side, quantity=order.quantity,
            price=to_str(sim.price), fee=to_str(sim.fee), fee_currency=self.settings.fee_currency,
            liquidity=sim.liquidity,  # type: ignore[arg-type]
        ))
        out.emit(topics.ORDER_EVENT, key, state.to(orders.FILLED, open_ms,
                                                   filled=state.quantity,
                                                   average_price=sim.price))

    def _advance(self, key: str, book: _Book, out: Outbox) -> None:
        wm = min(book.order_wm, book.last_open)
        if wm > book.fill_wm:
            book.fill_wm = wm
            out.watermark(topics.FILL, key, wm)

    def _prune(self, book: _Book) -> None:
        """Drop candles no future order can fill at: future orders are later than order_wm."""
        keep_from = bisect.bisect_right(book.opens, book.order_wm)
        overflow = len(book.opens) - self.settings.candle_buffer
        cut = max(keep_from, overflow)
        if cut > 0:
            del book.opens[:cut]
            del book.prices[:cut]
