"""The bots host's series (docs/observability.md, "bots") agree with what it really did.

The loop is the real one without a broker: the bots host, the real risk gate (intents on, no
signals, a 700 USDT position limit so it refuses some of the grid's buys) and the real paper
executor, each output delivered in publication order to every handler reading its topic. Real
candles: BTCUSDT and ETHUSDT 1h (Binance spot), the 48 hours from 2021-07-09 16:00 UTC, a grid on
BTC (test_grid_bot's) and a DCA bot on ETH. The exported values are checked against the
messages the services published, against the grid's own state, and across a rebuild (nothing
counted again, the gauges back where they were). The example bots file shipped in deploy/ is
checked to load here too: the compose profile and the k8s component run it.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from meridian.v1 import (
    fill_pb2,
    order_approved_pb2,
    order_intent_pb2,
    risk_decision_pb2,
)
from meridian_common import config, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_common.sizing import MarketRules
from meridian_common.strategy.dca import DcaParams
from meridian_common.strategy.grid import GridBot, GridParams
from meridian_common.strategy.intents import BUY
from meridian_common.testing import Wired, bound_registry, exported
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings
from meridian_signals.bots import spec
from meridian_signals.bots.handler import BotsHandler, intent_id
from meridian_signals.bots.spec import BotSpec

H = 3_600_000
T0 = 1_625_846_400_000  # 2021-07-09 16:00 UTC
HOURS = 48
END = T0 + HOURS * H  # the last candle's close
BTC, ETH = "binance:BTCUSDT", "binance:ETHUSDT"
RULES = MarketRules(tick=Decimal("0.01"), lot=Decimal("0.00001"), min_notional=Decimal(5))
EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "bots" / "bots.example.toml"
Item = tuple[str, str, Message]


def grid() -> BotSpec:
    """test_grid_bot's grid: 33000 / 33400 / 33800 / 34200, 0.01 BTC per slot."""
    return BotSpec("grid", "binance", "BTCUSDT", GridParams(
        "g1", Decimal(33000), Decimal(34200), 4, RULES, quantity=Decimal("0.01")))


def dca() -> BotSpec:
    """Small enough for the gate's limit: 100 USDT base, safety orders of 100 and 200."""
    return BotSpec("dca", "binance", "ETHUSDT", DcaParams(
        "d1", RULES, base_quote=Decimal(100), safety_quote=Decimal(100),
        deviation=Decimal("0.005"), take_profit=Decimal("0.01"), max_safety_orders=2,
        step_scale=Decimal(2), volume_scale=Decimal(2)))


SPECS = (grid(), dca())


def candles(symbol: str) -> list[Message]:
    rows = CsvCandleSource(default_data_dir(), symbol, "1h").rows(T0, END)
    return [make_candle("binance", symbol, "1h", raw, "ingest") for raw in rows]


class Loop(Wired):
    """bots -> gate -> executor -> bots, as on the bus (`testing.Wired`)."""

    def __init__(self) -> None:
        self.bots = BotsHandler(SPECS)
        self.registry = bound_registry(self.bots)
        self.gate = RiskHandler(config.load(RiskSettings, environ={
            "MERIDIAN_RISK_SIGNALS": "false", "MERIDIAN_RISK_INTENTS": "true",
            "MERIDIAN_RISK_REQUIRE_STOP_LOSS": "false", "MERIDIAN_RISK_MIN_ORDER_NOTIONAL": "5",
            "MERIDIAN_RISK_MAX_POSITION_NOTIONAL": "700"}))
        self.executor = ExecutionHandler(config.load(ExecutionSettings, environ={
            "MERIDIAN_EXECUTION_SLIPPAGE_BPS": "0"}))
        super().__init__(self.bots, self.gate, self.executor)

    @property
    def bots_inputs(self) -> list[Inbound]:
        return self.received[self.bots.name]


@pytest.fixture(scope="module")
def loop() -> Loop:
    """The 48 hours, one hour at a time (BTC then ETH), the loop settled before the next."""
    run = Loop()
    for btc, eth in zip(candles("BTCUSDT"), candles("ETHUSDT"), strict=True):
        run.feed([(topics.CANDLE, BTC, btc), (topics.CANDLE, ETH, eth)])
    return run


def values(registry: CollectorRegistry, bot: str) -> dict[str, float]:
    """Every series of one bot, by a short name."""
    return {
        "place": exported(registry, "meridian_bots_intents_total", bot=bot, action="place"),
        "cancel": exported(registry, "meridian_bots_intents_total", bot=bot, action="cancel"),
        "refused": exported(registry, "meridian_bots_orders_refused_total", bot=bot),
        "buy": exported(registry, "meridian_bots_fills_total", bot=bot, side="buy"),
        "sell": exported(registry, "meridian_bots_fills_total", bot=bot, side="sell"),
        "open": exported(registry, "meridian_bots_open_orders", bot=bot),
        "position": exported(registry, "meridian_bots_position_base", bot=bot),
    }


