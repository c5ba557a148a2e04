"""The bots host with a two-key bot (the funding-arb pair): funding is an input told before the
candles that open at or after it, the candles of one open reach the bot together, answers go
out on the key they name, and nothing is ever published behind a key's intent Watermark,
whatever order the streams arrive in.

Real data: BTCUSDT 1h (Binance spot) from 2022-02-28 20:00 UTC for both legs (the replay's
perpetual copy is the same candles), with the stored settlements 02-28 16:00 (-0.00005386, before
the first candle: warm-up) and 03-01 00:00 (0.0001 >= the entry rate).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal

import pytest
from google.protobuf.message import Message

from meridian.v1 import common_pb2, order_approved_pb2, order_intent_pb2
from meridian_common import topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_common.marketdata.funding import make_funding
from meridian_common.sizing import MarketRules
from meridian_common.strategy.funding_arb import FundingArbParams
from meridian_common.strategy.funding_arb_bot import FundingArbBotParams
from meridian_common.strategy.intents import BUY, SELL, Bar, BotFill, PlaceOrder, Routed, Settlement
from meridian_signals.bots.handler import BotsHandler
from meridian_signals.bots.spec import BotSpec

H = 3_600_000
T0 = 1_646_078_400_000  # 2022-02-28 20:00 UTC
SETTLED = T0 + 4 * H  # 2022-03-01 00:00 UTC
SPOT, PERP = "binance:BTCUSDT", "binance-linear:BTCUSDT"
RULES = MarketRules(tick=Decimal("0.01"), lot=Decimal("0.00001"), min_notional=Decimal(5))
Stream = list[tuple[str, str, Message]]


def pair_spec() -> BotSpec:
    params = FundingArbBotParams(FundingArbParams(entry_rate=0.0001, exit_rate=0.00003),
                                 RULES, RULES, Decimal(100_000))
    return BotSpec("funding-arb", "binance", "BTCUSDT", params, bot_id="arb1")


def wm(key: str, t: int) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=key, event_time_ms=t, producer="test")


def streams(hours: int = 8) -> dict[tuple[str, str], Stream]:
    """Each input stream in its producer's order (what one partition guarantees)."""
    rows = list(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").rows(T0, T0 + hours * H))
    out: dict[tuple[str, str], Stream] = {}
    for key, exchange in ((SPOT, "binance"), (PERP, "binance-linear")):
        out[(topics.CANDLE, key)] = [(topics.CANDLE, key, make_candle(
            exchange, "BTCUSDT", "1h", raw, "ingest")) for raw in rows]
        for topic in (topics.FILL, topics.RISK_DECISION):
            out[(topic, key)] = [(topic, key, wm(key, T0 + i * H)) for i in range(hours)]
    funding: Stream = [(topics.FUNDING, PERP, make_funding(
        "binance-linear", "BTCUSDT", T0 - 4 * H, "-0.00005386", "ingest"))]
    for i in range(1, hours + 1):
        if T0 + i * H == SETTLED:
            funding.append((topics.FUNDING, PERP, make_funding(
                "binance-linear", "BTCUSDT", SETTLED, "0.0001", "ingest")))
        funding.append((topics.FUNDING, PERP, wm(PERP, T0 + i * H)))
    out[(topics.FUNDING, PERP)] = funding
    return out


def interleave(parts: dict[tuple[str, str], Stream], seed: int) -> Stream:
    """One arrival order: streams keep their own order, the rest is random."""
    rng = random.Random(seed)
    queues = {k: list(v) for k, v in parts.items()}
    out: Stream = []
    while queues:
        name = rng.choice(sorted(queues))
        out.append(queues[name].pop(0))
        if not queues[name]:
            del queues[name]
    return out


def run(handler: BotsHandler, items: Stream) -> Stream:
    out = Outbox("bots")
    for topic, key, message in items:
        handler.handle(Inbound(topic, key, message), out)
    return [(topic, key, message) for topic, key, message in out.items]


def per_key(published: Stream) -> dict[str, list[tuple[int, str]]]:
    """Each key's order.intent.v1 records in publication order, as (time, what)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for topic, key, message in published:
        assert topic == topics.ORDER_INTENT
        if isinstance(message, common_pb2.Watermark):
            out.setdefault(key, []).append((message.event_time_ms, "wm"))
        else:
            assert isinstance(message, order_intent_pb2.OrderIntent)
            what = (f"{message.client_order_id} side={message.side} q={message.quantity} "
                    f"reduce_only={message.reduce_only}")
            out.setdefault(key, []).append((message.meta.event_time_ms, what))
    return out


def test_the_pair_enters_on_both_keys_at_the_close_after_the_settlement() -> None:
    """Group 00:00-01:00 (close 43560.0) decides the 00:00 settlement: 10000 / 43560.0 ->
    0.22956 each leg, stamped 01:00, opening orders (not reduce-only)."""
    published = per_key(run(BotsHandler([pair_spec()]), interleave(streams(), seed=0)))
    orders = {key: [(t, w) for t, w in records if w != "wm"] for key, records in published.items()}
    assert orders == {
        SPOT: [(SETTLED + H, "arb1-s-1 side=1 q=0.22956 reduce_only=False")],
        PERP: [(SETTLED + H, "arb1-p-2 side=2 q=0.22956 reduce_only=False")],
    }


@pytest.mark.parametrize("seed", range(12))
def test_any_arrival_order_publishes_the_same_and_never_behind_a_watermark(seed: int) -> None:
    reference = per_key(run(BotsHandler([pair_spec()]), interleave(streams(), seed=100)))
    published = per_key(run(BotsHandler([pair_spec()]), interleave(streams(), seed=seed)))
    for key in (SPOT, PERP):
        records = [r for r in published[key] if r[1] != "wm"]
        assert records == [r for r in reference[key] if r[1] != "wm"]
        highest = -1
        for t, what in published[key]:
            if what == "wm":
                highest = max(highest, t)
            else:
                assert t > highest, f"{key}: {what} at {t} behind a Watermark at {highest}"


class _Answering:
    """A two-key bot that answers a settlement with an order on its spot key: the host must
    hold that answer until the spot key has a candle in the group."""

    bot_id = "t1"
    keys = (SPOT, PERP)
    funding_keys = (PERP,)

    def __init__(self) -> None:
        self.groups: list[tuple[str, ...]] = []

    def on_candles(self, bars: Mapping[str, Bar]) -> list[Routed]:
        self.groups.append(tuple(sorted(bars)))
        return []

    def on_fill(self, key: str, fill: BotFill) -> list[Routed]:
        return []

    def on_rejected(self, key: str, client_order_id: str, reason: str) -> list[Routed]:
        return []

    def on_funding(self, key: str, settlement: Settlement) -> list[Routed]:
        return [(SPOT, PlaceOrder(f"t1-s-{settlement.time_ms}", BUY if settlement.rate > 0
                                  else SELL, Decimal("0.001"), None, "test"))]


def test_an_answer_for_a_key_missing_from_the_group_waits_for_its_next_candle() -> None:
    """Spot has no candle at 00:00 (a gap on one leg): the 00:00 group holds the perp only, and
    the order the bot answered on the spot key goes out with the spot's next candle (01:00,
    stamped at its close 02:00), never behind the spot key's Watermark."""
    handler = BotsHandler([pair_spec()])
    bot = _Answering()
    handler.runners[SPOT].bot = bot  # type: ignore[assignment]
    parts = streams()
    parts[(topics.CANDLE, SPOT)] = [item for item in parts[(topics.CANDLE, SPOT)]
                                    if item[2].open_time_ms != SETTLED]  # type: ignore[attr-defined]
    published = run(handler, interleave(parts, seed=3))
    assert bot.groups.count((PERP,)) == 1  # the 00:00 group: perp only
    assert bot.groups.count((PERP, SPOT)) == 7
    spot = per_key(published)[SPOT]
    orders = [(t, w) for t, w in spot if w != "wm"]
    assert orders == [
        # the 02-28 16:00 answer waited for the first group (20:00, closing 21:00)
        (T0 + H, f"t1-s-{T0 - 4 * H} side=2 q=0.001 reduce_only=False"),
        (SETTLED + 2 * H, f"t1-s-{SETTLED} side=1 q=0.001 reduce_only=False")]
    highest = -1
    for t, what in spot:
        if what == "wm":
            highest = max(highest, t)
        else:
            assert t > highest


