"""DCA bot: parameters, safety ladder, exact averages and take-profits on real candles, limits.

Real data: BTCUSDT 1h (Binance spot), the 48 hours from 2021-07-09 16:00 UTC (open
1625846400000); rows quoted as `cK: open high low close` (K = candle number from the start).
Bot: base 1000 USDT, safety 1000 USDT, deviation 0.5 %, step scale 2, volume scale 2, two
safety orders, take-profit 1 %; tick 0.01, lot 0.00001. Fees: maker 0.05 %, taker 0.1 %.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.marketdata.csvfiles import CsvCandleSource, default_data_dir
from meridian_common.sizing import MarketRules
from meridian_common.strategy.bot_sim import BotSimulation
from meridian_common.strategy.dca import (
    DcaBot,
    DcaParams,
    SafetyOrder,
    cumulative_deviation,
    safety_orders,
)
from meridian_common.strategy.exposure import MAX_NOTIONAL, ExposureLimits
from meridian_common.strategy.intents import BUY, SELL, Bar, BotFill, CancelOrder, PlaceOrder

H = 3_600_000
T0 = 1_625_846_400_000  # 2021-07-09 16:00 UTC
RULES = MarketRules(tick=Decimal("0.01"), lot=Decimal("0.00001"))
MODEL = PaperFillModel(FeeSchedule(maker=Decimal("0.0005"), taker=Decimal("0.001")))
MAKER, TAKER = 1, 2


def bars(start_ms: int, hours: int) -> list[Bar]:
    source = CsvCandleSource(default_data_dir(), "BTCUSDT", "1h")
    return [Bar.from_raw(raw, H) for raw in source.rows(start_ms, start_ms + hours * H)]


def dca(**kw: object) -> DcaParams:
    base: dict[str, object] = {
        "bot_id": "d1", "rules": RULES, "base_quote": Decimal(1000),
        "safety_quote": Decimal(1000), "deviation": Decimal("0.005"),
        "take_profit": Decimal("0.01"), "max_safety_orders": 2, "step_scale": Decimal(2),
        "volume_scale": Decimal(2)}
    return DcaParams(**{**base, **kw})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"base_quote": Decimal(0)}, "base_quote"),
    ({"safety_quote": Decimal(-1)}, "safety_quote"),
    ({"deviation": Decimal(0)}, "deviation"),
    ({"take_profit": Decimal(1)}, "take_profit"),
    ({"max_safety_orders": -1}, "max_safety_orders"),
    ({"step_scale": Decimal(0)}, "step_scale"),
    ({"volume_scale": Decimal(0)}, "volume_scale"),
    # 10 % x (1 + 2 + 4 + 8) = 150 %: the fourth safety order would be below zero
    ({"deviation": Decimal("0.1"), "max_safety_orders": 4}, "step_scale"),
    ({"stop_loss": Decimal("1.5")}, "stop_loss"),
    ({"cooldown_candles": -1}, "cooldown_candles"),
    ({"max_cycles": 0}, "max_cycles"),
    ({"bot_id": "DCA"}, "bot_id"),
])
def test_params_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        dca(**kwargs)


def test_safety_ladder_is_hand_checkable() -> None:
    """Base 10000, 1 % step, step scale 1.5, volume scale 2, three orders:
    d = 1 %, 1 + 1.5 = 2.5 %, 2.5 + 2.25 = 4.75 %; prices 9900, 9750, 9525;
    quotes 100, 200, 400: 0.01010101.. -> 0.0101, 0.02051282.. -> 0.02051, 0.04199475.."""
    params = dca(deviation=Decimal("0.01"), step_scale=Decimal("1.5"), max_safety_orders=3,
                 safety_quote=Decimal(100), rules=MarketRules(tick=Decimal("0.01"),
                                                              lot=Decimal("0.00001")))
    assert cumulative_deviation(params, 3) == Decimal("0.0475")
    assert safety_orders(params, Decimal(10000)) == [
        SafetyOrder(1, Decimal("9900.00"), Decimal("0.01010")),
        SafetyOrder(2, Decimal("9750.00"), Decimal("0.02051")),
        SafetyOrder(3, Decimal("9525.00"), Decimal("0.04199"))]


# --------------------------------------------------------------------------- replay


def test_replay_two_cycles_hand_checked() -> None:
    """Cycle 1, bought on c0's close 33527.25: 1000 / 33527.25 = 0.0298265.. -> 0.02982.
    c1  33527.24 33574.03 33421.68 33481.07  base at the open 33527.24, taker:
        999.7822968 -> fee 0.99978230. Ladder from 33527.24: 33527.24 x 0.995 = 33359.6038
        -> 33359.60 (1000 / it -> 0.02997), x 0.985 = 33024.3314 -> 33024.33 (2000 / it ->
        0.06056); take-profit 1: 33527.24 x 1.01 = 33862.5124 -> up to 33862.52.
    c2  33481.06 33496.71 33342.57 33382.03  low < 33359.60: safety 1, maker, 999.787212 ->
        fee 0.49989361. Average (999.7822968 + 999.787212) / 0.05979 = 33443.209713998996..
        -> 33443.209713998996; take-profit 2 at x 1.01 = 33777.6418.. -> 33777.65.
    c3, c4 highs 33490.00, 33549.55: below it.
    c5  33528.03 34053.69 33444.50 33870.56  high > 33777.65: take-profit 2 fills, maker,
        0.05979 x 33777.65 = 2019.5656935 -> fee 1.00978285; safety 2 is cancelled. Profit
        2019.5656935 - 1999.5695088 - (0.9997823 + 0.49989361 + 1.00978285) = 17.48672594.
    Cycle 2, bought on c5's close 33870.56: 1000 / it = 0.0295241.. -> 0.02952.
    c6  33870.57 34100.00 33844.14 33977.19  base at the open 33870.57, fee 0.99985923;
        safety 1 at 33701.21715 -> 33701.21 (never reached: lows c7 33760, c8 33735.85),
        take-profit at 34209.2757 -> 34209.28.
    c8  33815.81 34262.00 33735.85 34039.95  high > 34209.28: take-profit, 1009.8579456,
        fee 0.50492897; profit 9.9987192 - 1.5047882 = 8.4939310.
    max_cycles 2: nothing more; the position is flat and the remaining orders are cancelled.
    """
    bot = DcaBot(dca(max_cycles=2))
    result = BotSimulation(bot, MODEL).run(bars(T0, 48))
    got = [(f.time_ms, f.client_order_id, f.side, f.quantity, f.price, f.fee, f.liquidity)
           for f in result.fills]
    assert got == [
        (T0 + H, "d1-1-b", BUY, Decimal("0.02982"), Decimal("33527.24"),
         Decimal("0.9997823"), TAKER),
        (T0 + 2 * H, "d1-1-s1", BUY, Decimal("0.02997"), Decimal("33359.60"),
         Decimal("0.49989361"), MAKER),
        (T0 + 5 * H, "d1-1-tp2", SELL, Decimal("0.05979"), Decimal("33777.65"),
         Decimal("1.00978285"), MAKER),
        (T0 + 6 * H, "d1-2-b", BUY, Decimal("0.02952"), Decimal("33870.57"),
         Decimal("0.99985923"), TAKER),
        (T0 + 8 * H, "d1-2-tp1", SELL, Decimal("0.02952"), Decimal("34209.28"),
         Decimal("0.50492897"), MAKER),
    ]
    placed = {p.client_order_id: (p.quantity, p.limit_price) for p in result.placed}
    assert placed["d1-1-s1"] == (Decimal("0.02997"), Decimal("33359.60"))
    assert placed["d1-1-s2"] == (Decimal("0.06056"), Decimal("33024.33"))
    assert placed["d1-1-tp1"] == (Decimal("0.02982"), Decimal("33862.52"))
    assert placed["d1-2-s1"] == (Decimal("0.02967"), Decimal("33701.21"))
    assert [(c.number, c.buys, c.average, c.exit_price, c.profit) for c in bot.cycles] == [
        (1, 2, Decimal("33443.209713998996"), Decimal("33777.65"), Decimal("17.48672594")),
        (2, 1, Decimal("33870.57"), Decimal("34209.28"), Decimal("8.493931"))]
    assert result.position == 0
    assert result.cash == Decimal("17.48672594") + Decimal("8.493931")
    # cycle 1: base, 2 safety orders, 2 take-profits; cycle 2: base, 2 safety, 1 take-profit
    assert len(result.placed) == 9


def test_marketable_safety_order_fills_at_the_open_as_taker() -> None:
    """Cycle 3 (max_cycles 3): bought on c8's close 34039.95 (0.02937), base at c9's open
    34039.95; safety 1 at 34039.95 x 0.995 = 33869.75025 -> 33869.75, placed at c9's close.
    c10 33765.42 33869.18 33631.00 33729.25  opens below it: marketable on its first candle,
        filled at the open 33765.42 as taker, 996.7551984 -> fee 0.99675520.
    c13 33651.70 33738.33 33458.84 33649.03  low < safety 2 (x 0.985 = 33529.35075 ->
        33529.35, 2000 / it -> 0.05964): maker.
    Average (999.7533315 + 996.7551984 + 1999.690434) / 0.11853 = 33714.662649962035..;
    take-profit 3: x 1.01 = 34051.8092.. -> 34051.81, first crossed by
    c24 33862.55 34192.00 33794.12 34018.16 (c14..c23 highs are all below 33950.01).
    """
    bot = DcaBot(dca(max_cycles=3))
    result = BotSimulation(bot, MODEL).run(bars(T0, 48))
    cycle3 = [(f.time_ms, f.client_order_id, f.price, f.fee, f.liquidity)
              for f in result.fills if f.client_order_id.startswith("d1-3-")]
    assert cycle3 == [
        (T0 + 9 * H, "d1-3-b", Decimal("34039.95"), Decimal("0.99975333"), TAKER),
        (T0 + 10 * H, "d1-3-s1", Decimal("33765.42"), Decimal("0.9967552"), TAKER),
        (T0 + 13 * H, "d1-3-s2", Decimal("33529.35"), Decimal("0.99984522"), MAKER),
        (T0 + 24 * H, "d1-3-tp3", Decimal("34051.81"), Decimal("2.01808052"), MAKER)]
    assert bot.cycles[2].average == Decimal("33714.662649962035")
    assert bot.cycles[2].quantity == Decimal("0.11853")


def test_take_profit_is_replaced_after_each_fill() -> None:
    """The state machine alone: after the base fill the bot places two safety orders and a
    take-profit; a safety fill cancels that take-profit and places one for the whole
    position at the new average; the take-profit fill cancels the last safety order."""
    bot = DcaBot(dca(bot_id="u"))
    bar = Bar(0, H, Decimal(100), Decimal(100), Decimal(100), Decimal(100))
    assert bot.on_candle(bar) == [PlaceOrder("u-1-b", BUY, Decimal(10), None, "dca-base")]
    intents = bot.on_fill(BotFill("u-1-b", BUY, Decimal(10), Decimal(100), Decimal(1), TAKER, H))
    assert [i.client_order_id for i in intents] == ["u-1-s1", "u-1-s2", "u-1-tp1"]
    # safety 1 at 100 x 0.995 = 99.5 for 1000 / 99.5 = 10.0502512.. -> 10.05025
    intents = bot.on_fill(BotFill("u-1-s1", BUY, Decimal("10.05025"), Decimal("99.5"),
                                  Decimal(0), MAKER, 2 * H))
    # average (1000 + 999.999875) / 20.05025 = 99.749373449208862..; x 1.01 = 100.7468.. ->
    # rounded up to 100.75
    assert intents == [CancelOrder("u-1-tp1"),
                       PlaceOrder("u-1-tp2", SELL, Decimal("20.05025"), Decimal("100.75"),
                                  "dca-take-profit")]
    assert bot.average == Decimal("99.749373449209")
    intents = bot.on_fill(BotFill("u-1-tp2", SELL, Decimal("20.05025"), Decimal("100.75"),
                                  Decimal(0), MAKER, 3 * H))
    assert intents == [CancelOrder("u-1-s2")]
    assert bot.cycle == 2
    assert bot.quantity == 0
    assert bot.on_candle(bar)[0].client_order_id == "u-2-b"  # the next cycle starts


def test_stop_loss_and_cooldown() -> None:
    bot = DcaBot(dca(bot_id="s", stop_loss=Decimal("0.05"), cooldown_candles=2))
    at = [Bar(i * H, (i + 1) * H, p, p, p, p) for i, p in
          enumerate(Decimal(x) for x in (100, 100, 95, 94, 94, 94, 94))]
    bot.on_candle(at[0])
    bot.on_fill(BotFill("s-1-b", BUY, Decimal(10), Decimal(100), Decimal(0), TAKER, H))
    assert bot.on_candle(at[1]) == []
    # average 100, stop at <= 95: everything is cancelled and the position sold at market
    assert bot.on_candle(at[2]) == [CancelOrder("s-1-s1"), CancelOrder("s-1-s2"),
                                    CancelOrder("s-1-tp1"),
                                    PlaceOrder("s-1-sl", SELL, Decimal(10), None, "dca-stop")]
    bot.on_fill(BotFill("s-1-sl", SELL, Decimal(10), Decimal(94), Decimal(0), TAKER, 3 * H))
    assert bot.cycles[0].reason == "stop_loss"
    assert bot.cycles[0].profit == Decimal(-60)
    assert bot.on_candle(at[3]) == []
    assert bot.on_candle(at[4]) == []
    assert bot.on_candle(at[5])[0].client_order_id == "s-2-b"


# --------------------------------------------------------------------------- limits


def test_notional_cap_refuses_safety_orders_over_a_month() -> None:
    """June 2021, 1 % step: with max notional 2500 the base (~1000) and safety 1 (1000 at 1 %
    below) fit, safety 2 (2000 more) is refused as max_notional every cycle; no cycle ever
    buys more than twice and the worst-case position is never above 2500 / lowest price."""
    june = bars(1_622_505_600_000, 720)
    params = dca(deviation=Decimal("0.01"))
    bot = DcaBot(params)
    limited = BotSimulation(bot, MODEL, ExposureLimits(max_notional=Decimal(2500))).run(june)
    assert limited.refused
    assert {r.rule for r in limited.refused} == {MAX_NOTIONAL}
    assert all(r.client_order_id.endswith("-s2") for r in limited.refused)
    assert not any(p.client_order_id.endswith("-s2") for p in limited.placed)
    assert max(c.buys for c in bot.cycles) == 2
    # the position never holds more than base + safety 1 of one cycle: at most ~2000 USDT at
    # June's lowest price 28805, so never above 2500 / 28805 = 0.0867..
    assert max(p.position for p in limited.equity) < Decimal(2500) / Decimal(28805)
    free_bot = DcaBot(params)
    BotSimulation(free_bot, MODEL).run(june)
    assert max(c.buys for c in free_bot.cycles) == 3  # safety 2 fills when nothing stops it


def test_same_candles_same_ids_and_fills() -> None:
    window = bars(T0, 48)
    runs = [BotSimulation(DcaBot(dca()), MODEL).run(window) for _ in range(2)]
    assert runs[0].placed == runs[1].placed
    assert runs[0].fills == runs[1].fills
    assert runs[0].equity == runs[1].equity


def test_low_before_high_inside_a_candle() -> None:
    """A candle that crosses both safety 1 (99.5) and the take-profit (101) of a base bought at
    100 (10 at 100, taker fee 1): the path inside it is unknown, so the simulation takes the low
    first. Safety 1 fills (10.05025 at 99.5, maker fee 999.999875 x 0.0005 -> 0.49999994); the
    bot's answer (cancel tp1, place tp2 for 20.05025 at 99.749373449209 x 1.01 -> 100.75) acts
    at the close, as on the bus, so tp1 still fills on the high: 10 at 101, fee 0.505. That is
    a partial exit at the average: 10.05025 left, same average, so tp2 is cancelled again and
    tp3 placed for 10.05025 at 100.75, which the next candle (high 100.8) fills: 1012.5626875,
    fee 0.50628134. Cycle: proceeds 2022.5626875 - bought 1999.999875 - fees 2.51128128
    = 20.05153122; average exit 2022.5626875 / 20.05025 = 100.874686724604.."""
    bot = DcaBot(dca(bot_id="p"))
    flat = Decimal(100)
    candles = [Bar(0, H, flat, flat, flat, flat), Bar(H, 2 * H, flat, flat, flat, flat),
               Bar(2 * H, 3 * H, flat, Decimal(102), Decimal(99), flat),
               Bar(3 * H, 4 * H, flat, Decimal("100.8"), flat, flat)]
    result = BotSimulation(bot, MODEL).run(candles)
    assert [(f.time_ms, f.client_order_id, f.quantity, f.price, f.fee)
            for f in result.fills] == [
        (H, "p-1-b", Decimal(10), flat, Decimal(1)),
        (2 * H, "p-1-s1", Decimal("10.05025"), Decimal("99.50"), Decimal("0.49999994")),
        (2 * H, "p-1-tp1", Decimal(10), Decimal(101), Decimal("0.505")),
        (3 * H, "p-1-tp3", Decimal("10.05025"), Decimal("100.75"), Decimal("0.50628134"))]
    placed = {p.client_order_id: (p.quantity, p.limit_price) for p in result.placed}
    assert placed["p-1-tp2"] == (Decimal("20.05025"), Decimal("100.75"))
    assert placed["p-1-tp3"] == (Decimal("10.05025"), Decimal("100.75"))
    (cycle,) = bot.cycles
    assert (cycle.buys, cycle.quantity, cycle.average, cycle.reason) == (
        2, Decimal("20.05025"), Decimal("99.749373449209"), "take_profit")
    assert cycle.exit_price == Decimal("100.874686724604")
    assert cycle.fees == Decimal("2.51128128")
    assert cycle.profit == Decimal("20.05153122") == result.cash
    assert result.position == 0


def test_safety_and_old_take_profit_on_one_real_candle() -> None:
    """BTCUSDT 1h from 2020-08-01 17:00 UTC (open 1596301200000), one cycle:
    c0  11632.91 11736.00 11632.41 11732.02  close: base 1000 / 11732.02 = 0.0852368.. ->
        0.08523 at market.
    c1  11732.62 11734.21 11561.00 11665.22  base at the open, taker: 999.9712026, fee
        0.99997120. Ladder: x 0.995 = 11673.9569 -> 11673.95 (1000 / it -> 0.08566), x 0.985 =
        11556.6307 -> 11556.63 (0.17306); tp1 x 1.01 = 11849.9462 -> 11849.95. All placed at
        c1's close (c1's low does not count).
    c2  11665.22 11850.00 11658.22 11769.59  opens below safety 1: it fills at the open as
        taker, 0.08566 x 11665.22 = 999.2427452, fee 0.99924275. The bot cancels tp1 and asks
        for tp2 (0.17089 at average 1999.2139478 / 0.17089 = 11698.835202762011 x 1.01 =
        11815.8235.. -> 11815.83), but that acts at c2's close: tp1 still fills on the high
        11850.00, maker, 0.08523 x 11849.95 = 1009.9712385, fee 0.50498562. Partial exit: 0.08566
        left at the same average, so tp2 is cancelled at once and tp3 asks 0.08566 at 11815.83.
    c3  11769.09 11861.00 11653.06 11829.99  tp3 fills: 1012.1439978, fee 0.50607200; safety
        2 (11556.63, never reached) is cancelled.
    Profit 2022.1152363 - 1999.2139478 - 3.01027157 = 19.89101693 (the old in-candle cancel
    sold all 0.17089 at 11815.83 on c3 instead)."""
    start = 1_596_301_200_000
    bot = DcaBot(dca(max_cycles=1))
    result = BotSimulation(bot, MODEL).run(bars(start, 6))
    assert [((f.time_ms - start) // H, f.client_order_id, f.quantity, f.price, f.fee,
             f.liquidity) for f in result.fills] == [
        (1, "d1-1-b", Decimal("0.08523"), Decimal("11732.62"), Decimal("0.9999712"), TAKER),
        (2, "d1-1-s1", Decimal("0.08566"), Decimal("11665.22"), Decimal("0.99924275"), TAKER),
        (2, "d1-1-tp1", Decimal("0.08523"), Decimal("11849.95"), Decimal("0.50498562"), MAKER),
        (3, "d1-1-tp3", Decimal("0.08566"), Decimal("11815.83"), Decimal("0.506072"), MAKER)]
    placed = {p.client_order_id: (p.quantity, p.limit_price) for p in result.placed}
    assert placed["d1-1-s1"] == (Decimal("0.08566"), Decimal("11673.95"))
    assert placed["d1-1-s2"] == (Decimal("0.17306"), Decimal("11556.63"))
    assert placed["d1-1-tp1"] == (Decimal("0.08523"), Decimal("11849.95"))
    assert placed["d1-1-tp2"] == (Decimal("0.17089"), Decimal("11815.83"))
    (cycle,) = bot.cycles
    assert (cycle.buys, cycle.quantity, cycle.average) == (
        2, Decimal("0.17089"), Decimal("11698.835202762011"))
    assert cycle.profit == Decimal("19.89101693") == result.cash
    assert result.position == 0


# --------------------------------------------------------------------------- unplanned fills


def _holding(bot_id: str = "u", **kw: object) -> DcaBot:
    """A bot that bought its base: 10 at 100 (tp1 10 at 101, safety 1 10.05025 at 99.5)."""
    bot = DcaBot(dca(bot_id=bot_id, **kw))
    bot.on_candle(Bar(0, H, Decimal(100), Decimal(100), Decimal(100), Decimal(100)))
    bot.on_fill(BotFill(f"{bot_id}-1-b", BUY, Decimal(10), Decimal(100), Decimal(0), TAKER, H))
    return bot


def test_capped_take_profit_is_a_partial_exit() -> None:
    """The executor caps a reduce-only sell to the position: tp1 (10) fills 4 only. The bot
    holds 6 at the same average 100 and asks for them at 101 again."""
    bot = _holding()
    intents = bot.on_fill(BotFill("u-1-tp1", SELL, Decimal(4), Decimal(101), Decimal(0), MAKER,
                                  2 * H))
    assert intents == [CancelOrder("u-1-tp1"),
                       PlaceOrder("u-1-tp2", SELL, Decimal(6), Decimal("101.00"),
                                  "dca-take-profit")]
    assert (bot.quantity, bot.average, bot.phase) == (Decimal(6), Decimal(100), "holding")
    bot.on_fill(BotFill("u-1-tp2", SELL, Decimal(6), Decimal(101), Decimal(0), MAKER, 3 * H))
    assert bot.cycles[0].profit == Decimal(10)  # 10 x (101 - 100), no fees
    assert bot.cycles[0].exit_price == Decimal(101)


def test_safety_filling_after_the_cycle_starts_the_next_one() -> None:
    """Safety 1's cancel did not act (refused by the gate): it fills after tp1 closed cycle 1.
    The bot keeps it as cycle 2's base: a take-profit, no ladder, no market buy."""
    bot = _holding()
    assert bot.on_fill(BotFill("u-1-tp1", SELL, Decimal(10), Decimal(101), Decimal(0), MAKER,
                               2 * H)) == [CancelOrder("u-1-s1"), CancelOrder("u-1-s2")]
    intents = bot.on_fill(BotFill("u-1-s1", BUY, Decimal(10), Decimal("99.5"), Decimal(0),
                                  MAKER, 3 * H))
    # 99.5 x 1.01 = 100.495 -> up to 100.50
    assert intents == [PlaceOrder("u-2-tp1", SELL, Decimal(10), Decimal("100.50"),
                                  "dca-take-profit")]
    assert (bot.cycle, bot.phase) == (2, "holding")
    bar = Bar(3 * H, 4 * H, Decimal(100), Decimal(100), Decimal(100), Decimal(100))
    assert bot.on_candle(bar) == []  # holding: no new base order
    bot.on_fill(BotFill("u-2-tp1", SELL, Decimal(10), Decimal("100.5"), Decimal(0), MAKER,
                        5 * H))
    assert [(c.number, c.buys, c.profit) for c in bot.cycles] == [
        (1, 1, Decimal(10)), (2, 1, Decimal(10))]