def published(loop: Loop, bot: str) -> dict[str, float]:
    """The same, worked out from the messages the three services published.

    What the bot has been told: every fill (the executor stamps a candle's fills at its open,
    and the host tells them before that candle) and every refusal decided before the last
    close (one decided at the last close waits for the next candle, as the module docstring of
    the handler says). Open orders: placed, minus cancelled, refused or filled, in publication
    order (a refused DCA base order is asked for again under the same id)."""
    prefix = bot + "-"
    intents: list[order_intent_pb2.OrderIntent] = [
        m for m in loop.of(topics.ORDER_INTENT) if m.strategy == f"bot:{bot}"]  # type: ignore[attr-defined]
    fills: list[fill_pb2.Fill] = [
        m for m in loop.of(topics.FILL) if m.client_order_id.startswith(prefix)]  # type: ignore[attr-defined]
    actions = Counter("cancel" if i.action == order_approved_pb2.ORDER_ACTION_CANCEL else "place"
                      for i in intents)
    refusals = [d for d in loop.of(topics.RISK_DECISION)
                if isinstance(d, risk_decision_pb2.RiskDecision) and not d.approved
                and d.client_order_id.startswith(prefix)
                and d.meta.cause_id == intent_id(d.client_order_id)
                and d.meta.event_time_ms < END]
    opened: set[str] = set()
    for _, _, m in loop.published:
        if isinstance(m, order_intent_pb2.OrderIntent) and m.strategy == f"bot:{bot}":
            if m.action == order_approved_pb2.ORDER_ACTION_CANCEL:
                opened.discard(m.client_order_id)
            else:
                opened.add(m.client_order_id)
        elif (isinstance(m, risk_decision_pb2.RiskDecision) and m in refusals) or (
                isinstance(m, fill_pb2.Fill) and m in fills):
            opened.discard(m.client_order_id)
    sides = Counter("buy" if f.side == BUY else "sell" for f in fills)
    position = sum((Decimal(f.quantity) * (1 if f.side == BUY else -1) for f in fills),
                   Decimal(0))
    return {"place": actions["place"], "cancel": actions["cancel"], "refused": len(refusals),
            "buy": sides["buy"], "sell": sides["sell"], "open": len(opened),
            "position": float(position)}


def test_every_bot_and_label_exists_at_zero_when_bound() -> None:
    registry = bound_registry(BotsHandler(SPECS))
    for bot in ("g1", "d1"):
        assert values(registry, bot) == dict.fromkeys(
            ("place", "cancel", "refused", "buy", "sell", "open", "position"), 0)
    assert exported(registry, "meridian_bots_configured", kind="grid") == 1
    assert exported(registry, "meridian_bots_configured", kind="dca") == 1
    assert registry.get_sample_value("meridian_bots_open_orders", {"bot": "other"}) is None


def test_exported_values_are_what_the_services_published(loop: Loop) -> None:
    for bot in ("g1", "d1"):
        assert values(loop.registry, bot) == published(loop, bot), bot
    grid_values = values(loop.registry, "g1")
    # the window trades both ways, and the gate's limit refused some of the grid's buys
    assert grid_values["buy"] > 0
    assert grid_values["sell"] > 0
    assert grid_values["refused"] > 0
    assert values(loop.registry, "d1")["cancel"] > 0  # take-profits replaced after safety fills
    # the grid's own view of its resting orders (the slots' orders and the start buy)
    bot = loop.bots.runners[BTC].bot.bot  # type: ignore[attr-defined]
    assert isinstance(bot, GridBot)
    assert grid_values["open"] == len(bot.orders) + (bot.init_order is not None) > 0


def test_a_rebuild_counts_nothing_again_and_restores_the_gauges(loop: Loop) -> None:
    """The host's rebuild: reset_state, then every input again with `replaying` set. The
    counters keep their values; the gauges go to 0 with the state and come back with it. A
    fresh host (a restart) gets the gauges right and counts nothing while it rebuilds."""
    before = {bot: values(loop.registry, bot) for bot in ("g1", "d1")}
    rebuilt = BotsHandler(SPECS)
    restarted = bound_registry(rebuilt)
    for handler in (loop.bots, rebuilt):
        handler.reset_state()
        if handler is loop.bots:
            assert {values(loop.registry, b)["open"] for b in before} == {0}
            assert {values(loop.registry, b)["position"] for b in before} == {0}
        handler.replaying = True
        out = Outbox(handler.name)
        for msg in loop.bots_inputs:
            handler.handle(msg, out)
        handler.replaying = False
    counters = ("place", "cancel", "refused", "buy", "sell")
    for bot, was in before.items():
        assert values(loop.registry, bot) == was, bot
        now = values(restarted, bot)
        assert {k: now[k] for k in counters} == dict.fromkeys(counters, 0), bot
        assert (now["open"], now["position"]) == (was["open"], was["position"]), bot


def test_the_example_bots_file_loads() -> None:
    """deploy/bots/bots.example.toml (mounted by docker compose's "bots" profile; the k8s
    component's ConfigMap holds the same text): a grid on BTCUSDT and a DCA bot on ETHUSDT."""
    specs = spec.load(EXAMPLE)
    assert [(s.kind, s.key) for s in specs] == [("grid", BTC), ("dca", ETH)]
    registry = bound_registry(BotsHandler(specs))
    for s in specs:
        assert exported(registry, "meridian_bots_open_orders", bot=s.bot_id) == 0
