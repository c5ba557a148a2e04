"""Bots host: the grid and DCA bots run through the loop bots -> gate -> executor -> bots.

The loop is closed in the test, without a broker: the real paper executor
(`meridian_execution.handler.ExecutionHandler`, maker 0.05 %, taker 0.1 %, no slippage) and a
stand-in for the risk gate that decides every intent 1:1 (`Gate`: it approves each one, or
refuses the ids it is told to, and forwards the intent Watermarks as decision and order
Watermarks, as the contract says the real gate does). Every output goes to the handlers that
read its topic, in publication order.

Real data: BTCUSDT 1h (Binance spot), the 48 hours from 2021-07-09 16:00 UTC, with the grid
and DCA bots of libs/common/tests/test_grid_bot.py and test_dca_bot.py, whose fills there are
checked by hand: the loop must give the bots the same fills as `BotSimulation`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from google.protobuf.message import Message

from meridian.v1 import (
    candle_pb2,
    common_pb2,
    fill_pb2,
    order_approved_pb2,
    order_intent_pb2,
    risk_decision_pb2,
)
from meridian_common import config, topics
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.marketdata import CsvCandleSource, RawCandle, default_data_dir, make_candle
from meridian_common.sizing import MarketRules
from meridian_common.strategy.bot_sim import BotSimulation, SimResult
from meridian_common.strategy.dca import DcaBot, DcaParams
from meridian_common.strategy.exposure import Refusal
from meridian_common.strategy.grid import GridBot, GridParams
from meridian_common.strategy.intents import BUY, SELL, Bar, BotFill, PlaceOrder
from meridian_common.testing import Wired
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_signals.bots.handler import BotsHandler
from meridian_signals.bots.spec import BotSpec

H = 3_600_000
T0 = 1_625_846_400_000  # 2021-07-09 16:00 UTC
KEY = "binance:BTCUSDT"
OTHER = "binance:ETHUSDT"
MODEL = PaperFillModel(FeeSchedule(maker=Decimal("0.0005"), taker=Decimal("0.001")))
GRID_RULES = MarketRules(tick=Decimal("0.01"), lot=Decimal("0.00001"), min_notional=Decimal(5))
DCA_RULES = MarketRules(tick=Decimal("0.01"), lot=Decimal("0.00001"))
Item = tuple[str, str, Message]


def raws(start_ms: int, hours: int) -> list[RawCandle]:
    return list(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h")
                .rows(start_ms, start_ms + hours * H))


def candles(rows: Iterable[RawCandle], symbol: str = "BTCUSDT") -> list[candle_pb2.Candle]:
    return [make_candle("binance", symbol, "1h", raw, "ingest") for raw in rows]


def grid_spec(bot_id: str = "g1", start_ms: int = 0) -> BotSpec:
    """test_grid_bot's grid: 33000 / 33400 / 33800 / 34200, 0.01 BTC per slot."""
    params = GridParams(bot_id, Decimal(33000), Decimal(34200), 4, GRID_RULES,
                        quantity=Decimal("0.01"))
    return BotSpec("grid", "binance", "BTCUSDT", params, start_ms)


def dca_spec(max_cycles: int = 3) -> BotSpec:
    """test_dca_bot's DCA bot: base and safety 1000 USDT, 0.5 % step x2, volume x2, TP 1 %."""
    params = DcaParams("d1", DCA_RULES, base_quote=Decimal(1000), safety_quote=Decimal(1000),
                       deviation=Decimal("0.005"), take_profit=Decimal("0.01"),
                       max_safety_orders=2, step_scale=Decimal(2), volume_scale=Decimal(2),
                       max_cycles=max_cycles)
    return BotSpec("dca", "binance", "BTCUSDT", params)


def executor() -> ExecutionHandler:
    return ExecutionHandler(config.load(ExecutionSettings, environ={
        "MERIDIAN_EXECUTION_MAKER_FEE": "0.0005", "MERIDIAN_EXECUTION_TAKER_FEE": "0.001",
        "MERIDIAN_EXECUTION_SLIPPAGE_BPS": "0"}))


