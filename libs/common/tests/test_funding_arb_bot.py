"""Funding carry bot: warm-up, entry, funding, exit, unwinds, a missing leg, determinism.

Real data: BTCUSDT 1h (Binance spot) and BTCUSDT 8h funding from the shared data directory,
2022-02-10 00:00 UTC (T0) on. There is no perpetual price series, so both keys get the spot
candle (the price legs cancel; the cash arithmetic per leg does not). Baseline rules (entry
0.0001, exit 0.00003, notional 10000). Settlements (rate):
  h0  02-10 00:00  0.0001     before the first group: warm-up, observed only
  h8  02-10 08:00  -1.799e-05 stay flat
  h16 02-10 16:00  0.0001     enter
  h24 02-11 00:00  3.895e-05  hold (>= exit 0.00003)
  h32 02-11 08:00  -5.238e-05 exit
Candles used (hK = hours after T0, `open .. close`):
  h16 44947.12 .. 45382.86   h17 45382.86 .. 45330.43   h18 open 45330.43
  h23 .. 43495.44 (close)    h31 .. 43359.25 (close)    h33 open 43000.32
Sizing: 10000 / 45382.86 = 0.22034.. -> 0.220 on the coarser (perp) lot 0.001.
Fills (the helper): market orders at the next candle's open; fees spot 0.1 %, perp 0.05 %.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import pytest

from meridian_common.marketdata import CsvCandleSource, CsvFundingSource, default_data_dir
from meridian_common.money import cash
from meridian_common.sizing import MarketRules
from meridian_common.strategy.funding_arb import (
    CARRY,
    ENTER,
    EXIT,
    FLAT,
    HOLD,
    STAY_FLAT,
    FundingArbParams,
)
from meridian_common.strategy.funding_arb_bot import (
    FundingArbBot,
    FundingArbBotParams,
    FundingPayment,
)
from meridian_common.strategy.intents import BUY, SELL, Bar, BotFill, PlaceOrder, Routed, Settlement

H = 3_600_000
T0 = 1_644_451_200_000  # 2022-02-10 00:00 UTC
SPOT, PERP = "binance:BTCUSDT", "binance-perp:BTCUSDT"
SPOT_RULES = MarketRules(tick=Decimal("0.01"), lot=Decimal("0.00001"), min_notional=Decimal(5))
PERP_RULES = MarketRules(tick=Decimal("0.1"), lot=Decimal("0.001"), min_qty=Decimal("0.001"),
                         min_notional=Decimal(100))
FEES = {SPOT: Decimal("0.001"), PERP: Decimal("0.0005")}
TAKER = 2
Q = Decimal("0.220")
ENTRY_TAG = "carry entry: predicted 0.0001 beyond entry 0.0001"
EXIT_TAG = "carry exit: predicted -5.238e-05 past exit 3e-05"
Log = list[tuple[int, list[Routed]]]


def at(hours: int) -> int:
    return T0 + hours * H


def params(**kw: object) -> FundingArbBotParams:
    fields = {"rules": FundingArbParams(), "spot": SPOT_RULES, "perp": PERP_RULES,
              "capital": Decimal(100_000), **kw}
    return FundingArbBotParams(**fields)  # type: ignore[arg-type]


def make_bot(**kw: object) -> FundingArbBot:
    return FundingArbBot("fa1", SPOT, PERP, params(**kw))


def market(key: str, coid: str, side: int, qty: str, tag: str,
           reduce_only: bool = False) -> Routed:
    return key, PlaceOrder(coid, side, Decimal(qty), None, tag, reduce_only=reduce_only)


def run(bot: FundingArbBot, hours: int, reject: frozenset[str] = frozenset(),
        missing: Mapping[int, str] | None = None, short: Mapping[str, Decimal] | None = None,
        start: int = T0) -> Log:
    """Drive the bot as the host does, hour by hour from T0: refusals (`reject`), then the last
    answer's market orders filled at this open (`short`: a smaller fill), then the settlement
    at this time, then the group (`missing`: hour -> key left out)."""
    source = CsvCandleSource(default_data_dir(), "BTCUSDT", "1h")
    end = start + hours * H
    rates = dict(CsvFundingSource(default_data_dir(), "BTCUSDT").rows(start, end))
    sent: list[Routed] = []
    log: Log = []
    for hour, raw in enumerate(source.rows(start, end)):
        bar = Bar.from_raw(raw, H)
        for key, order in sent:
            assert isinstance(order, PlaceOrder)
            if order.client_order_id in reject:
                bot.on_rejected(key, order.client_order_id, "test refusal")
        for key, order in sent:
            assert isinstance(order, PlaceOrder)
            if order.client_order_id not in reject:
                qty = (short or {}).get(order.client_order_id, order.quantity)
                bot.on_fill(key, BotFill(order.client_order_id, order.side, qty, bar.open,
                                         cash(qty * bar.open * FEES[key]), TAKER, bar.open_ms))
        if bar.open_ms in rates:
            bot.on_funding(PERP, Settlement(bar.open_ms, Decimal(rates[bar.open_ms])))
        sent = bot.on_candles({k: bar for k in (SPOT, PERP) if (missing or {}).get(hour) != k})
        log.append((hour, sent))
    return log


def answers(log: Log) -> dict[int, list[Routed]]:
    return {hour: sent for hour, sent in log if sent}


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"rules": FundingArbParams(allow_reverse=True)}, "borrow"),
    ({"capital": Decimal(0)}, "capital"),
    ({"spot": MarketRules(tick=Decimal("0.01"), lot=Decimal("0.002")),
      "perp": MarketRules(tick=Decimal("0.1"), lot=Decimal("0.003"))}, "nest"),
])
def test_params_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        params(**kwargs)


def test_bot_refuses_equal_keys_bad_id_and_foreign_funding() -> None:
    with pytest.raises(ValueError, match="differ"):
        FundingArbBot("fa1", SPOT, SPOT, params())
    with pytest.raises(ValueError, match="bot_id"):
        FundingArbBot("Funding_1", SPOT, PERP, params())
    bot = make_bot()
    assert bot.keys == (SPOT, PERP)
    assert bot.funding_keys == (PERP,)
    with pytest.raises(ValueError, match="funding"):
        bot.on_funding(SPOT, Settlement(T0, Decimal("0.0001")))


# --------------------------------------------------------------------------- the round trip


def test_warm_up_settlement_is_only_observed() -> None:
    """The 0.0001 at T0 comes before the first group: no decision, no order, even though it
    is at the entry rate; the one at h8 is the first decided (stay flat)."""
    bot = make_bot()
    log = run(bot, 16)  # groups h0..h15
    assert answers(log) == {}
    assert bot.rules.last_time_ms == at(8)
    assert [(d.time_ms, d.action) for d in bot.decisions] == [(at(8), STAY_FLAT)]
    assert bot.rules.direction == FLAT


def test_entry_hold_exit_with_funding() -> None:
    bot = make_bot()
    log = run(bot, 34)  # groups h0..h33: the exit fills at h33's open
    assert answers(log) == {
        16: [market(SPOT, "fa1-s-1", BUY, "0.220", ENTRY_TAG),
             market(PERP, "fa1-p-2", SELL, "0.220", ENTRY_TAG)],
        32: [market(SPOT, "fa1-s-3", SELL, "0.220", EXIT_TAG, reduce_only=True),
             market(PERP, "fa1-p-4", BUY, "0.220", EXIT_TAG, reduce_only=True)],
    }
    assert [(d.time_ms, d.action) for d in bot.decisions] == [
        (at(8), STAY_FLAT), (at(16), ENTER), (at(24), HOLD), (at(32), EXIT)]
    # h24: 0.22 x 43495.44 (h23 close) x 0.00003895 = 0.37271242536 -> received 0.37271243
    # h32: 0.22 x 43359.25 (h31 close) x -0.00005238 = -0.4996546533 -> paid 0.49965465
    assert bot.payments == [
        FundingPayment(at(24), Decimal("-0.220"), Decimal("43495.44"), Decimal("0.00003895"),
                       Decimal("0.37271243")),
        FundingPayment(at(32), Decimal("-0.220"), Decimal("43359.25"), Decimal("-0.00005238"),
                       Decimal("-0.49965465"))]
    assert bot.funding == Decimal("-0.12694222")
    assert bot.positions == {SPOT: 0, PERP: 0}
    assert bot.outstanding == {}
    # fees: entry 0.22 x 45382.86 = 9984.2292 -> 9.9842292 + 4.9921146,
    #       exit  0.22 x 43000.32 = 9460.0704 -> 9.4600704 + 4.7300352; the legs cancel
    assert bot.cash == Decimal("-29.1664494")
    assert bot.equity() == Decimal("99970.70660838")


def test_funding_booked_on_the_held_short() -> None:
    bot = make_bot()
    run(bot, 25)  # through the h24 group, the pair held
    assert bot.positions == {SPOT: Q, PERP: -Q}
    assert bot.funding == Decimal("0.37271243")
    assert bot.cash == Decimal("-14.9763438")  # -9984.2292 - 9.9842292 + 9984.2292 - 4.9921146
    # legs marked at the h24 close cancel: 100000 - 14.9763438 + 0.37271243
    assert bot.equity() == Decimal("99985.39636863")
    assert bot.peak == Decimal(100_000)  # the fees keep equity under the capital


def test_group_missing_a_leg_waits() -> None:
    """No perp candle at h16: the h16 settlement is decided on the h17 group, sized at the h17
    close (10000 / 45330.43 = 0.22060.. -> 0.220), filled at h18's open."""
    bot = make_bot()
    log = run(bot, 19, missing={16: PERP})
    assert answers(log) == {17: [market(SPOT, "fa1-s-1", BUY, "0.220", ENTRY_TAG),
                                 market(PERP, "fa1-p-2", SELL, "0.220", ENTRY_TAG)]}
    assert bot.decisions[-1].time_ms == at(16)
    assert bot.positions == {SPOT: Q, PERP: -Q}
    # 0.22 x 45330.43 = 9972.6946 bought and sold: only the fees 9.9726946 + 4.9863473
    assert bot.cash == Decimal("-14.9590419")


