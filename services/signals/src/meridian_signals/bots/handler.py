"""The bots host: candles, funding, fills and the risk gate's decisions in, order intents out.

Each configured bot (`spec.BotSpec`) owns its exchange:symbol keys: one for a `GridBot` or a
`DcaBot`, two for a `FundingArbBot` (the spot and the perpetual leg of a hedged pair). For
each bot the host merges its keys' streams in event time (`EventTimeMerge`, one per bot: bots
share no state, so one bot's stall holds back no other) and tells the bot, in this order at
each time:
  rank -1 a funding settlement of a perpetual leg (md.funding.v1) -> `on_funding`;
  rank 0  a rejected decision on one of its orders (risk.decision.v1) -> `on_rejected`;
  rank 1  a fill of one of its orders (fill.v1, client id "<bot_id>-...") -> `on_fill`;
  rank 2  candle k of each of its keys, held at its OPEN o_k -> `on_candles`, all keys'
          candles of that open in one call (Bars with open_ms o_k, close_ms c_k).
A fill or decision record proves its stream only up to t - 1 (a candle has several fills, a
time several decisions); the producers' Watermark at t, published after them, closes t.
A settlement at t is told before the candle opening at t, and after the fills at t-1h: the
position it is paid on is the one the ledger pays it on (held through the candle closing at
t), and the bot decides on it with the candle that closes after it (its orders fill at the
next open, as in the research backtest `meridian_research.funding_arb`).
What the bot answers while the host handles candle k (to the records released before it,
then to the candles, in the order the bot said it) goes out on order.intent.v1 at event time
c_k, followed by an order.intent.v1 Watermark at c_k for each key with a candle at o_k. That
is the timing of `bot_sim.BotSimulation`: a rejection of an order placed at c_{k-1} = o_k is
heard before the fills of candle k (which carry o_k), the fills before k's close, and every
reaction trades from candle k+1 on.

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
    funding_pb2,
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
    BotFill,
    CancelOrder,
    Intent,
    MarketsBot,
    PlaceOrder,
    Routed,
    Settlement,
)
from meridian_signals.bots.metrics import BotsMetrics
from meridian_signals.bots.spec import BotSpec

log = logging.getLogger(__name__)

FUNDING_RANK, DECISION_RANK, FILL_RANK, CANDLE_RANK = -1, 0, 1, 2


def intent_id(client_order_id: str) -> str:
    """meta.id of a place intent; the gate's decision carries it as its cause."""
    return f"intent:{client_order_id}"


def cancel_intent_id(client_order_id: str) -> str:
    return f"intent:{client_order_id}:cancel"


@dataclass(frozen=True, slots=True)
class _Candle:
    key: str
    bar: Bar
    candle_id: str
    trace: Context | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class _Rejected:
    key: str
    client_order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Fill:
    key: str
    fill: BotFill


@dataclass(frozen=True, slots=True)
class _Funding:
    key: str
    settlement: Settlement


_Held = _Candle | _Rejected | _Fill | _Funding


@dataclass(slots=True)
class _Runner:
    """One bot and what the merge of its keys holds for it."""

    spec: BotSpec
    bot: MarketsBot
    merge: EventTimeMerge[_Held]
    prefix: str
    last_open: dict[str, int] = field(default_factory=dict)  # per key: newest candle taken
    held_candles: dict[str, int] = field(default_factory=dict)  # per key: not yet told
    group: list[_Candle] = field(default_factory=list)  # the candles of one open, being told
    pending: list[Routed] = field(default_factory=list)  # answers not yet sent