@dataclass
class RefuseOnce:
    """Refuses the listed client ids the first time they are asked for. The same object
    stands in for the gate's rules in the loop and for `ExposureLimits` in `BotSimulation`."""

    ids: dict[str, Refusal]
    refused: list[str] = field(default_factory=list)

    def check(self, order: PlaceOrder, *_: object) -> Refusal | None:
        refusal = self.ids.pop(order.client_order_id, None)
        if refusal is not None:
            self.refused.append(order.client_order_id)
        return refusal


class Gate:
    """Stand-in for the risk gate (the real one is tested with it): each intent decided on
    arrival, 1:1, with the contract's ids; intent Watermarks forwarded as decision and order
    Watermarks."""

    name = "gate"
    inputs = (topics.ORDER_INTENT,)

    def __init__(self, refuse: RefuseOnce | None = None) -> None:
        self.refuse = refuse or RefuseOnce({})

    def handle(self, msg: Inbound, out: Outbox) -> None:
        if msg.is_watermark:
            out.watermark(topics.RISK_DECISION, msg.key, msg.event_time_ms)
            out.watermark(topics.ORDER_APPROVED, msg.key, msg.event_time_ms)
            return
        intent: order_intent_pb2.OrderIntent = msg.message  # type: ignore[assignment]
        t, coid = intent.meta.event_time_ms, intent.client_order_id
        meta = common_pb2.Meta(id="dec:" + intent.meta.id, cause_id=intent.meta.id,
                               event_time_ms=t, producer="risk")
        cancel = intent.action == order_approved_pb2.ORDER_ACTION_CANCEL
        refusal = None if cancel else self.refuse.check(PlaceOrder(
            coid, intent.side, Decimal(intent.quantity), None, intent.reason))
        decision = risk_decision_pb2.RiskDecision(
            meta=meta, exchange=intent.exchange, symbol=intent.symbol,
            approved=refusal is None, client_order_id=coid, side=intent.side,
            quantity=intent.quantity, reduce_only=intent.reduce_only,
            rules=[risk_decision_pb2.RuleResult(rule="system.kill_switch", passed=True)] + (
                [] if refusal is None else
                [risk_decision_pb2.RuleResult(rule=refusal.rule, passed=False,
                                              detail=refusal.detail)]))
        out.emit(topics.RISK_DECISION, msg.key, decision)
        if refusal is not None:
            return
        out.emit(topics.ORDER_APPROVED, msg.key, order_approved_pb2.ApprovedOrder(
            meta=common_pb2.Meta(id=coid + ":cancel" if cancel else coid,
                                 cause_id=decision.meta.id, event_time_ms=t, producer="risk"),
            client_order_id=coid, signal_id=intent.meta.id, exchange=intent.exchange,
            symbol=intent.symbol, side=intent.side, order_type=intent.order_type,
            quantity=intent.quantity, limit_price=intent.limit_price,
            reduce_only=intent.reduce_only, strategy=intent.strategy, action=intent.action))


class Loop(Wired):
    """bots, gate and executor wired as on the bus (`testing.Wired`)."""

    def __init__(self, specs: list[BotSpec], refuse: RefuseOnce | None = None) -> None:
        self.bots = BotsHandler(specs)
        self.gate = Gate(refuse)
        self.executor = executor()
        super().__init__(self.bots, self.gate, self.executor)  # type: ignore[arg-type]

    @property
    def bots_inputs(self) -> list[Inbound]:
        return self.received[self.bots.name]

    def of(self, topic: str, key: str | None = KEY) -> list[Message]:
        return super().of(topic, key)

    def watermarks(self, topic: str, key: str = KEY) -> list[int]:
        return super().watermarks(topic, key)

    def bot_fills(self) -> list[BotFill]:
        fills: list[fill_pb2.Fill] = self.of(topics.FILL)  # type: ignore[assignment]
        return [BotFill(f.client_order_id, f.side, Decimal(f.quantity), Decimal(f.price),
                        Decimal(f.fee), f.liquidity, f.meta.event_time_ms) for f in fills]

    def placed(self) -> list[PlaceOrder]:
        intents: list[order_intent_pb2.OrderIntent] = self.of(topics.ORDER_INTENT)  # type: ignore[assignment]
        return [PlaceOrder(i.client_order_id, i.side, Decimal(i.quantity),
                           Decimal(i.limit_price) if i.limit_price else None, i.reason)
                for i in intents if i.action == order_approved_pb2.ORDER_ACTION_PLACE]


