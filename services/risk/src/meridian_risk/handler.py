"""Risk gate: candles and signals in, a decision for each signal (with every rule's result) and
approved orders out; circuit breakers announced on control.v1.

Event time, not arrival: a decision for one symbol depends on every other symbol's position,
price and the breakers, so candles and signals go through an `EventTimeMerge` and are taken in
(event time, candles before signals, key) order once every symbol's candles and signals have
reached that time. Over Kafka, in-process and after a restart the gate then decides the same.
Control commands and order events are taken on arrival (operators' and the exchange's clock).

order.approved.v1 is sparse: after each step of the merge every symbol gets a Watermark at the
time the gate has decided up to, so execution can act in event time.

A signal id already decided (seen in risk.decision.v1 at restore) is not decided again.

Tracing: a record released by the merge is decided in its own trace (its context is held with
it), not in the trace of the record whose arrival released it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from opentelemetry.context import Context as TraceContext
from prometheus_client import CollectorRegistry

from meridian.v1 import (
    candle_pb2,
    common_pb2,
    control_pb2,
    order_approved_pb2,
    order_event_pb2,
    order_intent_pb2,
    risk_decision_pb2,
    signal_pb2,
)
from meridian_common import ids, protection, topics, tracing
from meridian_common.config import ConfigError
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox
from meridian_common.merge import EventTimeMerge
from meridian_common.money import MONEY_CONTEXT, ZERO, dec, to_str
from meridian_common.triggers import RestingLimit
from meridian_risk import metrics
from meridian_risk.active import ActiveConfig, ActiveConfigStore, resolve
from meridian_risk.book import Book
from meridian_risk.breakers import BREAKERS, Breakers, Change, Level
from meridian_risk.ledger import Ledger
from meridian_risk.market import Market
from meridian_risk.resting import RestingBook, RestingOrder
from meridian_risk.rules import RULE_NAMES, Context, Proposal, evaluate, parse_stop, propose
from meridian_risk.settings import RiskSettings

log = logging.getLogger(__name__)

CANDLE_RANK, SIGNAL_RANK, INTENT_RANK = 0, 1, 2
PLACE, CANCEL = order_approved_pb2.ORDER_ACTION_PLACE, order_approved_pb2.ORDER_ACTION_CANCEL
LIMIT = order_approved_pb2.ORDER_TYPE_LIMIT
ACTOR = "risk"
# Order outcomes the error-rate breaker counts as failures.
FAILED = (order_event_pb2.ORDER_STATUS_REJECTED, order_event_pb2.ORDER_STATUS_UNKNOWN)
SETTLED = (order_event_pb2.ORDER_STATUS_FILLED, order_event_pb2.ORDER_STATUS_CANCELED,
           order_event_pb2.ORDER_STATUS_EXPIRED)


@dataclass(frozen=True, slots=True)
class _Candle:
    key: str
    time_ms: int
    close: Decimal
    open_ms: int = 0
    open: Decimal = ZERO
    high: Decimal = ZERO
    low: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class _Signal:
    key: str
    signal: signal_pb2.Signal
    price: Decimal


@dataclass(frozen=True, slots=True)
class _Intent:
    key: str
    intent: order_intent_pb2.OrderIntent
    quantity: Decimal  # 0 for a cancel
    limit: Decimal | None  # None: a market order or a cancel


# what the merge holds: a candle, signal or intent with the trace context of its record
_Held = tuple[_Candle | _Signal | _Intent, TraceContext | None]


@dataclass(frozen=True, slots=True)
class _Guarded:
    """What an approved order carries for the executor's protection of its position."""

    stop_loss: str = ""
    take_profit: str = ""
    trailing_stop: str = ""
    leverage: str = ""  # isolated margin above 1x only
    maintenance_margin_rate: str = ""

    @classmethod
    def of(cls, settings: RiskSettings, reduce_only: bool,
           signal: signal_pb2.Signal) -> _Guarded:
        if reduce_only:
            return cls(signal.stop_loss, signal.take_profit)
        trailing = to_str(settings.trailing_stop) if settings.trailing_stop > 0 else ""
        isolated = settings.margin_mode == "isolated" and settings.leverage > 1
        return cls(signal.stop_loss, signal.take_profit, trailing,
                   to_str(settings.leverage) if isolated else "",
                   to_str(settings.maintenance_margin_rate) if isolated else "")


@dataclass(frozen=True, slots=True)
class _Booked:
    """An approved order read back at restore, with its decision's price."""

    key: str
    time_ms: int
    strategy: str
    delta: Decimal
    price: Decimal
    order_id: str
    reduce_only: bool
    guard: _Guarded | None = None
    action: int = PLACE
    limit: Decimal | None = None  # a bot's limit order: rests in the mirror until it fills
    side: int = common_pb2.SIDE_UNSPECIFIED
    at_mark: bool = False  # a bot's market order: booked at the mark when it was approved


def _asked(intent_id: str, time_ms: int) -> str:
    """What makes an intent decided: its id at its time."""
    return f"{intent_id}@{time_ms}"


