"""Live execution: approved orders in, exchange orders out, the exchange's answers published.

`handle` only records (an approved order becomes PENDING_SUBMIT, a kill switch a pending
cancel); every exchange call happens in `act`, after each batch and every `poll_s` while idle,
and its results go out with the batch before the batch is committed.

No order is ever sent twice:
- the client order id is derived from the signal (ids.client_order_id) and passed to the
  exchange, which refuses a second order with it (Bybit 110072: `Duplicate`, then adopted);
- a submit without a usable answer (timeout, reset, gateway error) makes the order UNKNOWN,
  and an UNKNOWN order is only ever resolved by a query by client order id; it is sent again
  (same id) only when the query has not found it `resend_after_s` after the submit;
- on start the state comes back from this service's own outputs (order events, fills), and
  the first reconciliation reads the exchange's open orders and recent fills before any
  submit: an approved order the previous process sent before it could publish anything is
  found there by its client id and adopted, not resent.

Cancels (`ApprovedOrder.action` CANCEL, a bot's): never a new order. `handle` marks the order
with that client id; `act` cancels it on the exchange by client id, once, the way the kill switch
does, and the CANCELED event comes from the poll that finds it canceled (`_sync`), like every
other state. An order that was never sent (queued, or UNKNOWN and not found by its query) is
not sent at all and CANCELED here. An id that is unknown or finished (the cancel raced a fill)
changes nothing and is logged; an exchange refusal of the cancel (filled or gone meanwhile) is
logged and the poll settles the order; any other exchange error retries the cancel next tick.
A cancel replayed after a restart marks the restored order again; an extra cancel of an order
the exchange already closed is refused there and only logged.

Reconciliation (on start, then every `reconcile_s`): open orders, fills and positions on the
exchange against what this service published (fill.v1 is the ledger's only input, so this is
the ledger's view). An open order or fill that is not ours, or a position that differs from
the sum of our fills, halts new orders (fail closed: only reduce-only orders pass) and is
announced on control.v1 (Halt, key `halt:execution`) until a reconciliation matches again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry

from meridian.v1 import common_pb2, control_pb2, fill_pb2, order_approved_pb2, order_event_pb2
from meridian_common import orders, topics, venues
from meridian_common.control import KILL_SWITCH_KEY
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox
from meridian_common.money import ZERO, dec, to_str
from meridian_common.orders import Order
from meridian_execution import metrics
from meridian_execution.live.reconcile import Snapshot, mismatches
from meridian_execution.live.venue import (
    Ambiguous,
    Duplicate,
    Fatal,
    OrderRequest,
    Rejected,
    Retryable,
    Venue,
    VenueError,
    VenueFill,
    VenueOrder,
)
from meridian_execution.settings import ExecutionSettings

log = logging.getLogger(__name__)

HALT_KEY = "halt:execution"
OUR_PREFIX = "mrd-"
ACTIVE = frozenset({orders.PENDING_SUBMIT, orders.OPEN, orders.PARTIALLY_FILLED, orders.UNKNOWN})
STARTUP_LOOKBACK_MS = 24 * 3_600_000


@dataclass(slots=True)
class _Live:
    order: Order
    key: str
    request: OrderRequest
    queued: bool = False  # waiting to be submitted
    verify: bool = False  # may have been sent by the previous process: query before sending
    attempts: int = 0
    next_try: float = 0.0  # monotonic seconds
    submitted_at: float | None = None
    sent: Decimal | None = None  # the quantity sent, rounded down to the exchange's step
    # the exchange has filled more than we published, maybe before the fills poll's window
    # (an order adopted after a restart): its executions are read by client id
    backfill: bool = False
    notional: Decimal = ZERO  # sum of fill quantity x price, for the average price
    cancel: str = ""  # who asked for a cancel (the reason on CANCELED); "": none asked
    cancel_sent: bool = False  # the exchange took the cancel call (or refused it: gone)


@dataclass(slots=True)
class _State:
    orders: dict[str, _Live] = field(default_factory=dict)
    fill_ids: set[str] = field(default_factory=set)
    position: dict[str, Decimal] = field(default_factory=dict)  # symbol -> signed size
    fill_wm: dict[str, int] = field(default_factory=dict)  # key -> watermark published
    fills_since: dict[str, int] = field(default_factory=dict)  # symbol -> exchange ms
    known: dict[str, VenueOrder] = field(default_factory=dict)  # found on the exchange at start


class LiveExecutionHandler(Handler):
    name = "execution"
    inputs = (topics.ORDER_APPROVED, topics.CONTROL)
    outputs = (topics.ORDER_EVENT, topics.FILL, topics.CONTROL)
    restore_from = (topics.ORDER_APPROVED, topics.ORDER_EVENT, topics.FILL, topics.CONTROL)

    def __init__(self, settings: ExecutionSettings, venue: Venue) -> None:
        self.settings = settings
        self.venue = venue
        # The venue name in keys: the one ingest gives this market (bybit-linear for a linear
        # perpetual, bybit for spot), so fills meet the candles they are marked on.
        self.exchange = venues.venue(venue.exchange, settings.market_type)
        self.tick_s = settings.poll_s
        self.symbols = settings.symbol_list()
        self.state = _State()
        self.halted: str | None = None
        self.kill = False
        self.cancel_pending = False
        self._approved: dict[str, order_approved_pb2.ApprovedOrder] = {}
        self._restored_cancels: dict[str, order_approved_pb2.ApprovedOrder] = {}
        self._restored_events: dict[str, order_event_pb2.OrderEvent] = {}
        self._started = False
        self._reconciled_at: float | None = None
        self._refreshed_at: float | None = None  # None: reload markets and clock next tick
        self.metrics: metrics.ExecutionMetrics | None = None

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        self.metrics = metrics.ExecutionMetrics(registry)
        self._observe(None, 0)

    def _observe(self, out: Outbox | None, since: int) -> None:
        """Count what was emitted from `since` on (nothing while the host restores the state
        from the topics: it was counted when published); the open orders from the state."""
        if self.metrics is None:
            return
        if out is not None and not getattr(self, "replaying", False):
            self.metrics.published(out.items[since:])
        self.metrics.open_orders.set(sum(1 for lv in self.state.orders.values()
                                         if not lv.order.terminal))

    def _failed_call(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.exchange_errors.labels(kind).inc()

    # -- Kafka side: record, never call the exchange ---------------------------------------------

    def handle(self, msg: Inbound, out: Outbox) -> None:
        since = len(out.items)
        self._handle(msg, out)
        self._observe(out, since)

    def _handle(self, msg: Inbound, out: Outbox) -> None:
        if msg.is_watermark:
            return
        if msg.topic == topics.CONTROL:
            self._control(msg.key, msg.message)  # type: ignore[arg-type]
            return
        approved: order_approved_pb2.ApprovedOrder = msg.message  # type: ignore[assignment]
        if approved.action == order_approved_pb2.ORDER_ACTION_CANCEL:
            self._mark_cancel(approved)
        elif approved.action in orders.PLACE_ACTIONS:
            self._approve(msg.key, approved, out)
        else:
            raise InvalidMessage(f"approved order {approved.meta.id}: unknown action "
                                 f"{approved.action}")

    def _mark_cancel(self, cancel: order_approved_pb2.ApprovedOrder) -> None:
        """Record the cancel for `act` (module docstring, "Cancels"); no exchange call here."""
        coid = cancel.client_order_id
        live = self.state.orders.get(coid)
        if live is None or live.order.terminal:
            log.info("cancel of an order that is unknown or finished (the cancel raced its "
                     "fill): nothing to do", extra={"client_order_id": coid})
            return
        if not live.cancel:
            live.cancel = f"canceled by {cancel.strategy or 'the risk gate'}"

    def _control(self, key: str, command: control_pb2.Control) -> None:
        if key == KILL_SWITCH_KEY and command.WhichOneof("command") == "kill_switch":
            engaged = command.kill_switch.engaged
            if engaged and not self.kill:
                self.cancel_pending = True
            self.kill = engaged

    def _approve(self, key: str, approved: order_approved_pb2.ApprovedOrder,
                 out: Outbox) -> None:
        coid = approved.client_order_id
        if coid in self.state.orders:
            return  # redelivered after a restart: its state came back from order.event.v1
        live = self._new(key, approved)
        t = approved.meta.event_time_ms
        out.emit(topics.ORDER_EVENT, key, live.order.created(t))
        refusal = self._refusal(approved)
        if refusal:
            out.emit(topics.ORDER_EVENT, key, live.order.to(orders.REJECTED, t, reason=refusal))
            return
        live.queued = True

    def _new(self, key: str, approved: order_approved_pb2.ApprovedOrder) -> _Live:
        try:
            quantity = dec(approved.quantity, "ApprovedOrder.quantity")
            price = dec(approved.limit_price, "limit_price") if approved.limit_price else None
            stop = dec(approved.stop_loss, "stop_loss") if approved.stop_loss else None
            target = dec(approved.take_profit, "take_profit") if approved.take_profit else None
        except ValueError as exc:
            raise InvalidMessage(f"approved order {approved.client_order_id}: {exc}") from None
        side = "buy" if approved.side == common_pb2.SIDE_BUY else "sell"
        kind = "limit" if approved.order_type == order_approved_pb2.ORDER_TYPE_LIMIT else "market"
        request = OrderRequest(approved.client_order_id, approved.symbol, side, quantity, kind,
                               price, approved.reduce_only, stop, target)
        order = Order(approved.client_order_id, approved.exchange, approved.symbol,
                      approved.side, quantity, approved.meta.id, self.name)
        live = self.state.orders[approved.client_order_id] = _Live(order, key, request)
        return live

    def _refusal(self, approved: order_approved_pb2.ApprovedOrder) -> str:
        if approved.exchange != self.exchange:
            return f"this executor trades {self.exchange}, not {approved.exchange}"
        if approved.symbol not in self.symbols:
            return (f"{approved.symbol} is not in MERIDIAN_EXECUTION_SYMBOLS "
                    f"({','.join(self.symbols)})")
        if (approved.stop_loss or approved.take_profit) and \
                not self.venue.attaches_stops:
            return (f"{self.exchange} takes no stop-loss / take-profit on the order and "
                    "separate protective orders are not sent yet")
        if approved.trailing_stop:
            return ("trailing stops are not sent to the exchange yet: set "
                    "MERIDIAN_RISK_TRAILING_STOP=0 for live trading")
        if approved.reduce_only:
            return ""
        if self.kill:
            return "kill switch engaged: only reduce-only orders are sent"
        if self.halted:
            return f"execution halted: {self.halted}"
        return ""

    # -- restore: this service's own outputs -----------------------------------------------------

    def restore(self, msg: Inbound) -> None:
        m = msg.message
        if msg.topic == topics.CONTROL:
            if not msg.is_watermark:
                self._control(msg.key, m)  # type: ignore[arg-type]
        elif msg.is_watermark:
            if msg.topic == topics.FILL:
                key_wm = self.state.fill_wm
                key_wm[msg.key] = max(key_wm.get(msg.key, 0), msg.event_time_ms)
        elif msg.topic == topics.ORDER_APPROVED:
            if m.action == order_approved_pb2.ORDER_ACTION_CANCEL:  # type: ignore[attr-defined]
                self._restored_cancels[m.client_order_id] = m  # type: ignore[attr-defined]
            else:
                self._approved[m.client_order_id] = m  # type: ignore[attr-defined]
        elif msg.topic == topics.ORDER_EVENT:
            self._restored_events[m.client_order_id] = m  # type: ignore[attr-defined]
        elif msg.topic == topics.FILL:
            self._restore_fill(m)  # type: ignore[arg-type]

    def _restore_fill(self, fill: fill_pb2.Fill) -> None:
        if fill.fill_id in self.state.fill_ids:
            return
        self.state.fill_ids.add(fill.fill_id)
        qty = dec(fill.quantity, "Fill.quantity")
        signed = qty if fill.side == common_pb2.SIDE_BUY else -qty
        self.state.position[fill.symbol] = self.state.position.get(fill.symbol, ZERO) + signed

    def restored(self) -> None:
        """Rebuild each order from its last event; keep the request of the unfinished ones."""
        for coid, event in self._restored_events.items():
            approved = self._approved.get(coid)
            if approved is None:
                continue  # its approved order was compacted away: nothing left to act on
            live = self._new(f"{approved.exchange}:{approved.symbol}", approved)
            order = live.order
            order.status, order.sequence = event.status, event.sequence
            order.filled = dec(event.filled_quantity or "0", "filled_quantity")
            order.exchange_order_id = event.exchange_order_id
            if event.average_price:
                order.average_price = dec(event.average_price, "average_price")
                live.notional = order.filled * order.average_price
            # PENDING_SUBMIT published, then the crash: sent or not, only the exchange knows
            live.queued = live.verify = order.status == orders.PENDING_SUBMIT
        for coid, cancel in self._restored_cancels.items():
            live = self.state.orders.get(coid)
            if live is not None and not live.order.terminal:  # the finished ones: said before
                self._mark_cancel(cancel)  # sent again if it was: the exchange refuses a repeat
        self._approved.clear()
        self._restored_events.clear()
        self._restored_cancels.clear()
        self._observe(None, 0)

    # -- the exchange side -------------------------------------------------------------------------

    async def act(self, out: Outbox) -> None:
        since = len(out.items)
        try:
            await self._act(out)
        finally:
            self._observe(out, since)

    async def _act(self, out: Outbox) -> None:
        now = time.monotonic()
        try:
            if not self._started:
                await self.venue.start()
                self._started, self._refreshed_at = True, now
            elif self._refreshed_at is None or \
                    now - self._refreshed_at >= self.settings.markets_refresh_s:
                await self.venue.refresh()
                self._refreshed_at = now
            server_ms = await self.venue.server_time_ms()
            due = self._reconciled_at is None or \
                now - self._reconciled_at >= self.settings.reconcile_s
            if due:
                await self._reconcile(out, server_ms)
                self._reconciled_at = now
            if self.cancel_pending:
                await self._cancel_for_kill(out, server_ms)
            await self._submit_due(out, now, server_ms)
            await self._cancel_requested()
            await self._poll(out, server_ms)
        except Fatal as exc:
            self._failed_call(metrics.FATAL)
            self._halt(out, f"exchange refused the credentials: {exc}")
        except orders.InvalidTransition as exc:
            # an exchange report our state machine cannot take: say so loudly, keep serving
            # the other orders; the reconciliation compares positions and fills regardless
            log.error("exchange report out of order: %s", exc)
        except VenueError as exc:
            self._failed_call(metrics.RETRYABLE)  # whatever it was, the next tick tries again
            log.warning("exchange call failed, retrying at the next tick: %s", exc)
            if isinstance(exc, Retryable) and exc.resync_clock:
                # the clock offset drifted: reload it next tick (not "at 0.0": monotonic time
                # starts at boot, so a host up for less than the refresh period never would)
                self._refreshed_at = None

    async def _submit_due(self, out: Outbox, now: float, server_ms: int) -> None:
        for live in list(self.state.orders.values()):
            if not live.queued or live.next_try > now:
                continue
            coid = live.order.client_order_id
            found = self.state.known.pop(coid, None)  # sent by the previous process
            if found is None and live.verify:
                found = await self.venue.query(live.request.symbol, coid)
            live.verify = False
            if found is not None:
                live.queued = False
                self._sync(live, found, out, server_ms)
                continue
            if live.cancel:  # never sent (or not found long after an unanswered send)
                live.queued, live.cancel_sent = False, True
                out.emit(topics.ORDER_EVENT, live.key, live.order.to(
                    orders.CANCELED, server_ms, reason=f"{live.cancel} before it was sent"))
                continue
            blocked = "" if live.request.reduce_only else (
                "kill switch engaged: only reduce-only orders are sent" if self.kill else
                f"execution halted: {self.halted}" if self.halted else "")
            if blocked:  # engaged or halted after the order was taken in: fail closed
                live.queued = False
                out.emit(topics.ORDER_EVENT, live.key,
                         live.order.to(orders.REJECTED, server_ms, reason=blocked))
                continue
            await self._submit(live, out, now, server_ms)

    async def _submit(self, live: _Live, out: Outbox, now: float, server_ms: int) -> None:
        order = live.order
        try:
            request = self._rounded(live.request)
        except Rejected as exc:  # e.g. a symbol the exchange does not list
            live.queued = False
            out.emit(topics.ORDER_EVENT, live.key,
                     order.to(orders.REJECTED, server_ms, reason=str(exc)))
            return
        if request.quantity <= 0:
            live.queued = False
            out.emit(topics.ORDER_EVENT, live.key, order.to(
                orders.REJECTED, server_ms,
                reason=f"quantity {to_str(live.request.quantity)} rounds to 0 at the "
                f"exchange's step"))
            return
        live.attempts += 1
        live.submitted_at = now
        live.sent = request.quantity
        try:
            answer = await self.venue.submit(request)
        except Duplicate:
            live.queued = False
            await self._resolve(live, out, server_ms)
        except Rejected as exc:
            live.queued = False
            out.emit(topics.ORDER_EVENT, live.key,
                     order.to(orders.REJECTED, server_ms, reason=str(exc)))
        except Retryable as exc:
            self._failed_call(metrics.RETRYABLE)
            if exc.resync_clock:
                await self.venue.refresh()
            if live.attempts > self.settings.max_retries:
                live.queued = False
                out.emit(topics.ORDER_EVENT, live.key, order.to(
                    orders.REJECTED, server_ms,
                    reason=f"gave up after {live.attempts} retryable errors: {exc}"))
            else:
                live.next_try = now + exc.retry_after_s * 2 ** (live.attempts - 1)
        except Ambiguous as exc:
            self._failed_call(metrics.RETRYABLE)  # no answer: a query decides, then a resend
            live.queued = False
            if order.status == orders.UNKNOWN:  # a resend unanswered too: still unknown
                log.warning("resend of %s unanswered: %s", order.client_order_id, exc)
            else:
                out.emit(topics.ORDER_EVENT, live.key, order.to(
                    orders.UNKNOWN, server_ms, reason=f"submit unanswered: {exc}"))
        except Fatal:
            live.queued = True  # never sent: it stays for after the operator's fix
            raise
        else:
            live.queued = False
            out.emit(topics.ORDER_EVENT, live.key, order.to(
                orders.OPEN, server_ms, exchange_order_id=answer.exchange_order_id))

    def _rounded(self, request: OrderRequest) -> OrderRequest:
        venue = self.venue
        quantity = venue.round_quantity(request.symbol, request.quantity)

        def price(value: Decimal | None) -> Decimal | None:
            return None if value is None else venue.round_price(request.symbol, value)

        return OrderRequest(request.client_order_id, request.symbol, request.side, quantity,
                            request.order_type, price(request.limit_price),
                            request.reduce_only, price(request.stop_loss),
                            price(request.take_profit))

    async def _resolve(self, live: _Live, out: Outbox, server_ms: int) -> None:
        """Ask the exchange what became of an order it may have; resend only when it has none
        long enough after the submit."""
        found = await self.venue.query(live.request.symbol, live.order.client_order_id)
        if found is not None:
            self._sync(live, found, out, server_ms)
            return
        order = live.order
        if order.status == orders.PENDING_SUBMIT:  # a duplicate answer, yet no order: unknown
            out.emit(topics.ORDER_EVENT, live.key, order.to(
                orders.UNKNOWN, server_ms, reason="exchange reported a duplicate client id "
                "but has no such order"))
        waited = time.monotonic() - (live.submitted_at or 0.0)
        if waited >= self.settings.resend_after_s:
            live.queued, live.next_try = True, 0.0
            log.warning("resending an order the exchange does not know",
                        extra={"client_order_id": order.client_order_id,
                               "waited_s": round(waited, 1)})

    def _sync(self, live: _Live, found: VenueOrder, out: Outbox, server_ms: int) -> None:
        """Move our order towards what the exchange says. Quantities follow the fills we
        publish (so order events and fill.v1 always agree); the exchange's status decides
        the terminal states once our fills have caught up with its filled quantity."""
        order = live.order
        if order.status in (orders.PENDING_SUBMIT, orders.UNKNOWN):
            if found.status == orders.REJECTED or (
                    found.status in (orders.CANCELED, orders.EXPIRED) and found.filled == 0):
                out.emit(topics.ORDER_EVENT, live.key, order.to(
                    found.status, server_ms, reason=found.reason or "found by client id",
                    exchange_order_id=found.exchange_order_id))
                return
            out.emit(topics.ORDER_EVENT, live.key, order.to(
                orders.OPEN, server_ms, exchange_order_id=found.exchange_order_id))
        if found.filled > order.filled:
            live.backfill = True
        if order.terminal or found.filled != order.filled:
            return  # fills still to come (the poll, or the backfill by client id)
        if found.status in (orders.CANCELED, orders.EXPIRED, orders.REJECTED):
            status = orders.CANCELED if found.status == orders.REJECTED and order.filled \
                else found.status
            if status == orders.REJECTED and order.status != orders.OPEN:
                status = orders.CANCELED
            reason = live.cancel if status == orders.CANCELED and live.cancel_sent \
                else found.reason
            out.emit(topics.ORDER_EVENT, live.key, order.to(status, server_ms, reason=reason))

    async def _poll(self, out: Outbox, server_ms: int) -> None:
        """Fills of every symbol with an order in flight or a position (attached stops), then
        the states of orders the fills do not settle; fill watermarks for every symbol."""
        for live in list(self.state.orders.values()):
            if live.order.status == orders.UNKNOWN and not live.queued:
                await self._resolve(live, out, server_ms)
            if live.backfill:
                live.backfill = False
                for fill in await self.venue.order_fills(live.request.symbol,
                                                         live.order.client_order_id):
                    self._fill(fill, out)
        busy = {lv.request.symbol for lv in self.state.orders.values()
                if lv.order.status in ACTIVE}
        busy |= {s for s, size in self.state.position.items() if size != 0}
        for symbol in sorted(busy & set(self.symbols)):
            await self._poll_fills(symbol, out, server_ms)
            await self._poll_orders(symbol, out, server_ms)
        wm = server_ms - self.settings.fill_lag_ms
        for symbol in self.symbols:
            key = f"{self.exchange}:{symbol}"
            if wm > self.state.fill_wm.get(key, 0):
                self.state.fill_wm[key] = wm
                out.watermark(topics.FILL, key, wm)

    async def _poll_fills(self, symbol: str, out: Outbox, server_ms: int) -> list[VenueFill]:
        since = self.state.fills_since.get(symbol, server_ms - STARTUP_LOOKBACK_MS)
        fills = await self.venue.fills(symbol, since)
        for fill in fills:
            self._fill(fill, out)
        self.state.fills_since[symbol] = server_ms - self.settings.fill_lag_ms
        return fills

    async def _poll_orders(self, symbol: str, out: Outbox, server_ms: int) -> None:
        waiting = [lv for lv in self.state.orders.values()
                   if lv.request.symbol == symbol and lv.order.status in
                   (orders.OPEN, orders.PARTIALLY_FILLED)]
        if not waiting:
            return
        open_now = {o.client_order_id: o for o in await self.venue.open_orders(symbol)}
        for live in waiting:
            found = open_now.get(live.order.client_order_id)
            if found is None:  # no longer open: filled, canceled or expired
                found = await self.venue.query(symbol, live.order.client_order_id)
            if found is not None:
                self._sync(live, found, out, server_ms)

    def _fill(self, fill: VenueFill, out: Outbox) -> None:
        live = self.state.orders.get(fill.client_order_id)
        coid = fill.client_order_id or f"x-{fill.exchange_order_id}"
        fill_id = f"{coid}:x{fill.exec_id}"
        if fill_id in self.state.fill_ids:
            return
        if live is None and (fill.client_order_id or not fill.protective):
            return  # not ours (reconciliation flags it) or not re-consumed yet (adopted later)
        key = f"{self.exchange}:{fill.symbol}"
        side = common_pb2.SIDE_BUY if fill.side == "buy" else common_pb2.SIDE_SELL
        self.state.fill_ids.add(fill_id)
        signed = fill.quantity if side == common_pb2.SIDE_BUY else -fill.quantity
        self.state.position[fill.symbol] = self.state.position.get(fill.symbol, ZERO) + signed
        out.emit(topics.FILL, key, fill_pb2.Fill(
            meta=common_pb2.Meta(id=fill_id, cause_id=coid, event_time_ms=fill.time_ms,
                                 producer=self.name),
            fill_id=fill_id, client_order_id=coid, exchange=self.exchange, symbol=fill.symbol,
            side=side, quantity=to_str(fill.quantity),  # type: ignore[arg-type]
            price=to_str(fill.price), fee=to_str(fill.fee), fee_currency=fill.fee_currency,
            liquidity=fill_pb2.LIQUIDITY_MAKER if fill.maker else fill_pb2.LIQUIDITY_TAKER))
        if live is None:
            return  # the exchange's own order (an attached stop or take-profit)
        order = live.order
        live.queued = live.verify = False  # the exchange has it: never send it (again)
        if order.status in (orders.PENDING_SUBMIT, orders.UNKNOWN):
            out.emit(topics.ORDER_EVENT, key, order.to(
                orders.OPEN, fill.time_ms, exchange_order_id=fill.exchange_order_id))
        if order.terminal:
            log.error("fill for a finished order: %s", order.client_order_id)
            return
        live.notional += fill.quantity * fill.price
        filled = min(order.filled + fill.quantity, order.quantity)
        status = orders.FILLED if filled == order.quantity else orders.PARTIALLY_FILLED
        average = live.notional / filled
        out.emit(topics.ORDER_EVENT, key, order.to(status, fill.time_ms, filled=filled,
                                                   average_price=average))
        if status != orders.FILLED and filled == live.sent:
            out.emit(topics.ORDER_EVENT, key, order.to(
                orders.CANCELED, fill.time_ms, reason=f"filled all that was sent: the rest, "
                f"{to_str(order.quantity - filled)}, is below the exchange's quantity step"))

    async def _cancel_requested(self) -> None:
        """Cancel on the exchange, by client id, the open orders a cancel names; the poll then
        finds them CANCELED (or filled first). Errors other than a refusal leave the cancel
        to retry next tick (the caller logs and counts them)."""
        for live in self.state.orders.values():
            if not live.cancel or live.cancel_sent or \
                    live.order.status not in (orders.OPEN, orders.PARTIALLY_FILLED):
                continue  # not placed yet: _submit_due cancels it instead of sending it
            await self._cancel_on_exchange(live)
            live.cancel_sent = True

    async def _cancel_for_kill(self, out: Outbox, server_ms: int) -> None:
        """Kill switch: queued entries are refused, open entries canceled (exits stay)."""
        for live in self.state.orders.values():
            if live.request.reduce_only:
                continue
            if live.queued:
                live.queued = False
                out.emit(topics.ORDER_EVENT, live.key, live.order.to(
                    orders.REJECTED, server_ms, reason="kill switch engaged before the send"))
            elif live.order.status in (orders.OPEN, orders.PARTIALLY_FILLED):
                await self._cancel_on_exchange(live)
        self.cancel_pending = False

    async def _cancel_on_exchange(self, live: _Live) -> None:
        """Cancel one open order by client id; a refusal (filled or gone meanwhile) is logged
        and left to the poll, any other error propagates (the caller retries next tick)."""
        coid = live.order.client_order_id
        try:
            await self.venue.cancel(live.request.symbol, coid)
        except Rejected as exc:
            log.info("cancel of %s refused: %s", coid, exc)

    # -- reconciliation ------------------------------------------------------------------------

    async def _reconcile(self, out: Outbox, server_ms: int) -> None:
        snapshot = Snapshot()
        for symbol in self.symbols:
            snapshot.open_orders[symbol] = await self.venue.open_orders(symbol)
            since = self.state.fills_since.get(symbol, server_ms - STARTUP_LOOKBACK_MS)
            before = await self.venue.position(symbol)
            snapshot.fills[symbol] = await self.venue.fills(symbol, since)
            after = await self.venue.position(symbol)
            # equal reads around the fills read: those fills explain exactly this position;
            # a moving account is compared at the next reconciliation instead
            snapshot.positions[symbol] = after if after == before else None
        ours = set(self.state.orders)
        for symbol in self.symbols:
            for found in snapshot.open_orders[symbol]:
                live = self.state.orders.get(found.client_order_id)
                if live is not None and live.queued:  # sent before a restart: adopt it
                    live.queued = live.verify = False
                    self._sync(live, found, out, server_ms)
                elif live is None and found.client_order_id.startswith(OUR_PREFIX):
                    self.state.known[found.client_order_id] = found
            for fill in snapshot.fills[symbol]:
                coid = fill.client_order_id
                if coid and coid not in ours and coid.startswith(OUR_PREFIX) and \
                        coid not in self.state.known:
                    found = await self.venue.query(symbol, coid)
                    if found is not None:
                        self.state.known[coid] = found
            for fill in snapshot.fills[symbol]:
                self._fill(fill, out)
        problems = mismatches(snapshot, self.state.orders.keys(), self.state.position,
                              self.state.known.keys(), OUR_PREFIX)
        if problems:
            self._mismatch(out, problems)
        elif self.halted:
            self._unhalt(out)

    def _mismatch(self, out: Outbox, problems: list[str]) -> None:
        """A reconciliation that found a mismatch: counted every time (an alert sees a halt
        that persists), halted once per reason."""
        if self.metrics is not None:
            self.metrics.reconciliation_failures.inc()
        self._halt(out, "; ".join(problems))

    def _halt(self, out: Outbox, reason: str) -> None:
        if self.halted == reason:
            return
        self.halted = reason
        log.error("execution halted: new orders refused", extra={"reason": reason})
        out.emit(topics.CONTROL, HALT_KEY, self._halt_message(True, reason))

    def _unhalt(self, out: Outbox) -> None:
        log.warning("reconciliation matches again: orders resume",
                    extra={"was": self.halted})
        self.halted = None
        out.emit(topics.CONTROL, HALT_KEY, self._halt_message(False, "reconciled"))

    def _halt_message(self, halted: bool, reason: str) -> control_pb2.Control:
        now = int(time.time() * 1000)
        return control_pb2.Control(
            meta=common_pb2.Meta(id=f"control:{HALT_KEY}:{now}", event_time_ms=now,
                                 producer=self.name),
            halt=control_pb2.Halt(service=self.name, halted=halted, reason=reason))

    async def stop(self) -> None:
        await self.venue.close()