def run_stepwise(spec: BotSpec, rows: list[RawCandle],
                 refuse: RefuseOnce | None = None) -> Loop:
    """One candle at a time, the loop settled before the next (as live)."""
    loop = Loop([spec], refuse)
    for c in candles(rows):
        loop.feed([(topics.CANDLE, KEY, c)])
    return loop


def simulate(spec: BotSpec, rows: list[RawCandle],
             refuse: RefuseOnce | None = None) -> tuple[SimResult, GridBot | DcaBot]:
    bot = spec.make_bot().bot  # type: ignore[attr-defined]
    sim = BotSimulation(bot, MODEL, refuse)  # type: ignore[arg-type]
    return sim.run(Bar.from_raw(raw, H) for raw in rows), bot


def accepted(placed: list[PlaceOrder], refused: list[str]) -> list[PlaceOrder]:
    """The loop's placements without the ones the gate refused (the simulation lists only
    what went out)."""
    out, refused = [], list(refused)
    for p in placed:
        if p.client_order_id in refused:
            refused.remove(p.client_order_id)
        else:
            out.append(p)
    return out


# --------------------------------------------------------------------------- equality with bot_sim


def test_grid_through_the_loop_fills_as_the_simulation() -> None:
    """The 9 fills of test_replay_48h_fills_round_trips_and_cash (start market buy at c1's
    open, then maker fills at 33400 / 33800 / 34200), same ids, prices, fees and times."""
    rows = raws(T0, 48)
    loop = run_stepwise(grid_spec(), rows)
    expected, sim_bot = simulate(grid_spec(), rows)
    assert len(expected.fills) == 9
    assert loop.bot_fills() == expected.fills
    assert loop.placed() == expected.placed
    host_bot = loop.bots.runners[KEY].bot.bot  # type: ignore[attr-defined]
    assert isinstance(host_bot, GridBot)
    assert host_bot.round_trips == sim_bot.round_trips  # type: ignore[union-attr]
    assert [r.profit for r in host_bot.round_trips] == [Decimal("3.664")] * 3


def test_dca_through_the_loop_fills_as_the_simulation() -> None:
    """Three cycles of test_dca_bot (take-profits replaced after safety fills, safety orders
    cancelled at the take-profit): every cancel goes through the gate to the executor."""
    rows = raws(T0, 48)
    loop = run_stepwise(dca_spec(), rows)
    expected, sim_bot = simulate(dca_spec(), rows)
    assert [f.client_order_id for f in expected.fills][:3] == ["d1-1-b", "d1-1-s1", "d1-1-tp2"]
    assert loop.bot_fills() == expected.fills
    assert loop.placed() == expected.placed
    host_bot = loop.bots.runners[KEY].bot.bot  # type: ignore[attr-defined]
    assert isinstance(host_bot, DcaBot)
    assert host_bot.cycles == sim_bot.cycles  # type: ignore[union-attr]
    cancels = [i.client_order_id for i in loop.of(topics.ORDER_INTENT)  # type: ignore[attr-defined]
               if i.action == order_approved_pb2.ORDER_ACTION_CANCEL]
    assert cancels[:2] == ["d1-1-tp1", "d1-1-s2"]  # c2's safety fill, c5's take-profit