class RiskHandler(Handler):
    name = "risk"
    inputs = (topics.CANDLE, topics.SIGNAL, topics.ORDER_INTENT, topics.ORDER_EVENT,
              topics.CONTROL)
    outputs = (topics.RISK_DECISION, topics.ORDER_APPROVED, topics.CONTROL)
    # What survives a restart: the kill switch and the breaker level (control.v1, compacted);
    # the signals already decided and their prices (risk.decision.v1); the book and each
    # strategy's trades (order.approved.v1, replayed with the candles in event time so the
    # equity peak and the day's start come out as they were); where the merge had got to (the
    # Watermarks of order.approved.v1); which streams exist (md.candle.v1 and signal.v1 keys).
    restore_from = (topics.CONTROL, topics.RISK_DECISION, topics.ORDER_APPROVED, topics.CANDLE,
                    topics.SIGNAL)

    def __init__(self, settings: RiskSettings, clock: Callable[[], float] = time.time,
                 configs: ActiveConfigStore | None = None) -> None:
        self.settings = settings
        # Per-strategy limits from active_configs (leverage, margin mode, max position): loaded
        # at start, re-read after a config_promotion on control.v1.
        self.configs = configs
        self.strategy_settings: dict[str, RiskSettings] = {}
        self.config_versions: dict[str, str] = {}
        self._reload_configs = False
        self.clock = clock  # wall clock, for the stale data guard only
        self.market_rules = settings.market_rules()
        self.book = Book()
        # Each strategy's trades (entries, closes, realized PnL) for the strategy-layer rules.
        self.ledger = Ledger(settings.initial_capital)
        self.market = Market(settings.correlation_window)
        # stop-loss / take-profit per open position: closed in the book on the candle that
        # triggers them (`meridian_common.protection`), where the executor fills the exit
        self.protect: dict[str, protection.Guard] = {}
        # bots' limit orders approved and not filled yet (resting.py)
        self.resting = RestingBook()
        self.stopped = 0
        self.breakers = Breakers(settings)
        self.merge: EventTimeMerge[_Held] = EventTimeMerge(settings.merge_grace_s)
        self.kill_switch = False
        # signal ids; intents as "<intent id>@<event time>": a bot may ask again under the
        # same client order id after a refusal (a later time), which is a new question
        self.decided: set[str] = set()
        self.forwarded: dict[str, int] = {}  # key -> last order.approved Watermark
        self.keys: set[str] = set()
        self._key_order: tuple[str, ...] = ()
        self._forwarded_at = (-1, 0)  # (release point, number of keys) last forwarded
        self._decided_to = -1  # the Watermarks' time: everything at or before it is decided
        # inputs the gate is configured not to wait for (`_not_merged`)
        self._unwaited = frozenset(t for t, on in ((topics.SIGNAL, settings.signals),
                                                   (topics.ORDER_INTENT, settings.intents))
                                   if not on)
        self.approved = 0
        self.rejected = 0
        self.late = 0
        self._warned = False
        # restore: client_order_id -> decision price; collected candles, orders, stream keys
        self._restored_prices: dict[str, Decimal] = {}
        self._restore_candles: list[_Candle] = []
        self._restore_orders: list[_Booked] = []
        self._restore_streams: dict[tuple[str, str], int] = {}
        self._restored_breaker: control_pb2.BreakerState | None = None
        self.metrics: metrics.RiskMetrics | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        self.metrics = metrics.RiskMetrics(registry, RULE_NAMES, BREAKERS)
        self._observe()

    def _observe(self) -> None:
        """The gauges from the state as it is now: after each batch (`flush`) and after a
        restore. Per batch, not per record: reading the book and setting a dozen series per
        record cost the embedded replay more than the gate's rules."""
        if self.metrics is None:
            return
        exposure: dict[str, Decimal] = {}
        for key in set(self.book.marks) | set(self.book.positions):
            symbol = key.rpartition(":")[2]
            exposure[symbol] = exposure.get(symbol, ZERO) + self.book.value(key)
        self.metrics.state(exposure=exposure, equity=self.equity(),
                           drawdown=self.breakers.drawdown(), kill_switch=self.kill_switch,
                           active=self.breakers.active())

    def _count(self, outcome: str, rules: Iterable[risk_decision_pb2.RuleResult]) -> None:
        """One decision made (never while the host replays inputs: counted before)."""
        if self.metrics is None or getattr(self, "replaying", False):
            return
        deciding = next((r.rule for r in rules if not r.passed), None)
        self.metrics.decided(outcome, deciding if outcome == metrics.REJECTED else None)

    async def start(self) -> None:
        """Load the promoted configs; a bad one stops the start-up, naming it and the field."""
        if self.configs is not None:
            self._use(await self.configs.promoted())

    async def flush(self) -> None:
        self._observe()
        if not self._reload_configs or self.configs is None:
            return
        self._reload_configs = False
        try:
            self._use(await self.configs.promoted())
        except (ConfigError, OSError, RuntimeError) as exc:
            log.error("promoted config refused, previous limits kept: %s", exc)

    def _use(self, configs: list[ActiveConfig]) -> None:
        self.strategy_settings = resolve(self.settings, configs)
        self.config_versions = {c.strategy: c.label for c in configs}
        if configs:
            log.info("active configs applied", extra={"configs": sorted(
                self.config_versions.values())})

    # -- inputs ------------------------------------------------------------------------------

    def handle(self, msg: Inbound, out: Outbox) -> None:
        self._handle(msg, out)

    def _handle(self, msg: Inbound, out: Outbox) -> None:
        topic, key = msg.topic, msg.key
        if topic == topics.CONTROL:
            if not msg.is_watermark:
                self._control(msg.message, out)  # type: ignore[arg-type]
            return
        if topic == topics.ORDER_EVENT:
            if not msg.is_watermark:
                self._order_event(msg.message)  # type: ignore[arg-type]
            return
        t = msg.event_time_ms
        if topic in self._unwaited and self._not_merged(msg, out):
            return
        if key not in self.keys:
            self._new_key(topic, key, t, msg.is_watermark)
        if msg.is_watermark:
            self.merge.advance((topic, key), t)
        elif topic == topics.CANDLE:
            self._take(msg, self._parse_candle(key, msg.message), CANDLE_RANK, out)  # type: ignore[arg-type]
        elif topic == topics.ORDER_INTENT:
            intent: order_intent_pb2.OrderIntent = msg.message  # type: ignore[assignment]
            if _asked(intent.meta.id, t) in self.decided:
                self.merge.advance((topic, key), t - 1)  # decided before a restart
            else:
                # several intents per candle: the stream reaches t with its Watermark only
                self._take(msg, self._parse_intent(key, intent), INTENT_RANK, out,
                           reached=t - 1)
        else:
            signal: signal_pb2.Signal = msg.message  # type: ignore[assignment]
            if signal.meta.id in self.decided:
                self.merge.advance((topic, key), t)  # decided before a restart
            else:
                self._take(msg, self._parse_signal(key, signal), SIGNAL_RANK, out)
        self._release(out)

    def _not_merged(self, msg: Inbound, out: Outbox) -> bool:
        """A record of an input the gate is configured not to wait for: handled here (True)."""
        if msg.topic == topics.ORDER_INTENT and not self.settings.intents:
            if msg.is_watermark:
                return True  # a bots host the gate does not listen to: never waited for
            raise InvalidMessage("order.intent.v1 record while the gate does not take bots' "
                                 "intents (set MERIDIAN_RISK_INTENTS=true)")
        if msg.topic == topics.SIGNAL and not self.settings.signals:
            if not msg.is_watermark:  # no signals service to wait for: decided as it comes
                signal: signal_pb2.Signal = msg.message  # type: ignore[assignment]
                if signal.meta.id not in self.decided:
                    self._dispatch(self._parse_signal(msg.key, signal), out)
            return True
        return False

    def _new_key(self, topic: str, key: str, t: int, is_watermark: bool) -> None:
        """A symbol's first record: all its streams are expected from now on (candles, and
        signals and bots' intents when the gate takes them), so none can run ahead while
        another has not shown up (the signals service behind ingest, or the signal partitions
        read before the candle ones).

        Candles imply signals and intents (every candle becomes a features row, every row a
        signal or a Watermark; the bots host answers every candle): a first candle at close c
        can lead to them at c, not before; a candle Watermark at t promises none at or before
        t. Signals and intents imply candles but not how far they have arrived: their first
        record expects the others from the start (-1)."""
        self.keys.add(key)
        expected = [topics.CANDLE]
        if self.settings.signals:
            expected.append(topics.SIGNAL)
        if self.settings.intents:
            expected.append(topics.ORDER_INTENT)
        for stream in expected:
            if stream == topic or self.merge.knows((stream, key)):
                continue
            if topic == topics.CANDLE:
                self.merge.advance((stream, key), t if is_watermark else t - 1)
            else:
                self.merge.advance((stream, key), -1)

    def _parse_candle(self, key: str, candle: candle_pb2.Candle) -> _Candle:
        try:
            close = dec(candle.close, "Candle.close")
            open_, high = dec(candle.open, "Candle.open"), dec(candle.high, "Candle.high")
            low = dec(candle.low, "Candle.low")
        except ValueError as exc:
            raise InvalidMessage(f"candle {candle.meta.id}: {exc}") from None
        if close <= 0:
            raise InvalidMessage(f"candle {candle.meta.id}: close {candle.close!r} is not "
                                 "positive")
        return _Candle(key, candle.meta.event_time_ms, close, candle.open_time_ms, open_, high,
                       low)

    def _parse_signal(self, key: str, signal: signal_pb2.Signal) -> _Signal:
        price = dec(signal.reference_price, "Signal.reference_price")
        if price <= 0:
            raise InvalidMessage(f"Signal.reference_price: {signal.reference_price!r} is not "
                                 "positive")
        return _Signal(key, signal, price)

    def _parse_intent(self, key: str, intent: order_intent_pb2.OrderIntent) -> _Intent:
        """Checked before it is held, every error naming the field."""
        name = f"intent {intent.meta.id!r}"
        if not intent.client_order_id:
            raise InvalidMessage(f"{name}: OrderIntent.client_order_id is empty")
        if intent.action == CANCEL:
            return _Intent(key, intent, ZERO, None)
        if intent.action != PLACE:
            raise InvalidMessage(f"{name}: OrderIntent.action {intent.action} is not PLACE or "
                                 "CANCEL")
        if intent.side not in (common_pb2.SIDE_BUY, common_pb2.SIDE_SELL):
            raise InvalidMessage(f"{name}: OrderIntent.side {intent.side} is not BUY or SELL")
        try:
            quantity = dec(intent.quantity, "OrderIntent.quantity")
            limit = (dec(intent.limit_price, "OrderIntent.limit_price")
                     if intent.order_type == LIMIT else None)
        except ValueError as exc:
            raise InvalidMessage(f"{name}: {exc}") from None
        if quantity <= 0 or (limit is not None and limit <= 0):
            raise InvalidMessage(f"{name}: OrderIntent.quantity and limit_price must be "
                                 f"positive, got {intent.quantity!r}, {intent.limit_price!r}")
        return _Intent(key, intent, quantity, limit)

    def _take(self, msg: Inbound, item: _Candle | _Signal | _Intent, rank: int, out: Outbox,
              reached: int | None = None) -> None:
        """Validated before it is held: a record released later cannot be dead-lettered."""
        if isinstance(item, _Candle):
            last = self.market.symbols.get(item.key)
            if last is not None and item.time_ms <= last.close_time_ms:
                # already taken (read again after a restart) or a correction: a new mark only
                self.market.candle(item.key, item.time_ms, item.close)
                self.merge.advance((msg.topic, msg.key), item.time_ms)
                return
        if not self.merge.hold((msg.topic, msg.key), msg.event_time_ms, rank,
                               (item, msg.trace_context), msg.position, reached=reached):
            self.late += 1
            log.warning("record behind the merge taken at once", extra={
                "topic": msg.topic, "key": msg.key, "event_time_ms": msg.event_time_ms,
                "released_to_ms": self.merge.released_to})
            self._dispatch(item, out)

    def _release(self, out: Outbox) -> None:
        for item, cause in self.merge.release():
            with tracing.caused_by(cause):
                self._dispatch(item, out)
        upto = self.merge.released_to
        if self.settings.intents:
            # The bots loop (bots -> gate -> executor -> bots) needs to hear how far the gate
            # has decided when the streams moved without records: the bots host's Watermark
            # at a candle's open, for its first candle or after a gap in the candles, lets the
            # executor evaluate that candle. Everything at or before the frontier is released
            # and a stream's next record comes after its progress. Never back (a new key
            # lowers the frontier). Limit: a symbol whose first record arrives after the
            # frontier passed its times gets orders behind those Watermarks (counted late).
            upto = max(upto, self.merge.frontier, self._decided_to)
        self._decided_to = max(self._decided_to, upto)
        # every message comes here: look at the keys only when the release point or the key
        # set moved since the last look (keys only ever grow)
        if upto >= 0 and (upto, len(self.keys)) != self._forwarded_at:
            self._forwarded_at = (upto, len(self.keys))
            for key in self._sorted_keys():
                if self.forwarded.get(key, -1) < upto:
                    self.forwarded[key] = upto
                    out.watermark(topics.ORDER_APPROVED, key, upto)
                    if self.settings.intents:  # the bots host waits for its decisions
                        out.watermark(topics.RISK_DECISION, key, upto)
        if self.merge.held and not self._warned and (
                self.merge.waited_s() >= self.settings.hold_warning_s):
            self._warned = True
            log.warning("signals waiting for other symbols' candles or signals", extra={
                "held": self.merge.held, "waited_s": round(self.merge.waited_s(), 1),
                "lagging": [f"{t}:{k}@{p}" for (t, k), p in self.merge.lagging()]})
        elif not self.merge.held:
            self._warned = False

    def _sorted_keys(self) -> tuple[str, ...]:
        if len(self._key_order) != len(self.keys):
            self._key_order = tuple(sorted(self.keys))
        return self._key_order

    def _dispatch(self, item: _Candle | _Signal | _Intent, out: Outbox) -> None:
        if isinstance(item, _Candle):
            self._candle(item, out)
        elif isinstance(item, _Intent):
            self._intent(item, out)
        else:
            self._signal(item.key, item.signal, item.price, out)

    # -- candles: marks, equity, breakers ------------------------------------------------------

    def equity(self) -> Decimal:
        """Initial capital + realized PnL of the approved trades + open positions at marks."""
        total = MONEY_CONTEXT.add(self.settings.initial_capital, self.ledger.realized)
        for key, pos in self.book.positions.items():
            mark = self.book.marks.get(key, pos.entry)
            total = MONEY_CONTEXT.add(total, MONEY_CONTEXT.multiply(
                pos.quantity, MONEY_CONTEXT.subtract(mark, pos.entry)))
        return total

    def _mark(self, candle: _Candle) -> Change | None:
        key, close = candle.key, candle.close
        move = self.market.candle(key, candle.time_ms, close)
        self.book.marks[key] = close
        self.breakers.move(candle.time_ms, move)
        return self.breakers.check(candle.time_ms, self.equity())

    def _protective(self, candle: _Candle) -> None:
        """Book the exit the executor makes when this candle triggers the position's stop-loss,
        take-profit or trailing stop (the same `protection.check`, at the hit price, before
        the close marks)."""
        protect = self.protect.get(candle.key)
        if protect is None:
            return
        hit = protect.on_candle(candle.open_ms, candle.open, candle.high, candle.low)
        if hit is None:
            return
        key = candle.key
        quantity = self.book.quantity(key)
        trade = self.ledger.open.get(key)
        self.stopped += 1
        self._book(key, trade.strategy if trade else "", -quantity, hit.price, candle.time_ms,
                   protection.exit_order_id(protect.cause, hit.reason), True)
        log.info("position closed by its %s", hit.reason, extra={
            "key": key, "price": to_str(hit.price), "event_time_ms": candle.time_ms})

    def _resting_fills(self, candle: _Candle) -> None:
        """Book the bots' limit orders this candle fills, as the executor fills them (same
        rule, same candle, same order), at the limit (or the open when marketable there)."""
        if not self.resting.orders:
            return
        for order, hit in self.resting.on_candle(candle.key, candle.open_ms, candle.open,
                                                 candle.high, candle.low):
            quantity = order.quantity
            if order.reduce_only:  # capped to the position, as the executor caps it
                quantity = min(quantity, abs(self.book.quantity(candle.key)))
                if quantity <= 0:
                    continue
            delta = quantity if order.side == common_pb2.SIDE_BUY else -quantity
            self._book(candle.key, order.strategy, delta, hit.price, candle.time_ms,
                       order.client_order_id, order.reduce_only)

    def _candle(self, candle: _Candle, out: Outbox) -> None:
        self._protective(candle)
        self._resting_fills(candle)
        change = self._mark(candle)
        if change is not None:
            self._announce(change, out)

    def _announce(self, change: Change, out: Outbox) -> None:
        t = change.time_ms
        level = change.level.name.lower()
        log.log(logging.INFO if change.level == Level.NORMAL else logging.WARNING,
                "circuit breaker: %s", level, extra={
            "until_ms": change.until_ms, "reason": change.reason, "event_time_ms": t})
        out.emit(topics.CONTROL, "breaker", control_pb2.Control(
            meta=common_pb2.Meta(id=f"breaker:{t}:{level}", event_time_ms=t, producer=self.name),
            breaker=control_pb2.BreakerState(level=level, until_ms=change.until_ms,
                                             reason=change.reason)))
        if change.level == Level.CLOSE:
            self.kill_switch = True
            out.emit(topics.CONTROL, "kill_switch", control_pb2.Control(
                meta=common_pb2.Meta(id=f"kill:{t}", event_time_ms=t, producer=self.name),
                kill_switch=control_pb2.KillSwitch(
                    engaged=True, reason=f"breakers: {change.reason}", actor=ACTOR)))
            self._close_all(t, f"breaker:{t}:{level}", change.reason, out)

    def _close_all(self, t: int, cause: str, reason: str, out: Outbox) -> None:
        """Every bot's resting order canceled, then every open position closed, each by
        `_exit`."""
        self._cancel_resting(t, cause, f"close all: {reason}", out, entries_only=False)
        for key in sorted(self.book.positions):
            self._exit(key, t, f"close-all:{t}:{key}", cause, f"close all: {reason}", out)

    def _exit(self, key: str, t: int, signal_id: str, cause: str, reason: str,
              out: Outbox) -> None:
        """A FLAT signal of the gate's own for one position, decided like any other (so the
        decision reports every rule; reduce-only exits pass the kill switch and the limits)."""
        exchange, _, symbol = key.rpartition(":")
        trade = self.ledger.open.get(key)
        price = self.book.marks.get(key, self.book.positions[key].entry)
        signal = signal_pb2.Signal(
            meta=common_pb2.Meta(id=signal_id, cause_id=cause, event_time_ms=t,
                                 producer=self.name),
            exchange=exchange, symbol=symbol, strategy=trade.strategy if trade else "",
            direction=common_pb2.DIRECTION_FLAT, confidence=1.0, reference_price=to_str(price),
            reason=reason)
        self._signal(key, signal, price, out)

    # -- signals: decisions ---------------------------------------------------------------------

    def _owner(self, key: str) -> str:
        """The strategy holding the key: its open trade's, else its resting orders'."""
        trade = self.ledger.open.get(key)
        return trade.strategy if trade else self.resting.owner(key)

    def _intent(self, item: _Intent, out: Outbox) -> None:
        """A bot's order: a cancel always passes (it only takes risk away); a place is judged
        by every rule like a signal's order, with the bot's own quantity (the gate does not
        size it) and the worst case of the key's resting orders (every resting buy filled)."""
        intent, key = item.intent, item.key
        self.decided.add(_asked(intent.meta.id, intent.meta.event_time_ms))
        t = intent.meta.event_time_ms
        if intent.action == CANCEL:
            self._cancel(key, intent.client_order_id, intent.strategy, t, intent.meta.id,
                         f"canceled by {intent.strategy}: {intent.reason}", out)
            return
        buy = intent.side == common_pb2.SIDE_BUY
        mark = self.book.marks.get(key)
        price = item.limit if item.limit is not None else mark
        if price is None:
            self._reject_intent(item, "order.price", "a market order before the symbol's "
                                "first candle: nothing to value it at", out)
            return
        current = self.book.quantity(key)
        signed = item.quantity if buy else -item.quantity
        pending = self.resting.exposure(key)
        reduce_only = intent.reduce_only
        target = current + signed if reduce_only else current + pending + signed
        after = Book(dict(self.book.positions))
        after.apply(key, signed, price)
        pos = after.positions.get(key)
        proposal = Proposal(intent.side, item.quantity, target, reduce_only,
                            pos.entry if pos else ZERO)
        settings = self.strategy_settings.get(intent.strategy, self.settings)
        direction = (common_pb2.DIRECTION_FLAT if reduce_only else
                     common_pb2.DIRECTION_LONG if buy else common_pb2.DIRECTION_SHORT)
        ctx = Context(key=key, direction=direction, price=price, stop=None, stop_error="",
                      confidence=1.0, proposal=proposal, book=self.book, settings=settings,
                      rules=self.market_rules,
                      limits_from=self.config_versions.get(intent.strategy, ""),
                      kill_switch=self.kill_switch, strategy=intent.strategy, event_time_ms=t,
                      ledger=self.ledger, breakers=self.breakers, market=self.market,
                      lag_s=self.clock() - t / 1000, owner=self._owner(key),
                      committed=self.resting.committed(key))
        rules = evaluate(ctx)
        approved = all(r.passed for r in rules)
        decision = self._intent_decision(item, approved, rules, price)
        if not approved:
            self._refused(key, decision, out)
            return
        self.approved += 1
        self._count(metrics.APPROVED, rules)
        coid = intent.client_order_id
        if item.limit is not None:
            self.resting.add(RestingOrder(key, intent.strategy, coid, intent.side,
                                          item.quantity, reduce_only,
                                          RestingLimit(intent.side, item.limit, t)))
        else:  # a market order fills at the next open: booked now, as a signal's order
            self._book(key, intent.strategy, signed, price, t, coid, reduce_only)
        out.emit(topics.RISK_DECISION, key, decision)
        out.emit(topics.ORDER_APPROVED, key, order_approved_pb2.ApprovedOrder(
            meta=common_pb2.Meta(id=coid, cause_id=decision.meta.id, event_time_ms=t,
                                 producer=self.name),
            client_order_id=coid, signal_id=intent.meta.id, exchange=intent.exchange,
            symbol=intent.symbol, side=intent.side, order_type=intent.order_type,
            quantity=intent.quantity, limit_price=intent.limit_price if item.limit else "",
            reduce_only=reduce_only, strategy=intent.strategy, action=PLACE))

    def _intent_decision(self, item: _Intent, approved: bool,
                         rules: list[risk_decision_pb2.RuleResult],
                         price: Decimal) -> risk_decision_pb2.RiskDecision:
        """An intent's decision names its client order id, approved or not: the bots host
        tells the bot which of its orders was refused."""
        intent = item.intent
        return risk_decision_pb2.RiskDecision(
            meta=common_pb2.Meta(id="dec:" + intent.meta.id, cause_id=intent.meta.id,
                                 event_time_ms=intent.meta.event_time_ms, producer=self.name),
            exchange=intent.exchange, symbol=intent.symbol, approved=approved, rules=rules,
            client_order_id=intent.client_order_id, side=intent.side,
            quantity=to_str(item.quantity), reference_price=to_str(price),
            reduce_only=intent.reduce_only)

    def _reject_intent(self, item: _Intent, rule: str, detail: str, out: Outbox) -> None:
        rules = [risk_decision_pb2.RuleResult(rule=rule, passed=False, detail=detail)]
        self._refused(item.key, self._intent_decision(item, False, rules, ZERO), out)

    def _refused(self, key: str, decision: risk_decision_pb2.RiskDecision, out: Outbox) -> None:
        """A refusal, of a signal or an intent: counted and published (no order)."""
        self.rejected += 1
        self._count(metrics.REJECTED, decision.rules)
        out.emit(topics.RISK_DECISION, key, decision)

    def _cancel(self, key: str, coid: str, strategy: str, t: int, cause: str, reason: str,
                out: Outbox) -> None:
        """Take a resting order out of the mirror and forward the cancel (approved: a cancel
        only removes risk). One that already filled or is unknown is forwarded all the same:
        the executor knows best, and answers nothing for an order it no longer holds."""
        order = self.resting.remove(coid)
        exchange, _, symbol = key.rpartition(":")
        detail = (f"{coid} resting: canceled" if order is not None
                  else f"{coid} not resting here (filled, expired or unknown): forwarded")
        rules = [risk_decision_pb2.RuleResult(rule="order.cancel", passed=True, detail=detail)]
        decision = risk_decision_pb2.RiskDecision(
            meta=common_pb2.Meta(id="dec:" + cause, cause_id=cause, event_time_ms=t,
                                 producer=self.name),
            exchange=exchange, symbol=symbol, approved=True, rules=rules,
            client_order_id=coid, side=order.side if order else common_pb2.SIDE_UNSPECIFIED,
            quantity=to_str(order.quantity) if order else "0",
            reference_price=to_str(order.limit.limit) if order else "0",
            reduce_only=order.reduce_only if order else False)
        out.emit(topics.RISK_DECISION, key, decision)
        out.emit(topics.ORDER_APPROVED, key, order_approved_pb2.ApprovedOrder(
            meta=common_pb2.Meta(id=f"{coid}:cancel", cause_id=decision.meta.id,
                                 event_time_ms=t, producer=self.name),
            client_order_id=coid, signal_id=cause, exchange=exchange, symbol=symbol,
            side=decision.side, quantity=decision.quantity, strategy=strategy,
            action=CANCEL))
        log.info("order cancel forwarded", extra={"client_order_id": coid, "reason": reason})

    def _cancel_resting(self, t: int, cause: str, reason: str, out: Outbox, *,
                        entries_only: bool) -> None:
        """Cancel the bots' resting orders (the entries only, or every one), key by key."""
        for order in sorted(self.resting.orders.values(),
                            key=lambda o: (o.key, o.client_order_id)):
            if entries_only and order.reduce_only:
                continue
            self._cancel(order.key, order.client_order_id, order.strategy, t,
                         f"{cause}:cancel:{order.client_order_id}", reason, out)

    def _signal(self, key: str, signal: signal_pb2.Signal, price: Decimal, out: Outbox) -> None:
        self.decided.add(signal.meta.id)
        t = signal.meta.event_time_ms
        stop, stop_error = parse_stop(signal)
        settings = self.strategy_settings.get(signal.strategy, self.settings)
        record = (self.ledger.record_of(signal.strategy, settings.kelly_window)
                  if settings.sizing == "fractional_kelly" else None)
        proposal = propose(signal.direction, key, price, stop, signal.confidence, self.book,
                           settings, self.market_rules, self.breakers.size_factor(), record)
        ctx = Context(key=key, direction=signal.direction, price=price, stop=stop,
                      stop_error=stop_error, confidence=signal.confidence, proposal=proposal,
                      book=self.book, settings=settings, rules=self.market_rules,
                      limits_from=self.config_versions.get(signal.strategy, ""),
                      kill_switch=self.kill_switch, strategy=signal.strategy,
                      event_time_ms=t, ledger=self.ledger, breakers=self.breakers,
                      market=self.market, lag_s=self.clock() - t / 1000,
                      owner=self._owner(key), committed=self.resting.committed(key))
        rules = evaluate(ctx)
        # The signal's price marks the symbol whatever the decision: exposure is valued at it.
        self.book.marks[key] = price
        approved = all(r.passed for r in rules)
        decision = risk_decision_pb2.RiskDecision(
            meta=common_pb2.Meta(id="dec:" + signal.meta.id, cause_id=signal.meta.id,
                                 event_time_ms=t, producer=self.name),
            exchange=signal.exchange, symbol=signal.symbol, approved=approved, rules=rules,
            side=proposal.side, quantity=to_str(proposal.quantity),
            reference_price=signal.reference_price, reduce_only=proposal.reduce_only,
        )
        if not approved:
            self._refused(key, decision, out)
            return
        self.approved += 1
        reduced = proposal.is_entry and self.breakers.size_factor() < 1
        self._count(metrics.REDUCED if reduced else metrics.APPROVED, rules)
        coid = ids.client_order_id(signal.meta.id)
        decision.client_order_id = coid
        guard = _Guarded.of(settings, proposal.reduce_only, signal)
        self._book(key, signal.strategy, proposal.target - self.book.quantity(key), price, t,
                   coid, proposal.reduce_only, guard)
        out.emit(topics.RISK_DECISION, key, decision)
        out.emit(topics.ORDER_APPROVED, key, order_approved_pb2.ApprovedOrder(
            meta=common_pb2.Meta(id=coid, cause_id=decision.meta.id, event_time_ms=t,
                                 producer=self.name),
            client_order_id=coid, signal_id=signal.meta.id, exchange=signal.exchange,
            symbol=signal.symbol, side=proposal.side,
            order_type=order_approved_pb2.ORDER_TYPE_MARKET,
            quantity=to_str(proposal.quantity), reduce_only=proposal.reduce_only,
            stop_loss=signal.stop_loss, take_profit=signal.take_profit, strategy=signal.strategy,
            trailing_stop=guard.trailing_stop, leverage=guard.leverage,
            maintenance_margin_rate=guard.maintenance_margin_rate,
        ))

    def _book(self, key: str, strategy: str, delta: Decimal, price: Decimal, time_ms: int,
              order_id: str, reduce_only: bool, guard: _Guarded | None = None) -> None:
        """Book an approved order: in the strategy ledger (from the position before it), then
        in the book, then its stops. Live approvals and the restore go through here alike."""
        before = self.book.positions.get(key)
        self.ledger.record(key, strategy, before, delta, price, time_ms, order_id, reduce_only)
        self.book.apply(key, delta, price)
        after = self.book.positions.get(key)
        what = protection.change(before.quantity if before else ZERO,
                                 after.quantity if after else ZERO, reduce_only)
        if what == "none":
            self.protect.pop(key, None)
        elif what == "new":
            g = guard or _Guarded()
            try:
                made = protection.guard(
                    after.quantity > 0,  # type: ignore[union-attr]
                    g.stop_loss, g.take_profit, g.trailing_stop, g.leverage,
                    g.maintenance_margin_rate, from_ms=time_ms, cause=order_id)
            except ValueError:
                made = None  # the executor ignores them too (and logs why)
            if made is None:
                self.protect.pop(key, None)
            else:
                self.protect[key] = made

    @property
    def positions(self) -> dict[str, Decimal]:
        """Signed position per key (a view of the book)."""
        return {k: p.quantity for k, p in self.book.positions.items()}

    # -- control and order events (arrival order) ----------------------------------------------

    def _control(self, command: control_pb2.Control, out: Outbox | None) -> None:
        kind = command.WhichOneof("command")
        if kind == "breaker" and out is None:  # restore: resume at the announced level
            self._restored_breaker = command.breaker
            return
        if kind == "config_promotion" and out is not None:
            self._reload_configs = True  # read in flush(), after this batch
            return
        if kind != "kill_switch":
            return
        switch = command.kill_switch
        was = self.kill_switch
        self.kill_switch = switch.engaged
        if was != switch.engaged and out is not None:
            log.warning("kill switch %s", "ENGAGED" if switch.engaged else "cleared",
                        extra={"reason": switch.reason, "actor": switch.actor})
        if not switch.engaged:
            if self.breakers.cleared() and out is not None:
                t = max(command.meta.event_time_ms, self._decided_to)
                out.emit(topics.CONTROL, "breaker", control_pb2.Control(
                    meta=common_pb2.Meta(id=f"breaker:{t}:normal", event_time_ms=t,
                                         producer=self.name),
                    breaker=control_pb2.BreakerState(
                        level="normal", reason=f"kill switch cleared by {switch.actor}: "
                                               f"{switch.reason}")))
        elif (out is not None and not was and switch.actor != ACTOR
              and self.settings.flatten_on_kill):
            # Never behind the order watermarks already published for the keys.
            t = max(command.meta.event_time_ms, self._decided_to)
            self._close_all(t, command.meta.id, f"kill switch by {switch.actor}: "
                                                f"{switch.reason}", out)
        elif out is not None and not was:
            # bots' resting buys would open positions the switch forbids: canceled (their
            # resting exits stay, as a live executor keeps exits on a kill)
            t = max(command.meta.event_time_ms, self._decided_to)
            self._cancel_resting(t, command.meta.id, f"kill switch by {switch.actor}",
                                 out, entries_only=True)

    def _order_event(self, event: order_event_pb2.OrderEvent) -> None:
        """Release what an order that ended unfilled still held; count outcomes."""
        status = event.status
        if status in FAILED:
            self.breakers.order_outcome(True)
        elif status in SETTLED:
            self.breakers.order_outcome(False)
        if status not in (order_event_pb2.ORDER_STATUS_CANCELED,
                          order_event_pb2.ORDER_STATUS_REJECTED,
                          order_event_pb2.ORDER_STATUS_EXPIRED):
            return
        if event.client_order_id in self.resting.limit_ids:
            # a bot's limit order: never booked before it filled, so nothing to give back;
            # one the executor ended is no longer resting in the mirror either
            self.resting.remove(event.client_order_id)
            return
        try:
            quantity = dec(event.quantity, "OrderEvent.quantity")
            filled = dec(event.filled_quantity or "0", "OrderEvent.filled_quantity")
        except ValueError as exc:
            raise InvalidMessage(f"order event {event.meta.id}: {exc}") from None
        unfilled = quantity - filled
        if unfilled <= 0:
            return
        key = topics.market_key(event.exchange, event.symbol)
        # The approval booked the whole quantity at once: give back the part that never filled.
        release = -unfilled if event.side == common_pb2.SIDE_BUY else unfilled
        price = self.book.marks.get(key, ZERO)
        trade = self.ledger.open.get(key)
        self._book(key, trade.strategy if trade else "", release, price,
                   event.meta.event_time_ms, event.client_order_id, True)
        log.warning("order ended unfilled: its exposure released", extra={
            "client_order_id": event.client_order_id, "status": status,
            "unfilled": to_str(unfilled), "reason": event.reason})

    # -- restore -------------------------------------------------------------------------------

    def restore(self, msg: Inbound) -> None:
        topic, key = msg.topic, msg.key
        if topic in (topics.CANDLE, topics.SIGNAL):
            stream = (topic, key)
            t = msg.event_time_ms
            self._restore_streams[stream] = max(self._restore_streams.get(stream, -1), t)
            if topic == topics.CANDLE and not msg.is_watermark:
                with contextlib.suppress(ValueError):  # dead-lettered when it was consumed
                    self._restore_candles.append(self._parse_candle(key, msg.message))  # type: ignore[arg-type]
            return
        if msg.is_watermark:
            if topic == topics.ORDER_APPROVED:
                self.forwarded[key] = max(self.forwarded.get(key, -1), msg.event_time_ms)
            return
        if topic == topics.CONTROL:
            self._control(msg.message, None)  # type: ignore[arg-type]
            return
        if topic == topics.RISK_DECISION:
            decision: risk_decision_pb2.RiskDecision = msg.message  # type: ignore[assignment]
            cause = decision.meta.cause_id
            self.decided.add(_asked(cause, decision.meta.event_time_ms)
                             if cause.startswith("intent:") else cause)
            if decision.meta.cause_id.startswith("intent:") or ":cancel:" in decision.meta.id:
                return  # a bot's order or a cancel: priced by its limit, not a mark
            price = dec(decision.reference_price, "RiskDecision.reference_price")
            self.book.marks[key] = price
            if decision.approved:
                self._restored_prices[decision.client_order_id] = price
            return
        order: order_approved_pb2.ApprovedOrder = msg.message  # type: ignore[assignment]
        if order.action == CANCEL:
            self._restore_orders.append(_Booked(
                key, order.meta.event_time_ms, order.strategy, ZERO, ZERO,
                order.client_order_id, False, action=CANCEL))
            return
        quantity = dec(order.quantity, "ApprovedOrder.quantity")
        if order.order_type == LIMIT:
            limit = dec(order.limit_price, "ApprovedOrder.limit_price")
            self._restore_orders.append(_Booked(
                key, order.meta.event_time_ms, order.strategy, quantity, limit,
                order.client_order_id, order.reduce_only, limit=limit, side=order.side))
            return
        # Without its decision (never expected: both are published together) the entry is the
        # symbol's last known price, else 0 until the next signal marks it. A bot's market
        # order was booked at the mark of its time: taken when it is replayed (`restored`).
        price = self._restored_prices.pop(order.client_order_id,
                                          self.book.marks.get(key, ZERO))
        at_mark = order.signal_id.startswith("intent:")
        self._restore_orders.append(_Booked(
            key, order.meta.event_time_ms, order.strategy,
            quantity if order.side == common_pb2.SIDE_BUY else -quantity, price,
            order.client_order_id, order.reduce_only, _Guarded(
                order.stop_loss, order.take_profit, order.trailing_stop, order.leverage,
                order.maintenance_margin_rate), at_mark=at_mark))

    def restored(self) -> None:
        """Replay the approved orders with the candles up to where the merge had got, in its
        order (at one time: candles, then orders), for the book, the strategies' trades, the
        marks and the equity the breakers measure; then resume the merge there."""
        upto = min(self.forwarded.values(), default=-1)
        candles = sorted((c for c in self._restore_candles if c.time_ms <= upto),
                         key=lambda c: (c.time_ms, c.key))
        orders = sorted(self._restore_orders, key=lambda o: o.time_ms)  # stable: topic order
        i = 0
        for candle in candles:
            while i < len(orders) and orders[i].time_ms < candle.time_ms:
                self._book_restored(orders[i])
                i += 1
            self._protective(candle)
            self._resting_fills(candle)
            self._mark(candle)
        for order in orders[i:]:
            self._book_restored(order)
        if self._restored_breaker is not None:
            state = self._restored_breaker
            self.breakers.apply(Level[state.level.upper()], state.until_ms, state.reason)
        if upto >= 0:
            for stream in self._restore_streams:
                self.merge.advance(stream, upto)
                self.keys.add(stream[1])
            self.merge.released_to = upto
            self._decided_to = upto
        self._restore_candles, self._restore_orders, self._restore_streams = [], [], {}
        self._restored_prices.clear()
        self._observe()

    def _book_restored(self, o: _Booked) -> None:
        if o.action == CANCEL:
            self.resting.remove(o.order_id)
        elif o.limit is not None:
            self.resting.add(RestingOrder(o.key, o.strategy, o.order_id, o.side, o.delta,
                                          o.reduce_only, RestingLimit(o.side, o.limit,
                                                                      o.time_ms)))
        else:
            price = self.book.marks.get(o.key, o.price) if o.at_mark else o.price
            self._book(o.key, o.strategy, o.delta, price, o.time_ms, o.order_id,
                       o.reduce_only, o.guard)

    # -- host contract ---------------------------------------------------------------------------

    def retained(self) -> Mapping[tuple[str, int], int]:
        return self.merge.retained()
