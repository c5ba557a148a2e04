"""The bots host: candles, fills and the risk gate's decisions in, order intents out.

Each configured bot (`spec.BotSpec`: a `GridBot` or a `DcaBot`) owns one exchange:symbol key.
For that key the host merges three streams in event time (`EventTimeMerge`, one per key: bots
share no state, so one symbol's stall holds back no other) and tells the bot, in this order
at each time:
  rank 0  a rejected decision on one of its orders (risk.decision.v1) -> `on_rejected`;
  rank 1  a fill of one of its orders (fill.v1, client id "<bot_id>-...") -> `on_fill`;
  rank 2  candle k, held at its OPEN o_k -> `on_candle` (Bar open_ms o_k, close_ms c_k).
A fill or decision record proves its stream only up to t - 1 (a candle has several fills, a
time several decisions); the producers' Watermark at t, published after them, closes t.
What the bot answers while the host handles candle k (to the decisions and fills released
before it, then to the candle, in the order the bot said it) goes out on order.intent.v1 at
event time c_k, followed by an order.intent.v1 Watermark at c_k. That is the timing of
`bot_sim.BotSimulation`: a rejection of an order placed at c_{k-1} = o_k is heard before the
fills of candle k (which carry o_k), the fills before k's close, and every reaction trades
from candle k+1 on.

Why the loop bots -> gate -> executor -> bots does not deadlock. Candle k is released once
fill.v1 and risk.decision.v1 have reached o_k for its key. The executor's fill watermark is
min(its order watermark, the open of its last candle): it reaches o_k once the gate has
decided up to o_k = c_{k-1}, and the gate can once this host's intent watermark is at
c_{k-1}, which it published after candle k-1. So each candle needs only the previous candle's
round trip. Holding candle k at its close c_k instead would wait for the executor to evaluate
candle k+1, which waits for the intents of candle k: a cycle. The first candle of a bot (open
o) expects fills and decisions from o - 1 only, and the host publishes an intent Watermark at
o as soon as it takes that candle (every intent it can still make carries a candle's close,
after o): the gate decides up to o, the executor evaluates the candle and the chain starts.
The same Watermark at a candle's open bridges a gap in the candles (a missing or
dead-lettered candle would otherwise leave the intent stream at the close before the gap).
A key without a bot (or before its bot's `start`) gets its intent Watermark at c_k as soon as
candle k arrives: the gate waits for order.intent.v1 on every symbol, and must not wait on a
loop for symbols no bot trades.

Determinism. A bot is told its records in (event time, rank, arrival) order and only once all
three streams of its key have reached that time, so the sequence of calls depends on the
records and on each stream's own order (one partition per key), never on how the three topics
interleave when read. The bots have no clock and no I/O, so their intents (client ids, prices,
quantities, times) are a function of that sequence; the gate's decisions and the executor's
fills are functions of the intents and the candles; so every run, and the rebuild after a
restart (`rebuild_from_inputs`: the state is replayed from the inputs, its outputs discarded),
makes the same intents with the same ids.

Limits:
- order.event.v1 is not an input. An order the executor refuses after the gate approved it
  (a limit order arriving after its candle left the executor's buffer, a reduce-only sell
  with no position to reduce) stays open in the bot for as long as nothing of the bot's own
  replaces it: a grid slot then idles for the bot's lifetime; a DCA take-profit is replaced at
  the next safety fill, and a stop-loss (when set) ends the cycle; otherwise the cycle waits
  for ever. A reduce-only sell the executor caps to a smaller position (another strategy sold
  on the symbol) reaches the bot as a fill of the capped quantity.
- A cancel the bot answers to a fill takes effect at that candle's close (the executor has
  evaluated the whole candle before the bot hears the fill), as in `bot_sim`: a candle crossing
  a DCA safety order and the take-profit it replaces fills both, and `DcaBot` books the old
  take-profit's fill as a partial exit.
- A refused DCA base order is asked for again on the next candle under the same client id;
  the gate decides an intent again when it comes at a later time.
- A rejected decision on a cancel leaves the order where it was (the bot is not told: there
  is nothing for it to forget), and the host logs it.
- The rebuild needs fill.v1 and risk.decision.v1 kept as long as the bots have traded (the
  bot's state is a function of its fills, which are not history topics); and a bot's `start`
  must not be behind the executor (orders stamped before its evaluated candles are refused).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.context import Context
from prometheus_client import CollectorRegistry

from meridian.v1 import (
    candle_pb2,
    common_pb2,
    fill_pb2,
    order_approved_pb2,
    order_intent_pb2,
    risk_decision_pb2,
)
from meridian_common import topics, tracing
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox
from meridian_common.merge import EventTimeMerge
from meridian_common.money import dec, to_str
from meridian_common.strategy.intents import (
    BUY,
    SELL,
    Bar,
    Bot,
    BotFill,
    CancelOrder,
    Intent,
    PlaceOrder,
)
from meridian_signals.bots.metrics import BotsMetrics
from meridian_signals.bots.spec import BotSpec

log = logging.getLogger(__name__)

DECISION_RANK, FILL_RANK, CANDLE_RANK = 0, 1, 2


def intent_id(client_order_id: str) -> str:
    """meta.id of a place intent; the gate's decision carries it as its cause."""
    return f"intent:{client_order_id}"