def test_intents_carry_the_contract_fields() -> None:
    rows = raws(T0, 3)
    loop = run_stepwise(grid_spec(), rows)
    first: list[order_intent_pb2.OrderIntent] = loop.of(topics.ORDER_INTENT)  # type: ignore[assignment]
    init, buy = first[0], first[1]
    # decided on c0's close 33527.25: the start market buy of the slot above, then the buys
    assert (init.client_order_id, init.order_type, init.limit_price, init.side) == (
        "g1-init-1", order_approved_pb2.ORDER_TYPE_MARKET, "", BUY)
    assert init.meta.id == "intent:g1-init-1"
    assert init.meta.event_time_ms == T0 + H
    assert init.meta.cause_id == f"binance:BTCUSDT:1h:{T0}:r0"
    assert (init.strategy, init.reason, init.reduce_only) == ("bot:g1", "grid-init", False)
    assert (buy.client_order_id, buy.order_type, buy.limit_price, buy.quantity) == (
        "g1-1-2", order_approved_pb2.ORDER_TYPE_LIMIT, "33400", "0.01")
    # the sell of the start inventory goes out at c1's close, after the start buy's fill
    sell = next(i for i in first if i.side == SELL)
    assert (sell.client_order_id, sell.reduce_only, sell.meta.event_time_ms,
            sell.limit_price) == ("g1-3-4", True, T0 + 2 * H, "34200")
    # one Watermark per candle close, after its intents; the first at the first candle's open
    assert loop.watermarks(topics.ORDER_INTENT) == [T0, T0 + H, T0 + 2 * H, T0 + 3 * H]


def test_candles_all_read_first_give_the_same_intents() -> None:
    """Every candle of the window reaches the bots host and the executor before anything else
    (a partition read far ahead): the host holds them at their opens until the fills and
    decisions catch up, and the bot hears exactly what it heard one candle at a time."""
    rows = raws(T0, 48)
    stepwise = run_stepwise(dca_spec(), rows)
    ahead = Loop([dca_spec()])
    ahead.feed((topics.CANDLE, KEY, c) for c in candles(rows))
    assert ahead.of(topics.ORDER_INTENT) == stepwise.of(topics.ORDER_INTENT)
    assert ahead.bot_fills() == stepwise.bot_fills()


def test_cancel_answered_to_a_fill_acts_at_the_close_as_in_the_simulation() -> None:
    """test_dca_bot's test_low_before_high_inside_a_candle through the loop: a candle crosses
    safety 1 (99.5) and the take-profit (101) that its fill replaces. The cancel acts at the
    close on both sides, so the old take-profit fills too (a partial exit for the bot) and the
    rest goes at tp3 on the next candle."""
    params = DcaParams("p", DCA_RULES, base_quote=Decimal(1000), safety_quote=Decimal(1000),
                       deviation=Decimal("0.005"), take_profit=Decimal("0.01"),
                       max_safety_orders=2, step_scale=Decimal(2), volume_scale=Decimal(2))
    spec = BotSpec("dca", "binance", "BTCUSDT", params)
    rows = [RawCandle(T0, "100", "100", "100", "100", "1"),
            RawCandle(T0 + H, "100", "100", "100", "100", "1"),
            RawCandle(T0 + 2 * H, "100", "102", "99", "100", "1"),
            RawCandle(T0 + 3 * H, "100", "100.8", "100", "100", "1")]
    expected, sim_bot = simulate(spec, rows)
    assert [f.client_order_id for f in expected.fills] == ["p-1-b", "p-1-s1", "p-1-tp1",
                                                           "p-1-tp3"]
    loop = run_stepwise(spec, rows)
    assert loop.bot_fills() == expected.fills
    assert loop.placed() == expected.placed
    assert loop_bot(loop).cycles == sim_bot.cycles  # type: ignore[attr-defined]


def test_safety_and_old_take_profit_on_one_real_candle_as_in_the_simulation() -> None:
    """test_dca_bot's real candle (2020-08-01 19:00 UTC) that fills safety 1 at the open and
    the replaced tp1 on its high, and the hours after it: same fills, orders and cycles."""
    start = 1_596_301_200_000
    rows = raws(start, 72)
    expected, sim_bot = simulate(dca_spec(max_cycles=10), rows)
    assert [f.client_order_id for f in expected.fills][:4] == ["d1-1-b", "d1-1-s1",
                                                               "d1-1-tp1", "d1-1-tp3"]
    loop = run_stepwise(dca_spec(max_cycles=10), rows)
    assert loop.bot_fills() == expected.fills
    assert loop.placed() == expected.placed
    assert loop_bot(loop).cycles == sim_bot.cycles  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- rejections


