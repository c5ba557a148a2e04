"""Grid bot: levels, the slot state machine on real candles, trailing, limits, determinism.

Real data: BTCUSDT 1h (Binance spot) from the shared data directory. The 48 hours from
2021-07-09 16:00 UTC (open 1625846400000) trade between 33004.78 and 34262.00; the rows the
expectations below are read from are quoted next to them as `cK: open high low close` (K =
candle number from the window's start, times are candle opens).
Fees: maker 0.05 %, taker 0.1 %, no slippage, so each fee can be checked by hand.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.marketdata.csvfiles import CsvCandleSource, default_data_dir
from meridian_common.sizing import MarketRules
from meridian_common.strategy.bot_sim import BotSimulation
from meridian_common.strategy.exposure import MAX_POSITION, ExposureLimits
from meridian_common.strategy.grid import GridBot, GridParams, level_price, slot_quantity
from meridian_common.strategy.intents import BUY, SELL, Bar, CancelOrder, PlaceOrder

H = 3_600_000
T0 = 1_625_846_400_000  # 2021-07-09 16:00 UTC
RULES = MarketRules(tick=Decimal("0.01"), lot=Decimal("0.00001"), min_notional=Decimal(5))
MODEL = PaperFillModel(FeeSchedule(maker=Decimal("0.0005"), taker=Decimal("0.001")))
Q = Decimal("0.01")


def bars(start_ms: int, hours: int) -> list[Bar]:
    source = CsvCandleSource(default_data_dir(), "BTCUSDT", "1h")
    return [Bar.from_raw(raw, H) for raw in source.rows(start_ms, start_ms + hours * H)]


def grid(bot_id: str = "g1", lower: int = 33000, upper: int = 34200, levels: int = 4,
         **kw: object) -> GridParams:
    return GridParams(bot_id, Decimal(lower), Decimal(upper), levels, RULES,
                      **{"quantity": Q, **kw})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"upper": 33000}, "upper"),
    ({"lower": 0}, "lower"),
    ({"levels": 1}, "levels"),
    ({"levels": 501}, "levels"),
    ({"spacing": "log"}, "spacing"),
    ({"quote": Decimal(100)}, "quantity or quote"),  # both set
    ({"quantity": Decimal(0)}, "quantity"),
    ({"quantity": Decimal("0.0001")}, "quantity"),  # 3.30 USDT < min_notional 5
    ({"trailing_up": True}, "max_shifts"),
    ({"max_shifts": 2}, "max_shifts"),
    ({"bot_id": "Grid_1"}, "bot_id"),
    ({"bot_id": "a-very-long-bot-name"}, "bot_id"),
    ({"lower": 100, "upper": 101, "levels": 200}, "levels"),  # closer than the tick
])
def test_params_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        grid(**kwargs)  # type: ignore[arg-type]


def test_quote_sizing_rounds_down_to_the_lot() -> None:
    params = GridParams("q", Decimal(30000), Decimal(34000), 5, RULES, quote=Decimal(100))
    # 100 / 30000 = 0.0033333.. -> 0.00333; 100 / 33000 = 0.00303030.. -> 0.00303
    assert slot_quantity(params, 0) == Decimal("0.00333")
    assert slot_quantity(params, 3) == Decimal("0.00303")


# --------------------------------------------------------------------------- levels


def test_arithmetic_levels_are_equal_steps() -> None:
    params = GridParams("a", Decimal(30000), Decimal(34000), 5, RULES, quantity=Q)
    assert [level_price(params, i) for i in range(5)] == [
        Decimal(30000), Decimal(31000), Decimal(32000), Decimal(33000), Decimal(34000)]
    # step 1/3 does not fit the tick: each level goes to the nearest cent
    params = GridParams("a", Decimal(100), Decimal(101), 4, RULES, quantity=Decimal(1))
    assert [level_price(params, i) for i in range(4)] == [
        Decimal("100.00"), Decimal("100.33"), Decimal("100.67"), Decimal("101.00")]
    assert level_price(params, 5) == Decimal("101.67")  # beyond the range, for a moved grid


def test_geometric_levels_are_equal_ratios() -> None:
    # 100 .. 400 in 4 steps: ratio sqrt(2); 100 x sqrt(2) = 141.421.., 200 x sqrt(2) = 282.842..
    params = GridParams("g", Decimal(100), Decimal(400), 5, RULES, spacing="geometric",
                        quantity=Decimal(1))
    assert [level_price(params, i) for i in range(5)] == [
        Decimal(100), Decimal("141.42"), Decimal(200), Decimal("282.84"), Decimal(400)]
    assert level_price(params, -2) == Decimal(50)  # one ratio^2 = 2 below the bottom


# --------------------------------------------------------------------------- replay


def test_replay_48h_fills_round_trips_and_cash() -> None:
    """Grid 33000 / 33400 / 33800 / 34200, 0.01 BTC per slot, started on c0's close 33527.25:
    buys at 33400 and 33000 (nearest first), 33800 left empty, slot 33800->34200 holds the
    start inventory bought at market. Fills, each a whole 0.01 BTC:
    c1  33527.24 33574.03 33421.68 33481.07  start buy at the open 33527.24, taker
        fee 335.2724 x 0.001 = 0.33527240; the sell at 34200 goes out at c1's close
    c2  33481.06 33496.71 33342.57 33382.03  low < 33400: buy g1-1-2, fee 334 x 0.0005 = 0.167
    c5  33528.03 34053.69 33444.50 33870.56  high > 33800: sell g1-2-5 (round trip 1)
    c8  33815.81 34262.00 33735.85 34039.95  high > 34200: sell g1-3-4 (start inventory)
    c9  34039.95 34097.72 33765.00 33767.02  low < 33800: buy g1-2-7 (not marketable: open
        34039.95 is above it)
    c25 34018.15 34021.52 33223.31 33397.27  low < 33400: buy g1-1-6
    c28 33411.41 33411.42 33004.78 33324.49  low stays above 33000: that buy never fills
    c32 33502.87 33817.83 33456.00 33719.99  high > 33800: sell g1-2-9 (round trip 2)
    c35 33519.16 33574.79 33387.72 33448.97  low < 33400: buy g1-1-10
    c40 33508.82 33800.00 33424.84 33690.69  high == 33800: a touch, no fill
    c41 33690.69 33870.00 33598.75 33693.43  high > 33800: sell g1-2-11 (round trip 3)
    no candle up to c47 reaches 34200 again, so the 33800 buy of c9 is still held.
    """
    bot = GridBot(grid())
    result = BotSimulation(bot, MODEL).run(bars(T0, 48))
    got = [(f.time_ms, f.client_order_id, f.side, f.price, f.quantity, f.fee)
           for f in result.fills]
    maker_33400, maker_33800 = Decimal("0.167"), Decimal("0.169")
    assert got == [
        (T0 + 1 * H, "g1-init-1", BUY, Decimal("33527.24"), Q, Decimal("0.33527240")),
        (T0 + 2 * H, "g1-1-2", BUY, Decimal(33400), Q, maker_33400),
        (T0 + 5 * H, "g1-2-5", SELL, Decimal(33800), Q, maker_33800),
        (T0 + 8 * H, "g1-3-4", SELL, Decimal(34200), Q, Decimal("0.171")),
        (T0 + 9 * H, "g1-2-7", BUY, Decimal(33800), Q, maker_33800),
        (T0 + 25 * H, "g1-1-6", BUY, Decimal(33400), Q, maker_33400),
        (T0 + 32 * H, "g1-2-9", SELL, Decimal(33800), Q, maker_33800),
        (T0 + 35 * H, "g1-1-10", BUY, Decimal(33400), Q, maker_33400),
        (T0 + 41 * H, "g1-2-11", SELL, Decimal(33800), Q, maker_33800),
    ]
    # each round trip: 0.01 x 400 = 4 minus 0.167 + 0.169 = 3.664
    assert [(t.level, t.profit, t.closed_ms) for t in bot.round_trips] == [
        (1, Decimal("3.664"), T0 + 5 * H), (1, Decimal("3.664"), T0 + 32 * H),
        (1, Decimal("3.664"), T0 + 41 * H)]
    # cash: sells 3 x 337.831 + 341.829 = 1355.322; buys 335.6076724 + 3 x 334.167 + 338.169
    # = 1676.2776724 -> -320.9556724; equity at c47's close 33948.68: + 339.4868 = 18.5311276
    assert result.position == Q
    assert result.cash == Decimal("-320.9556724")
    assert result.equity[-1].equity == Decimal("18.5311276")
    assert result.equity[-1].close_ms == T0 + 48 * H
    # still resting: the buy at 33000 (never filled), the sell at 34200, the new buy at 33400
    assert [p.client_order_id for p in result.placed][-1] == "g1-1-12"


def test_bounded_grid_places_nothing_outside_its_range() -> None:
    """Grid 33000 / 33400 / 33800 without trailing. c5 closes at 33870.56, above the top:
    its sell at 33800 (b-2-3, placed after c2's buy) fills, and the reaction buy at 33400 goes
    out, but nothing else is placed while the closes stay above 33800 (c5, c6, c8)."""
    bot = GridBot(grid("b", 33000, 33800, 3))
    sim = BotSimulation(bot, MODEL)
    for bar in bars(T0, 12):
        sim.step(bar)
    assert bot.level_prices() == [Decimal(33000), Decimal(33400), Decimal(33800)]
    assert sorted(sim.open) == ["b-0-2", "b-1-4"]
    assert [f.client_order_id for f in sim.fills] == ["b-1-1", "b-2-3"]


def test_trailing_grid_shifts_up_when_the_price_leaves_the_top() -> None:
    """Same grid with trailing_up: c5 (close 33870.56 > 33800) moves it to 33400 / 33800 /
    34200: the lowest buy (33000, t1-0-2) is cancelled and the new slot buys at 33800.
    c7  33977.20 34030.47 33760.00 33815.81  low < 33800: buy t1-2-5
    c8  33815.81 34262.00 33735.85 34039.95  high > 34200: its sell t1-3-6, a round trip on
    the new slot: 0.01 x 400 - 0.169 - 0.171 = 3.66."""
    bot = GridBot(grid("t1", 33000, 33800, 3, trailing_up=True, max_shifts=2))
    sim = BotSimulation(bot, MODEL)
    window = bars(T0, 12)
    for bar in window[:5]:
        sim.step(bar)
    assert sorted(sim.open) == ["t1-0-2", "t1-2-3"]
    assert bot.level_prices() == [Decimal(33000), Decimal(33400), Decimal(33800)]
    sim.step(window[5])
    assert bot.level_prices() == [Decimal(33400), Decimal(33800), Decimal(34200)]
    assert "t1-0-2" not in sim.open
    assert sorted(sim.open) == ["t1-1-4", "t1-2-5"]
    for bar in window[6:]:
        sim.step(bar)
    assert [(f.time_ms, f.client_order_id, f.price) for f in sim.fills][2:] == [
        (T0 + 7 * H, "t1-2-5", Decimal(33800)), (T0 + 8 * H, "t1-3-6", Decimal(34200)),
        (T0 + 9 * H, "t1-2-7", Decimal(33800))]
    assert [t.profit for t in bot.round_trips][-1] == Decimal("3.66")
    assert bot.shifts == 1


def test_trailing_shifts_are_bounded() -> None:
    """33000 / 33100 / 33200 with max_shifts 3: the price goes to 34262 in the window, but
    the grid moves three steps and stops at 33300 / 33400 / 33500."""
    bot = GridBot(grid("y", 33000, 33200, 3, trailing_up=True, max_shifts=3))
    BotSimulation(bot, MODEL).run(bars(T0, 48))
    assert bot.shifts == 3
    assert bot.level_prices() == [Decimal(33300), Decimal(33400), Decimal(33500)]


def test_trailing_down_moves_the_inventory_below() -> None:
    """33600 / 33800 / 34000 started on c0's close 33527.25, under the grid: both slots hold
    inventory (start buy 0.02 at c1's open 33527.24). c1 closes at 33481.07, below the bottom:
    the top slot (sell at 34000) moves down to sell at 33600, the grid to 33400 / 33600 /
    33800. c5 (high 34053.69) fills both sells; the slot below the old bottom then buys at
    33400, level -1, id `x-n1-4`."""
    bot = GridBot(grid("x", 33600, 34000, 3, trailing_down=True, max_shifts=1))
    sim = BotSimulation(bot, MODEL)
    for bar in bars(T0, 8):
        sim.step(bar)
    assert bot.level_prices() == [Decimal(33400), Decimal(33600), Decimal(33800)]
    assert [(f.client_order_id, f.price, f.quantity) for f in sim.fills] == [
        ("x-init-1", Decimal("33527.24"), Decimal("0.02")),
        ("x-0-2", Decimal(33600), Q), ("x-1-3", Decimal(33800), Q)]
    assert sorted(sim.open) == ["x-0-5", "x-n1-4"]


# --------------------------------------------------------------------------- limits


def test_limit_refuses_the_order_over_the_cap_and_the_position_stays_under() -> None:
    """June 2021 (720 candles, 28805 .. 41330), grid 30000 .. 40000 every 500, 0.01 per slot,
    max position 0.05. Start close 37798.31: four slots above hold inventory (start buy 0.04),
    the buy at 37500 brings the worst case to 0.05, the buy at 37000 (0.06) is refused, and so
    is every lower one. Over the month the position reaches the cap and never passes it; the
    same grid without the cap goes to 0.2."""
    june = bars(1_622_505_600_000, 720)
    assert len(june) == 720
    bot = GridBot(grid("m", 30000, 40000, 21))
    result = BotSimulation(bot, MODEL, ExposureLimits(max_position=Decimal("0.05"))).run(june)
    assert [p.client_order_id for p in result.placed[:2]] == ["m-init-1", "m-15-2"]
    assert result.placed[0].quantity == Decimal("0.04")
    first = result.refused[0]
    assert (first.client_order_id, first.rule, first.detail) == (
        "m-14-3", MAX_POSITION, "worst-case position 0.06 > 0.05")
    assert {r.rule for r in result.refused} == {MAX_POSITION}
    assert max(p.position for p in result.equity) == Decimal("0.05")
    assert all(p.position >= 0 for p in result.equity)
    free = BotSimulation(GridBot(grid("m", 30000, 40000, 21)), MODEL).run(june)
    assert max(p.position for p in free.equity) == Decimal("0.2")


def test_exposure_limit_rules() -> None:
    limits = ExposureLimits(max_position=Decimal(1), max_notional=Decimal(1000))
    buy = PlaceOrder("a-1-1", BUY, Decimal("0.5"), Decimal(1900), "t")
    assert limits.check(buy, Decimal(0), [], Decimal(2000)) is None  # 0.5 x 1900 = 950
    refusal = limits.check(buy, Decimal("0.1"), [], Decimal(2000))  # 0.6 x 1900 = 1140
    assert refusal is not None
    assert refusal.rule == "max_notional"
    resting = PlaceOrder("a-1-4", BUY, Decimal("0.5"), Decimal(100), "t")
    refusal = limits.check(buy, Decimal("0.1"), [resting], Decimal(2000))  # 1.1 > 1
    assert refusal is not None
    assert refusal.rule == "max_position"
    market = PlaceOrder("a-1-5", BUY, Decimal("0.5"), None, "t")  # valued at the last close
    assert limits.check(market, Decimal(0), [], Decimal(1999)) is None
    refusal = limits.check(market, Decimal(0), [], Decimal(2001))
    assert refusal is not None
    assert refusal.rule == "max_notional"
    sell = PlaceOrder("a-1-2", SELL, Decimal("0.5"), Decimal(1000), "t")
    resting = PlaceOrder("a-1-3", SELL, Decimal("0.3"), Decimal(1100), "t")
    refusal = limits.check(sell, Decimal("0.6"), [resting], Decimal(1000))
    assert refusal is not None
    assert refusal.rule == "sell_exceeds_position"
    with pytest.raises(ValueError, match="max_position"):
        ExposureLimits(max_position=Decimal(0))


# --------------------------------------------------------------------------- determinism


def test_same_candles_same_ids_and_fills() -> None:
    window = bars(T0, 48)
    runs = [BotSimulation(GridBot(grid(trailing_up=True, max_shifts=3)), MODEL).run(window)
            for _ in range(2)]
    assert runs[0].placed == runs[1].placed
    assert runs[0].fills == runs[1].fills
    assert all(len(p.client_order_id) <= 36 for p in runs[0].placed)


def test_a_bot_reusing_an_id_is_an_error() -> None:
    class Repeater:
        bot_id = "r"

        def on_candle(self, bar: Bar) -> list[PlaceOrder | CancelOrder]:
            return [PlaceOrder("r-1-1", BUY, Q, Decimal(1), "t")]

        def on_fill(self, fill: object) -> list[PlaceOrder | CancelOrder]:
            return []

        def on_rejected(self, coid: str, reason: str) -> list[PlaceOrder | CancelOrder]:
            return []

    with pytest.raises(ValueError, match="reused client order id 'r-1-1'"):
        BotSimulation(Repeater(), MODEL).run(bars(T0, 2))