def test_spot_only_group_before_start_keeps_warming_up() -> None:
    bot = make_bot()
    source = CsvCandleSource(default_data_dir(), "BTCUSDT", "1h")
    bar = Bar.from_raw(next(iter(source.rows(T0, at(1)))), H)
    assert bot.on_candles({SPOT: bar}) == []
    assert bot.closes == {SPOT: Decimal("44103.29")}
    assert not bot.started
    bot.on_funding(PERP, Settlement(at(1), Decimal("0.0001")))
    assert bot.pending == []
    assert bot.rules.last_time_ms == at(1)


def test_refused_entry_leg_unwinds_the_filled_one() -> None:
    bot = make_bot()
    log = run(bot, 19, reject=frozenset({"fa1-p-2"}))
    unwind = "unwind: entry leg fa1-p-2 refused: test refusal"
    assert answers(log)[17] == [market(SPOT, "fa1-s-3", SELL, "0.220", unwind,
                                       reduce_only=True)]
    assert bot.rules.direction == FLAT
    assert bot.positions == {SPOT: 0, PERP: 0}
    # bought 0.22 at 45382.86 (9984.2292, fee 9.9842292), sold at 45330.43 (9972.6946, fee
    # 9.9726946)
    assert bot.cash == Decimal("-31.4915238")