def test_refused_grid_buy_is_retried_after_the_next_fill_as_in_the_simulation() -> None:
    """The gate refuses the 33000 buy (g1-0-3) decided on c0's close. The refusal reaches the
    bot (on_rejected) before c1's fill of the start buy; that fill clears the slot's refused
    flag and c1's close places it again under a new id. Same fills as the simulation with the
    same refusal."""
    rows = raws(T0, 48)
    refusal = {"g1-0-3": Refusal("position.max_position", "worst-case position 0.03 > 0.02")}
    loop_refuse = RefuseOnce(dict(refusal))
    loop = run_stepwise(grid_spec(), rows, loop_refuse)
    sim_refuse = RefuseOnce(dict(refusal))
    expected, _ = simulate(grid_spec(), rows, sim_refuse)
    assert loop_refuse.refused == sim_refuse.refused == ["g1-0-3"]
    assert loop.bot_fills() == expected.fills
    assert accepted(loop.placed(), loop_refuse.refused) == expected.placed
    at_c1 = [i.client_order_id for i in loop.of(topics.ORDER_INTENT)  # type: ignore[attr-defined]
             if i.meta.event_time_ms == T0 + 2 * H]
    assert any(c.startswith("g1-0-") for c in at_c1)  # the refused slot, placed again


def test_refused_dca_base_is_retried_on_the_next_candle() -> None:
    """The first base order (d1-1-b on c0's close) is refused: the bot goes back to idle and
    buys again on c1's close under the same id, which then fills at c2's open."""
    rows = raws(T0, 48)
    refusal = {"d1-1-b": Refusal("system.kill_switch", "engaged")}
    loop_refuse = RefuseOnce(dict(refusal))
    loop = run_stepwise(dca_spec(), rows, loop_refuse)
    expected, _ = simulate(dca_spec(), rows, RefuseOnce(dict(refusal)))
    bases = [(i.client_order_id, i.meta.event_time_ms)
             for i in loop.of(topics.ORDER_INTENT)  # type: ignore[attr-defined]
             if i.reason == "dca-base"][:2]
    assert bases == [("d1-1-b", T0 + H), ("d1-1-b", T0 + 2 * H)]
    assert loop.bot_fills()[0].client_order_id == "d1-1-b"
    assert loop.bot_fills()[0].time_ms == T0 + 2 * H
    assert loop.bot_fills() == expected.fills


def test_rejection_reaches_the_bot_with_the_failing_rule() -> None:
    """Hand-fed: the gate refuses the 33000 buy, no fill follows; the slot stays refused and
    c1's close does not place it again (it waits for a fill)."""
    handler = BotsHandler([grid_spec()])
    c0, c1 = candles(raws(T0, 2))
    out = Outbox("bots")

    def feed(topic: str, message: Message) -> None:
        handler.handle(Inbound(topic, KEY, message), out)

    seen: list[tuple[str, str]] = []
    bot = handler.runners[KEY].bot.bot  # type: ignore[attr-defined]
    assert isinstance(bot, GridBot)
    handler.runners[KEY].bot.bot = _Spy(bot, seen)  # type: ignore[attr-defined]
    feed(topics.CANDLE, c0)
    assert [(t, m) for t, _, m in out.items] == [(topics.ORDER_INTENT, wm(T0, producer="bots"))]
    feed(topics.FILL, wm(T0))
    feed(topics.RISK_DECISION, wm(T0))
    assert [i.client_order_id for _, _, i in out.drain() if not _is_wm(i)] == [
        "g1-init-1", "g1-1-2", "g1-0-3"]
    rules = [risk_decision_pb2.RuleResult(rule="system.kill_switch", passed=True),
             risk_decision_pb2.RuleResult(rule="position.max_position", passed=False,
                                          detail="0.03 > 0.02"),
             risk_decision_pb2.RuleResult(rule="position.max_notional", passed=False)]
    feed(topics.RISK_DECISION, risk_decision_pb2.RiskDecision(
        meta=common_pb2.Meta(id="dec:intent:g1-0-3", cause_id="intent:g1-0-3",
                             event_time_ms=T0 + H), approved=False,
        client_order_id="g1-0-3", rules=rules))
    feed(topics.CANDLE, c1)
    assert seen == []  # held: fills and decisions have not reached c1's open
    feed(topics.FILL, wm(T0 + H))
    assert seen == []
    feed(topics.RISK_DECISION, wm(T0 + H))
    assert seen == [("g1-0-3", "position.max_position: 0.03 > 0.02")]
    assert bot.slots[0].refused
    assert [i.client_order_id for _, _, i in out.drain() if not _is_wm(i)] == []