class BotsHandler(Handler):
    name = "bots"
    inputs = (topics.CANDLE, topics.FILL, topics.RISK_DECISION, topics.FUNDING)
    outputs = (topics.ORDER_INTENT,)
    # A bot's state is a function of its key's candles, fills and decisions (module docstring):
    # rebuilt from them at every start and after a rebalance.
    rebuild_from_inputs = True

    def __init__(self, specs: Sequence[BotSpec]) -> None:
        keys = [k for s in specs for k in s.keys]
        ids = [s.bot_id for s in specs]
        if len(set(keys)) != len(keys) or len(set(ids)) != len(ids):
            raise ValueError("bots: one bot per exchange:symbol and per bot_id "
                             "(spec.parse refuses such files)")
        self.specs = tuple(specs)
        self.runners: dict[str, _Runner] = {}  # every key of a bot -> its runner
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
        self.runners = {}
        for spec in self.specs:
            runner = self._runner(spec)
            self.runners.update(dict.fromkeys(spec.keys, runner))
        self.forwarded = {}
        self.intents = 0
        self.late = 0
        if self.metrics is not None:
            self.metrics.reset()  # the per-bot gauges follow the state the rebuild replays

    @staticmethod
    def _runner(spec: BotSpec) -> _Runner:
        merge: EventTimeMerge[_Held] = EventTimeMerge()
        bot = spec.make_bot()
        # Known from the start: a fill or decision read before the bot's first candle (another
        # partition read first) waits for the candles instead of overtaking them, and no candle
        # is told before the funding settled at or before its open.
        for key in bot.keys:
            merge.advance((topics.CANDLE, key), -1)
        for key in bot.funding_keys:
            merge.advance((topics.FUNDING, key), -1)
        return _Runner(spec, bot, merge, spec.bot_id + "-")

    # -- inputs ------------------------------------------------------------------------------

    def handle(self, msg: Inbound, out: Outbox) -> None:
        runner = self.runners.get(msg.key)
        if msg.topic == topics.CANDLE:
            self._candle(runner, msg, out)
        elif runner is None:
            return  # fills, decisions and funding of a symbol no bot trades
        elif msg.topic == topics.FUNDING:
            if msg.key not in runner.bot.funding_keys:
                return
            item = None if msg.is_watermark else self._funding(msg.key, msg.message)  # type: ignore[arg-type]
            self._take(runner, msg, item, FUNDING_RANK, out)
        elif msg.topic == topics.FILL:
            item = None if msg.is_watermark else self._fill(runner, msg.key, msg.message)  # type: ignore[arg-type]
            self._take(runner, msg, item, FILL_RANK, out)
        else:
            item = None if msg.is_watermark else self._rejection(runner, msg.key, msg.message)  # type: ignore[arg-type]
            self._take(runner, msg, item, DECISION_RANK, out)
        if runner is not None:
            self._tell(runner, runner.merge.release(), out)

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
        last = runner.last_open.get(key, -1)
        if bar.open_ms <= last:
            return  # read again (restart) or a correction of a candle the bot already heard
        if last < 0:
            # The key's first candle: nothing of the bot's can be filled or decided before it.
            runner.merge.advance((topics.FILL, key), bar.open_ms - 1)
            runner.merge.advance((topics.RISK_DECISION, key), bar.open_ms - 1)
        runner.last_open[key] = bar.open_ms
        if runner.held_candles.get(key, 0) == 0:
            # Every intent from now on carries the close of this candle or a later one. Said at
            # once, it bridges a gap in the candles (a missing or dead-lettered one): the gate
            # decides up to o_k and the executor evaluates candle k without the intents of a
            # candle that never came. Without a gap the watermark is already there (c_{k-1}).
            self._forward(key, bar.open_ms, out)
        runner.held_candles[key] = runner.held_candles.get(key, 0) + 1
        self._take(runner, msg, _Candle(key, bar, candle.meta.id, msg.trace_context),
                   CANDLE_RANK, out, at=bar.open_ms)

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
            self._tell(runner, [item], out)

    @staticmethod
    def _funding(key: str, rate: funding_pb2.FundingRate) -> _Funding:
        try:
            value = dec(rate.rate, "FundingRate.rate")
        except ValueError as exc:
            raise InvalidMessage(f"funding {rate.meta.id}: {exc}") from None
        return _Funding(key, Settlement(rate.funding_time_ms, value))

    def _fill(self, runner: _Runner, key: str, fill: fill_pb2.Fill) -> _Fill | None:
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
        return _Fill(key, BotFill(fill.client_order_id, fill.side, quantity, price, fee,
                                  fill.liquidity, fill.meta.event_time_ms))

    def _rejection(self, runner: _Runner, key: str,
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
        return _Rejected(key, coid, reason)

    # -- the bot -----------------------------------------------------------------------------

    def _tell(self, runner: _Runner, released: list[_Held], out: Outbox) -> None:
        """Tell the bot the released records in order. The candles of one open are told
        together (`on_candles`) once the last of them is reached: the merge releases a time
        only when every key's candle stream has passed it, so a group is never split."""
        for i, item in enumerate(released):
            self._dispatch(runner, item)
            if not isinstance(item, _Candle):
                continue
            following = released[i + 1] if i + 1 < len(released) else None
            if not (isinstance(following, _Candle)
                    and following.bar.open_ms == item.bar.open_ms):
                self._on_candles(runner, out)

    def _dispatch(self, runner: _Runner, item: _Held) -> None:
        # Observed as the bot is told (never counted while the host rebuilds: `metrics`).
        bot_id, count = runner.spec.bot_id, not self.replaying
        if isinstance(item, _Rejected):
            if self.metrics is not None:
                self.metrics.rejected(bot_id, item.client_order_id, count=count)
            runner.pending += runner.bot.on_rejected(item.key, item.client_order_id,
                                                     item.reason)
        elif isinstance(item, _Fill):
            if self.metrics is not None:
                self.metrics.filled(bot_id, item.fill, count=count)
            runner.pending += runner.bot.on_fill(item.key, item.fill)
        elif isinstance(item, _Funding):
            runner.pending += runner.bot.on_funding(item.key, item.settlement)
        else:
            runner.held_candles[item.key] -= 1
            runner.group.append(item)

    def _on_candles(self, runner: _Runner, out: Outbox) -> None:
        """The bot hears one open's candles; its answers go out at their close, and each key
        of the group gets its intent Watermark there. An answer for a key that has no candle
        in the group (a gap on one leg) waits for that key's next candle: its Watermark may
        already be at this close, and nothing is ever published behind a Watermark."""
        group, runner.group = runner.group, []
        bars = {c.key: c.bar for c in group}
        answers = runner.pending + runner.bot.on_candles(bars)
        now = [(k, i) for k, i in answers if k in bars]
        runner.pending = [(k, i) for k, i in answers if k not in bars]
        t = group[0].bar.close_ms
        by_key = {c.key: c for c in group}
        with tracing.caused_by(group[0].trace):
            for key, intent in now:
                out.emit(topics.ORDER_INTENT, key,
                         self._intent(runner.spec, key, intent, by_key[key]))
            self.intents += len(now)
            for candle in group:
                self._forward(candle.key, t, out)
        if self.metrics is not None:
            self.metrics.sent(runner.spec.bot_id, [i for _, i in now], count=not self.replaying)

    def _intent(self, spec: BotSpec, key: str, intent: Intent,
                candle: _Candle) -> order_intent_pb2.OrderIntent:
        coid = intent.client_order_id
        exchange, _, symbol = key.partition(":")
        msg = order_intent_pb2.OrderIntent(
            meta=common_pb2.Meta(cause_id=candle.candle_id, event_time_ms=candle.bar.close_ms,
                                 producer=self.name),
            exchange=exchange, symbol=symbol, strategy=f"bot:{spec.bot_id}",
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
        msg.reduce_only = intent.reduce_only
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
        for runner in {id(r): r for r in self.runners.values()}.values():
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