def test_partial_stop_is_asked_for_again_under_a_new_id() -> None:
    """The stop sold 4 of 10 (capped): the bot holds 6; the next close still below the stop
    sells them with -sl2; a sell while flat is not the bot's and is ignored."""
    bot = _holding("s", stop_loss=Decimal("0.05"))
    low = Bar(H, 2 * H, Decimal(94), Decimal(94), Decimal(94), Decimal(94))
    assert bot.on_candle(low)[-1] == PlaceOrder("s-1-sl", SELL, Decimal(10), None, "dca-stop")
    assert bot.on_fill(BotFill("s-1-sl", SELL, Decimal(4), Decimal(94), Decimal(0), TAKER,
                               2 * H)) == []
    assert bot.on_candle(low) == [PlaceOrder("s-1-sl2", SELL, Decimal(6), None, "dca-stop")]
    bot.on_fill(BotFill("s-1-sl2", SELL, Decimal(6), Decimal(93), Decimal(0), TAKER, 3 * H))
    # 4 x 94 + 6 x 93 - 10 x 100
    assert (bot.cycles[0].reason, bot.cycles[0].profit) == ("stop_loss", Decimal(-66))
    assert bot.on_fill(BotFill("s-1-tp1", SELL, Decimal(1), Decimal(101), Decimal(0), MAKER,
                               4 * H)) == []
    assert bot.quantity == 0
    assert len(bot.cycles) == 1


def test_refused_stop_is_decided_again_on_the_next_close() -> None:
    bot = _holding("s", stop_loss=Decimal("0.05"))
    low = Bar(H, 2 * H, Decimal(94), Decimal(94), Decimal(94), Decimal(94))
    bot.on_candle(low)
    assert bot.on_rejected("s-1-sl", "system.kill_switch") == []
    assert bot.phase == "holding"
    up = Bar(2 * H, 3 * H, Decimal(99), Decimal(99), Decimal(99), Decimal(99))
    # back above the stop: a take-profit again (the first one was cancelled with the stop)
    assert bot.on_candle(up) == [PlaceOrder("s-1-tp2", SELL, Decimal(10), Decimal("101.00"),
                                            "dca-take-profit")]