def cancel_intent_id(client_order_id: str) -> str:
    return f"intent:{client_order_id}:cancel"


@dataclass(frozen=True, slots=True)
class _Candle:
    bar: Bar
    candle_id: str
    trace: Context | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class _Rejected:
    client_order_id: str
    reason: str


_Held = _Candle | _Rejected | BotFill


@dataclass(slots=True)
class _Runner:
    """One bot and what its key's merge holds for it."""

    spec: BotSpec
    bot: Bot
    merge: EventTimeMerge[_Held]
    prefix: str
    last_open: int = -1  # open of the newest candle taken (-1: none yet)
    held_candles: int = 0  # taken, not yet told to the bot
    pending: list[Intent] = field(default_factory=list)  # answers not yet sent (candle's)


class BotsHandler(Handler):
    name = "bots"
    inputs = (topics.CANDLE, topics.FILL, topics.RISK_DECISION)
    outputs = (topics.ORDER_INTENT,)
    # A bot's state is a function of its key's candles, fills and decisions (module docstring):
    # rebuilt from them at every start and after a rebalance.
    rebuild_from_inputs = True

    def __init__(self, specs: Sequence[BotSpec]) -> None:
        keys = [s.key for s in specs]
        ids = [s.bot_id for s in specs]
        if len(set(keys)) != len(keys) or len(set(ids)) != len(ids):
            raise ValueError("bots: one bot per exchange:symbol and per bot_id "
                             "(spec.parse refuses such files)")
        self.specs = tuple(specs)
        self.runners: dict[str, _Runner] = {}
        self.forwarded: dict[str, int] = {}  # key -> last order.intent.v1 Watermark
        self.intents = 0
        self.late = 0
        self.metrics: BotsMetrics | None = None  # bound by the host (`bind_metrics`)
        self.reset_state()

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        """The bots' series (`metrics`), every configured bot's labels at 0."""
        self.metrics = BotsMetrics(registry, self.specs)

    def reset_state(self) -> None:
        """Fresh bots and merges, nothing forwarded: as `__init__` leaves them."""
        self.runners = {s.key: self._runner(s) for s in self.specs}
        self.forwarded = {}
        self.intents = 0
        self.late = 0
        if self.metrics is not None:
            self.metrics.reset()  # the per-bot gauges follow the state the rebuild replays

    @staticmethod
    def _runner(spec: BotSpec) -> _Runner:
        merge: EventTimeMerge[_Held] = EventTimeMerge()
        # Known from the start: a fill or decision read before the bot's first candle (another
        # partition read first) waits for the candles instead of overtaking them.
        merge.advance((topics.CANDLE, spec.key), -1)
        return _Runner(spec, spec.make_bot(), merge, spec.bot_id + "-")

    # -- inputs ------------------------------------------------------------------------------

    def handle(self, msg: Inbound, out: Outbox) -> None:
        runner = self.runners.get(msg.key)
        if msg.topic == topics.CANDLE:
            self._candle(runner, msg, out)
        elif runner is None:
            return  # fills and decisions of a symbol no bot trades
        elif msg.topic == topics.FILL:
            item = None if msg.is_watermark else self._fill(runner, msg.message)  # type: ignore[arg-type]
            self._take(runner, msg, item, FILL_RANK, out)
        else:
            item = None if msg.is_watermark else self._rejection(runner, msg.message)  # type: ignore[arg-type]
            self._take(runner, msg, item, DECISION_RANK, out)
        if runner is not None:
            for held in runner.merge.release():
                self._dispatch(runner, held, out)

    def _candle(self, runner: _Runner | None, msg: Inbound, out: Outbox) -> None:
        key = msg.key
        if msg.is_watermark:
            # No candle closes at or before it, so no intent can be stamped there either.
            self._forward(key, msg.event_time_ms, out)
            return
        candle: candle_pb2.Candle = msg.message  # type: ignore[assignment]
        bar = _bar(candle)
        if runner is None or bar.open_ms < runner.spec.start_ms:
            self._forward(key, bar.close_ms, out)
            return
        if bar.open_ms <= runner.last_open:
            return  # read again (restart) or a correction of a candle the bot already heard
        if runner.last_open < 0:
            # The bot's first candle: nothing of its own can be filled or decided before it.
            runner.merge.advance((topics.FILL, key), bar.open_ms - 1)
            runner.merge.advance((topics.RISK_DECISION, key), bar.open_ms - 1)
        runner.last_open = bar.open_ms
        if runner.held_candles == 0:
            # Every intent from now on carries the close of this candle or a later one. Said at
            # once, it bridges a gap in the candles (a missing or dead-lettered one): the gate
            # decides up to o_k and the executor evaluates candle k without the intents of a
            # candle that never came. Without a gap the watermark is already there (c_{k-1}).
            self._forward(key, bar.open_ms, out)
        runner.held_candles += 1
        self._take(runner, msg, _Candle(bar, candle.meta.id, msg.trace_context), CANDLE_RANK,
                   out, at=bar.open_ms)

    def _take(self, runner: _Runner, msg: Inbound, item: _Held | None, rank: int, out: Outbox,
              at: int | None = None) -> None:
        """Hold the bot's record in the merge; a record of no interest moves its stream only.

        A fill or a decision proves its stream only up to t - 1: one candle has several fills,
        one time several decisions, all at t, and the producer's Watermark at t closes them.
        A candle (one per open) and a Watermark prove t itself."""
        stream = (msg.topic, msg.key)
        t = msg.event_time_ms if at is None else at
        several = not msg.is_watermark and msg.topic in (topics.FILL, topics.RISK_DECISION)
        reached = t - 1 if several else t
        if item is None:
            runner.merge.advance(stream, reached)
        elif not runner.merge.hold(stream, t, rank, item, msg.position, reached=reached):
            # Behind what was released: its producer broke its watermark. Told to the bot now;
            # its answers wait for the next candle (never behind a published watermark).
            self.late += 1
            log.warning("record behind the bots merge taken at once", extra={
                "topic": msg.topic, "key": msg.key, "event_time_ms": t,
                "released_to_ms": runner.merge.released_to})
            self._dispatch(runner, item, out)

    def _fill(self, runner: _Runner, fill: fill_pb2.Fill) -> BotFill | None:
        if not fill.client_order_id.startswith(runner.prefix):
            return None  # another strategy's order on this symbol
        where = f"fill {fill.meta.id}"
        if fill.side not in (BUY, SELL):
            raise InvalidMessage(f"{where}: Fill.side {fill.side} is neither buy nor sell")
        try:
            quantity = dec(fill.quantity, "Fill.quantity")
            price = dec(fill.price, "Fill.price")
            fee = dec(fill.fee, "Fill.fee")
        except ValueError as exc:
            raise InvalidMessage(f"{where}: {exc}") from None
        if quantity <= 0 or price <= 0:
            raise InvalidMessage(f"{where}: Fill.quantity {fill.quantity!r} and Fill.price "
                                 f"{fill.price!r} must be positive")
        return BotFill(fill.client_order_id, fill.side, quantity, price, fee, fill.liquidity,
                       fill.meta.event_time_ms)

    def _rejection(self, runner: _Runner,
                   decision: risk_decision_pb2.RiskDecision) -> _Rejected | None:
        coid = decision.client_order_id
        if decision.approved or not coid.startswith(runner.prefix):
            return None
        if decision.meta.cause_id == cancel_intent_id(coid):
            log.warning("the risk gate refused a bot's cancel: the order stays open", extra={
                "client_order_id": coid, "decision": decision.meta.id})
            return None
        failing = next((r for r in decision.rules if not r.passed), None)
        if failing is None:
            reason = "rejected"
        else:
            reason = f"{failing.rule}: {failing.detail}" if failing.detail else failing.rule
        return _Rejected(coid, reason)

    # -- the bot -----------------------------------------------------------------------------

    def _dispatch(self, runner: _Runner, item: _Held, out: Outbox) -> None:
        # Observed as the bot is told (never counted while the host rebuilds: `metrics`).
        if isinstance(item, _Rejected):
            if self.metrics is not None:
                self.metrics.rejected(runner.spec.bot_id, item.client_order_id,
                                      count=not self.replaying)
            runner.pending += runner.bot.on_rejected(item.client_order_id, item.reason)
        elif isinstance(item, BotFill):
            if self.metrics is not None:
                self.metrics.filled(runner.spec.bot_id, item, count=not self.replaying)
            runner.pending += runner.bot.on_fill(item)
        else:
            self._on_candle(runner, item, out)

    def _on_candle(self, runner: _Runner, candle: _Candle, out: Outbox) -> None:
        runner.held_candles -= 1
        intents = runner.pending + runner.bot.on_candle(candle.bar)
        runner.pending = []
        key, t = runner.spec.key, candle.bar.close_ms
        with tracing.caused_by(candle.trace):
            for intent in intents:
                out.emit(topics.ORDER_INTENT, key, self._intent(runner.spec, intent, candle))
            self.intents += len(intents)
            self._forward(key, t, out)
        if self.metrics is not None:
            self.metrics.sent(runner.spec.bot_id, intents, count=not self.replaying)

    def _intent(self, spec: BotSpec, intent: Intent,
                candle: _Candle) -> order_intent_pb2.OrderIntent:
        coid = intent.client_order_id
        msg = order_intent_pb2.OrderIntent(
            meta=common_pb2.Meta(cause_id=candle.candle_id, event_time_ms=candle.bar.close_ms,
                                 producer=self.name),
            exchange=spec.exchange, symbol=spec.symbol, strategy=f"bot:{spec.bot_id}",
            client_order_id=coid)
        if isinstance(intent, CancelOrder):
            msg.meta.id = cancel_intent_id(coid)
            msg.action = order_approved_pb2.ORDER_ACTION_CANCEL
            msg.reason = "cancel"
            return msg
        assert isinstance(intent, PlaceOrder)
        msg.meta.id = intent_id(coid)
        msg.action = order_approved_pb2.ORDER_ACTION_PLACE
        msg.side = intent.side  # type: ignore[assignment]
        msg.quantity = to_str(intent.quantity)
        if intent.limit_price is None:
            msg.order_type = order_approved_pb2.ORDER_TYPE_MARKET
        else:
            msg.order_type = order_approved_pb2.ORDER_TYPE_LIMIT
            msg.limit_price = to_str(intent.limit_price)
        # Grid and DCA bots are long-only on spot: a sell only ever sells inventory they hold.
        msg.reduce_only = intent.side == SELL
        msg.reason = intent.tag
        return msg

    def _forward(self, key: str, t: int, out: Outbox) -> None:
        if t > self.forwarded.get(key, -1):
            self.forwarded[key] = t
            out.watermark(topics.ORDER_INTENT, key, t)

    # -- host contract ---------------------------------------------------------------------------

    def retained(self) -> Mapping[tuple[str, int], int]:
        """Lowest offset any bot's merge still holds, per physical partition."""
        low: dict[tuple[str, int], int] = {}
        for runner in self.runners.values():
            for tp, offset in runner.merge.retained().items():
                if tp not in low or offset < low[tp]:
                    low[tp] = offset
        return low


def _bar(candle: candle_pb2.Candle) -> Bar:
    """The candle in exact decimals; InvalidMessage naming the field it cannot read."""
    try:
        bar = Bar(candle.open_time_ms, candle.meta.event_time_ms,
                  dec(candle.open, "Candle.open"), dec(candle.high, "Candle.high"),
                  dec(candle.low, "Candle.low"), dec(candle.close, "Candle.close"))
    except ValueError as exc:
        raise InvalidMessage(f"candle {candle.meta.id}: {exc}") from None
    if bar.close_ms <= bar.open_ms:
        raise InvalidMessage(f"candle {candle.meta.id}: Candle.meta.event_time_ms "
                             f"{bar.close_ms} (its close) is not after open_time_ms "
                             f"{bar.open_ms}")
    return bar