def test_funding_is_told_before_the_candles_that_open_at_it() -> None:
    """Ranks at one time: funding (-1) before decisions, fills and candles, so the settlement
    at 00:00 is decided with the group opening at 00:00, whatever arrives first."""
    seen: list[str] = []

    class _Order(_Answering):
        def on_candles(self, bars: Mapping[str, Bar]) -> list[Routed]:
            opened = next(iter(bars.values())).open_ms
            seen.append(f"candles@{opened}")
            return []

        def on_funding(self, key: str, settlement: Settlement) -> list[Routed]:
            seen.append(f"funding@{settlement.time_ms}")
            return []

    for seed in range(5):
        seen.clear()
        handler = BotsHandler([pair_spec()])
        handler.runners[SPOT].bot = _Order()  # type: ignore[assignment]
        run(handler, interleave(streams(), seed=seed))
        at = seen.index(f"funding@{SETTLED}")
        assert seen[at - 1] == f"candles@{SETTLED - H}"
        assert seen[at + 1] == f"candles@{SETTLED}"
        assert seen[0] == f"funding@{T0 - 4 * H}"


def test_the_intent_names_the_leg_it_trades() -> None:
    published = run(BotsHandler([pair_spec()]), interleave(streams(), seed=1))
    intents = [m for _, _, m in published if isinstance(m, order_intent_pb2.OrderIntent)]
    assert {(m.exchange, m.symbol, m.strategy, m.action) for m in intents} == {
        ("binance", "BTCUSDT", "bot:arb1", order_approved_pb2.ORDER_ACTION_PLACE),
        ("binance-linear", "BTCUSDT", "bot:arb1", order_approved_pb2.ORDER_ACTION_PLACE)}