@dataclass
class _Spy:
    """A bot that records the rejections it is told, then lets the real bot handle them."""

    bot: GridBot
    seen: list[tuple[str, str]]

    @property
    def bot_id(self) -> str:
        return self.bot.bot_id

    def on_candle(self, bar: Bar) -> list:  # type: ignore[type-arg]
        return self.bot.on_candle(bar)

    def on_fill(self, fill: BotFill) -> list:  # type: ignore[type-arg]
        return self.bot.on_fill(fill)

    def on_rejected(self, coid: str, reason: str) -> list:  # type: ignore[type-arg]
        self.seen.append((coid, reason))
        return self.bot.on_rejected(coid, reason)


def _is_wm(m: Message) -> bool:
    return isinstance(m, common_pb2.Watermark)


def wm(t: int, key: str = KEY, producer: str = "test") -> common_pb2.Watermark:
    return common_pb2.Watermark(key=key, event_time_ms=t, producer=producer)


def test_a_refused_cancel_is_not_told_to_the_bot() -> None:
    """A refused cancel leaves the order open: the bot has nothing to forget. Approved
    decisions and other strategies' decisions are not told either."""
    handler = BotsHandler([grid_spec()])
    seen: list[tuple[str, str]] = []
    bot = handler.runners[KEY].bot.bot  # type: ignore[attr-defined]
    assert isinstance(bot, GridBot)
    handler.runners[KEY].bot.bot = _Spy(bot, seen)  # type: ignore[attr-defined]
    out = Outbox("bots")
    c0, c1 = candles(raws(T0, 2))
    for topic, message in [(topics.CANDLE, c0), (topics.FILL, wm(T0)),
                           (topics.RISK_DECISION, wm(T0))]:
        handler.handle(Inbound(topic, KEY, message), out)
    refused = [risk_decision_pb2.RuleResult(rule="system.kill_switch", passed=False)]
    for coid, cause, approved in [("g1-1-2", "intent:g1-1-2:cancel", False),
                                  ("g1-0-3", "intent:g1-0-3", True),
                                  ("mrd-0123", "sig:1", False)]:
        handler.handle(Inbound(topics.RISK_DECISION, KEY, risk_decision_pb2.RiskDecision(
            meta=common_pb2.Meta(id="dec:" + cause, cause_id=cause, event_time_ms=T0 + H),
            approved=approved, client_order_id=coid, rules=refused)), out)
    for topic, message in [(topics.CANDLE, c1), (topics.FILL, wm(T0 + H)),
                           (topics.RISK_DECISION, wm(T0 + H))]:
        handler.handle(Inbound(topic, KEY, message), out)
    assert seen == []
    assert bot.orders == {"g1-1-2": 1, "g1-0-3": 0}  # both still resting for the bot
    assert handler.runners[KEY].last_open[KEY] == T0 + H


# --------------------------------------------------------------------------- watermarks, timing