def test_unequal_legs_are_unwound() -> None:
    """The perp entry filled 0.219 only: no longer delta-neutral, both legs are closed."""
    bot = make_bot()
    log = run(bot, 19, short={"fa1-p-2": Decimal("0.219")})
    tag = "unwind: legs unequal (spot 0.22, perp -0.219)"
    assert answers(log)[17] == [market(SPOT, "fa1-s-3", SELL, "0.220", tag, reduce_only=True),
                                market(PERP, "fa1-p-4", BUY, "0.219", tag, reduce_only=True)]
    assert bot.rules.direction == FLAT
    assert bot.positions == {SPOT: 0, PERP: 0}


def test_refused_exit_leg_is_retried() -> None:
    bot = make_bot()
    log = run(bot, 35, reject=frozenset({"fa1-p-4"}))
    assert answers(log)[33] == [market(PERP, "fa1-p-5", BUY, "0.220", EXIT_TAG,
                                       reduce_only=True)]
    assert bot.positions == {SPOT: 0, PERP: 0}


def test_entry_under_the_minimum_stays_flat() -> None:
    perp = MarketRules(tick=Decimal("0.1"), lot=Decimal("0.001"), min_qty=Decimal(1))
    bot = make_bot(perp=perp)
    log = run(bot, 25)
    assert answers(log) == {}
    assert bot.notes == [f"{at(16)}: entry refused: {PERP}: quantity 0.22 is below min_qty 1"]
    assert [d.action for d in bot.decisions] == [STAY_FLAT, ENTER, STAY_FLAT]
    assert bot.payments == []


