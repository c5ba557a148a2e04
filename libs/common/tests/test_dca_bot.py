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
    100: the path inside it is unknown, so the simulation takes the low first. Safety 1 fills,
    the take-profit it cancels cannot fill on the same candle's high, and the new take-profit
    for the whole position (average 99.749373449209 x 1.01 -> 100.75) trades from the next
    candle on."""
    bot = DcaBot(dca(bot_id="p"))
    flat = Decimal(100)
    candles = [Bar(0, H, flat, flat, flat, flat), Bar(H, 2 * H, flat, flat, flat, flat),
               Bar(2 * H, 3 * H, flat, Decimal(102), Decimal(99), flat),
               Bar(3 * H, 4 * H, flat, Decimal("100.8"), flat, flat)]
    result = BotSimulation(bot, MODEL).run(candles)
    assert [(f.time_ms, f.client_order_id, f.price) for f in result.fills] == [
        (H, "p-1-b", flat), (2 * H, "p-1-s1", Decimal("99.50")),
        (3 * H, "p-1-tp2", Decimal("100.75"))]