def test_key_without_a_bot_gets_an_intent_watermark_per_candle_at_once() -> None:
    """ETHUSDT has no bot: each candle's close is forwarded on arrival (the gate waits for
    order.intent.v1 on every symbol), nothing is held, fills and decisions there are ignored."""
    handler = BotsHandler([grid_spec()])
    out = Outbox("bots")
    eth = candles(raws(T0, 3), symbol="ETHUSDT")
    handler.handle(Inbound(topics.CANDLE, OTHER, wm(T0, OTHER)), out)
    for c in eth:
        handler.handle(Inbound(topics.CANDLE, OTHER, c), out)
    handler.handle(Inbound(topics.CANDLE, OTHER, eth[1]), out)  # read again: nothing new
    handler.handle(Inbound(topics.FILL, OTHER, fill_pb2.Fill(
        meta=common_pb2.Meta(id="g1-1-2:f1", event_time_ms=T0 + H), client_order_id="g1-1-2",
        side=BUY, quantity="x", price="1", fee="0")), out)
    handler.handle(Inbound(topics.RISK_DECISION, OTHER, wm(T0 + 9 * H, OTHER)), out)
    assert out.items == [(topics.ORDER_INTENT, OTHER, wm(t, OTHER, "bots"))
                         for t in (T0, T0 + H, T0 + 2 * H, T0 + 3 * H)]
    assert OTHER not in handler.runners
    assert handler.retained() == {}


def test_bot_before_its_start_is_a_key_without_a_bot() -> None:
    """start = c5's open: candles 0..4 only forward their closes; the grid starts on c5's close
    and trades exactly as the simulation started there."""
    rows = raws(T0, 48)
    start = T0 + 5 * H
    loop = run_stepwise(grid_spec(start_ms=start), rows)
    expected, _ = simulate(grid_spec(), rows[5:])
    intents: list[order_intent_pb2.OrderIntent] = loop.of(topics.ORDER_INTENT)  # type: ignore[assignment]
    assert min(i.meta.event_time_ms for i in intents) == start + H
    assert loop.bot_fills() == expected.fills
    assert expected.fills
    assert loop.watermarks(topics.ORDER_INTENT)[:6] == [T0 + k * H for k in range(1, 7)]


def test_a_fill_alone_does_not_release_its_candle() -> None:
    """A candle can have several fills, all at its open: the candle waits for the executor's
    fill Watermark at that open, not for the first fill."""
    handler = BotsHandler([grid_spec()])
    out = Outbox("bots")
    c0, c1 = candles(raws(T0, 2))

    def feed(topic: str, message: Message) -> list[str]:
        handler.handle(Inbound(topic, KEY, message), out)
        return [m.client_order_id for _, _, m in out.drain() if not _is_wm(m)]  # type: ignore[attr-defined]

    feed(topics.CANDLE, c0)
    feed(topics.FILL, wm(T0))
    assert feed(topics.RISK_DECISION, wm(T0)) == ["g1-init-1", "g1-1-2", "g1-0-3"]
    feed(topics.RISK_DECISION, wm(T0 + H))
    assert feed(topics.CANDLE, c1) == []
    init = fill_pb2.Fill(meta=common_pb2.Meta(id="g1-init-1:f1", event_time_ms=T0 + H),
                         client_order_id="g1-init-1", side=BUY, quantity="0.01",
                         price="33527.24", fee="0.3352724", liquidity=2)
    assert feed(topics.FILL, init) == []  # another fill at this open may follow
    assert feed(topics.FILL, wm(T0 + H)) == ["g1-3-4"]  # the start inventory's sell


def test_duplicate_candles_are_ignored_and_held_candles_are_retained() -> None:
    handler = BotsHandler([grid_spec()])
    out = Outbox("bots")
    c0, c1 = candles(raws(T0, 2))
    handler.handle(Inbound(topics.CANDLE, KEY, c0, (topics.CANDLE, 2, 7)), out)
    handler.handle(Inbound(topics.CANDLE, KEY, c0, (topics.CANDLE, 2, 8)), out)
    assert handler.retained() == {(topics.CANDLE, 2): 7}
    assert handler.runners[KEY].held_candles[KEY] == 1
    handler.handle(Inbound(topics.FILL, KEY, wm(T0)), out)
    handler.handle(Inbound(topics.RISK_DECISION, KEY, wm(T0)), out)
    assert handler.retained() == {}
    handler.handle(Inbound(topics.CANDLE, KEY, c1, (topics.CANDLE, 2, 9)), out)
    handler.handle(Inbound(topics.CANDLE, KEY, c0, (topics.CANDLE, 2, 10)), out)
    assert handler.retained() == {(topics.CANDLE, 2): 9}
    assert handler.runners[KEY].held_candles[KEY] == 1