def test_redelivered_settlement_is_ignored() -> None:
    bot = make_bot()
    run(bot, 25)
    bot.on_funding(PERP, Settlement(at(24), Decimal("0.00003895")))
    assert bot.funding == Decimal("0.37271243")
    assert bot.pending == []
    assert bot.rules.direction == CARRY


def test_same_calls_same_intents() -> None:
    first, second = make_bot(), make_bot()
    reject = frozenset({"fa1-p-4"})
    assert run(first, 35, reject=reject) == run(second, 35, reject=reject)
    assert first.decisions == second.decisions
    assert (first.cash, first.funding) == (second.cash, second.funding)


def test_improved_rules_size_by_conviction() -> None:
    """improved=True, every settlement since 2022-01-01 heard before the first group (warm-up,
    as a replay from 2022-03-23 00:00 that starts the funding early would do). The rules enter
    on 03-23 08:00 with score 0.60376... (level 0.333, trend 0.638, persistence 0.857: the
    shared rules' own computation): conviction (0.60376 - 0.6) / 0.4 -> 0.009409 (1e-6), size
    10000 x (0.5 + 1.0 x 0.009409) = 5094.09 at equity = peak (no drawdown step), so
    5094.09 / 42229.43 (the 08:00 candle's close) = 0.12062.. -> 0.120 on lot 0.001, where the
    baseline would take 10000 / 42229.43 -> 0.236."""
    start = 1_647_993_600_000  # 2022-03-23 00:00 UTC
    bot = make_bot(rules=FundingArbParams(improved=True))
    for t, rate in CsvFundingSource(default_data_dir(), "BTCUSDT").rows(1_640_995_200_000,
                                                                         start - 1):
        bot.on_funding(PERP, Settlement(t, Decimal(rate)))
    sent = answers(run(bot, 10, start=start))
    assert list(sent) == [8]
    (spot_key, spot), (perp_key, perp) = sent[8]
    assert isinstance(spot, PlaceOrder)
    assert isinstance(perp, PlaceOrder)
    assert (spot_key, spot.side, spot.quantity) == (SPOT, BUY, Decimal("0.120"))
    assert (perp_key, perp.side, perp.quantity) == (PERP, SELL, Decimal("0.120"))
    assert spot.tag.startswith("carry entry: score=0.604 (level=0.333 trend=0.638 "
                               "persistence=0.857)")
    assert bot.decisions[-1].action == ENTER