def test_malformed_numbers_are_invalid_messages_naming_the_field() -> None:
    handler = BotsHandler([grid_spec()])
    out = Outbox("bots")
    (c0,) = candles(raws(T0, 1))
    bad = candle_pb2.Candle()
    bad.CopyFrom(c0)
    bad.close = "33527,25"
    with pytest.raises(InvalidMessage, match=r"Candle\.close"):
        handler.handle(Inbound(topics.CANDLE, KEY, bad), out)
    fill = fill_pb2.Fill(meta=common_pb2.Meta(id="f", event_time_ms=T0),
                         client_order_id="g1-1-2", side=BUY, quantity="0.01", price="",
                         fee="0")
    with pytest.raises(InvalidMessage, match=r"Fill\.price"):
        handler.handle(Inbound(topics.FILL, KEY, fill), out)
    fill.client_order_id = "mrd-0123"  # not this bot's: not read
    handler.handle(Inbound(topics.FILL, KEY, fill), out)
    assert out.items == []


# --------------------------------------------------------------------------- determinism, restart


def _bots_outputs(handler: BotsHandler, inputs: Iterable[Inbound]) -> list[Item]:
    out = Outbox("bots")
    for msg in inputs:
        handler.handle(msg, out)
    return out.items


def test_restart_rebuilds_the_same_state_and_outputs() -> None:
    """The host rebuilds from the inputs: reset_state and a replay of every input the bots
    host read gives the same outputs, bytes and order, and the same bot."""
    rows = raws(T0, 48)
    spec = dca_spec(max_cycles=10)  # still trading in the second half of the window
    loop = run_stepwise(spec, rows)
    live = [(t, k, m) for t, k, m in loop.published if t == topics.ORDER_INTENT]
    handler = loop.bots
    handler.reset_state()
    assert handler.runners[KEY].last_open.get(KEY, -1) == -1
    assert handler.forwarded == {}
    assert _bots_outputs(handler, loop.bots_inputs) == live
    assert handler.runners[KEY].bot.bot == loop_bot(run_stepwise(spec, rows))
    # a rebalance half-way: the state is reset, the inputs up to the committed offset are
    # replayed (outputs discarded), and the rest is published as it was the first time
    inputs = loop.bots_inputs
    half = len(inputs) // 2
    first = BotsHandler([spec])
    _bots_outputs(first, inputs[:half])
    tail = _bots_outputs(first, inputs[half:])
    assert tail == live[-len(tail):]
    assert any(not _is_wm(m) for _, _, m in tail)
    restarted = BotsHandler([spec])
    _bots_outputs(restarted, inputs[:half // 3])  # some state before the rebalance
    restarted.reset_state()
    _bots_outputs(restarted, inputs[:half])
    assert _bots_outputs(restarted, inputs[half:]) == tail


def loop_bot(loop: Loop) -> object:
    return loop.bots.runners[KEY].bot.bot  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_interleaving_of_the_inputs_gives_the_same_intents(seed: int) -> None:
    """The three topics read in any interleaving (each in its own order, as partitions are):
    the bot hears the same sequence and asks for the same orders."""
    import random

    rows = raws(T0, 48)
    loop = run_stepwise(grid_spec(), rows)
    live = [m for t, _, m in loop.published if t == topics.ORDER_INTENT and not _is_wm(m)]
    streams = {topic: deque(m for m in loop.bots_inputs if m.topic == topic)
               for topic in BotsHandler.inputs}
    rng = random.Random(seed)
    mixed: list[Inbound] = []
    while any(streams.values()):
        topic = rng.choice([t for t, q in streams.items() if q])
        mixed.append(streams[topic].popleft())
    assert mixed != loop.bots_inputs
    out = _bots_outputs(BotsHandler([grid_spec()]), mixed)
    assert [m for _, _, m in out if not _is_wm(m)] == live


def test_two_bots_on_one_key_are_refused() -> None:
    with pytest.raises(ValueError, match="one bot per exchange:symbol"):
        BotsHandler([grid_spec("g1"), grid_spec("g2")])

