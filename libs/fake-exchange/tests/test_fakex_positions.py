"""Linear positions through real ccxt: reduce-only rules, one-way flips, hedge mode, leverage,
and attached stop loss / take profit closing a position when the price crosses them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import pytest

HOUR, MINUTE = 3_600_000, 60_000
OCT_1_2021 = 1_633_046_400_000      # BTC ~43820, falls to ~43380 by 03:00, ~48000 by 12:00
BTC = "BTC/USDT:USDT"
START = Decimal(100_000)
TAKER = Decimal("0.00055")


def wallet_balance(server: Any) -> Decimal:
    coin = next(c for c in server.wallet()["coin"] if c["coin"] == "USDT")
    return Decimal(coin["walletBalance"])


async def test_reduce_only_rules(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    with pytest.raises(ccxt.InvalidOrder, match=r"110017.*current position is zero"):
        await ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    await ex.create_order(BTC, "market", "buy", 0.02)
    with pytest.raises(ccxt.InvalidOrder, match="110017"):  # would increase the long
        await ex.create_order(BTC, "market", "buy", 0.01, params={"reduceOnly": True})
    resting = await ex.create_order(BTC, "limit", "sell", 0.01, 60000.0, {"reduceOnly": True})
    capped = await ex.create_order(BTC, "market", "sell", 0.05, params={"reduceOnly": True})
    done = await ex.fetch_order(capped["id"], BTC, {"acknowledged": True})
    assert (done["amount"], done["filled"], done["reduceOnly"]) == (0.02, 0.02, True)
    assert server.positions() == []
    # the position is gone: the resting reduce-only order is cancelled with it
    gone = await ex.fetch_order(resting["id"], BTC, {"acknowledged": True})
    assert (gone["status"], gone["info"]["cancelType"]) == ("canceled", "CancelByReduceOnly")


async def test_one_way_flip_books_realised_pnl_on_the_closed_part(make_server: Any,
                                                                   make_trader: Any,
                                                                   hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    p1 = hand.tick(hand.price(server, OCT_1_2021))
    await ex.create_order(BTC, "market", "buy", 0.01)
    server.clock.advance(2 * HOUR)
    p2 = hand.tick(hand.price(server, OCT_1_2021 + 2 * HOUR))
    await ex.create_order(BTC, "market", "sell", 0.03)  # closes 0.01, opens a 0.02 short
    [pos] = await ex.fetch_positions([BTC])
    assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("short", 0.02, float(p2))
    fees = Decimal("0.01") * p1 * TAKER + Decimal("0.03") * p2 * TAKER
    assert wallet_balance(server) == START + Decimal("0.01") * (p2 - p1) - fees
    [closing_fill] = [e for e in server.executions() if e["side"] == "Sell"]
    assert closing_fill["closedSize"] == "0.010"


async def test_hedge_mode_holds_long_and_short(make_server: Any, make_trader: Any,
                                               hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    await ex.set_position_mode(True, BTC)
    with pytest.raises(ccxt.NoChange):  # 110025: already hedged
        await ex.set_position_mode(True, BTC)
    with pytest.raises(ccxt.BadRequest, match="position idx not match position mode"):
        await ex.create_order(BTC, "market", "buy", 0.01)  # no positionIdx in hedge mode
    p1 = hand.tick(hand.price(server, OCT_1_2021))
    await ex.create_order(BTC, "market", "buy", 0.02, params={"hedged": True})
    server.clock.advance(HOUR)
    p2 = hand.tick(hand.price(server, OCT_1_2021 + HOUR))
    await ex.create_order(BTC, "market", "sell", 0.01, params={"hedged": True})
    positions = {p["side"]: p for p in await ex.fetch_positions([BTC])}
    assert {s: (p["contracts"], p["entryPrice"], p["hedged"]) for s, p in positions.items()} \
        == {"long": (0.02, float(p1), True), "short": (0.01, float(p2), True)}
    assert Decimal(server.wallet()["totalInitialMargin"]) == \
        (Decimal("0.02") * p1 + Decimal("0.01") * p2) / 10
    with pytest.raises(ccxt.BadRequest, match="110024"):  # positions exist
        await ex.set_position_mode(False, BTC)
    # closing the long in hedge mode: a Sell on positionIdx 1 (ccxt: hedged + reduceOnly)
    await ex.create_order(BTC, "market", "sell", 0.05, params={"hedged": True,
                                                                "reduceOnly": True})
    [short] = await ex.fetch_positions()
    assert (short["side"], short["contracts"]) == ("short", 0.01)
    assert [o["positionIdx"] for o in server.orders()] == [1, 2, 1]
    await ex.create_order(BTC, "market", "buy", 0.01, params={"hedged": True,
                                                               "reduceOnly": True})
    assert server.positions() == []
    await ex.set_position_mode(False, BTC)
    await ex.create_order(BTC, "market", "buy", 0.01)
    assert [p["positionIdx"] for p in server.positions()] == [0]


async def test_set_leverage_changes_margin(make_server: Any, make_trader: Any,
                                           hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    with pytest.raises(ccxt.BadRequest, match="110043"):  # the default is 10: not modified
        await ex.set_leverage(10, BTC)
    await ex.set_leverage(5, BTC)
    assert (await ex.fetch_leverage(BTC))["longLeverage"] == 5
    fill = hand.tick(hand.price(server, OCT_1_2021))
    await ex.create_order(BTC, "market", "buy", 0.01)
    [pos] = await ex.fetch_positions([BTC])
    assert pos["leverage"] == 5
    assert Decimal(pos["info"]["positionIM"]) == Decimal("0.01") * fill / 5
    await ex.set_leverage(1, BTC)
    # at 1x a resting 2.5 BTC buy at 40000 needs 100055 USDT (with the fee): too much
    with pytest.raises(ccxt.InsufficientFunds):
        await ex.create_order(BTC, "limit", "buy", 2.5, 40000.0)
    await ex.set_leverage(10, BTC)
    await ex.create_order(BTC, "limit", "buy", 2.5, 40000.0)
    with pytest.raises(ccxt.BadRequest, match="leverage"):
        await ex.set_leverage(101, BTC)


async def test_attached_stop_loss_closes_the_position_when_crossed(make_server: Any,
                                                                   make_trader: Any,
                                                                   hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    stop = Decimal("43500.0")
    entry = hand.tick(hand.price(server, OCT_1_2021))
    await ex.create_order(BTC, "market", "buy", 0.01, params={"stopLoss": {
        "triggerPrice": float(stop)}})
    [pos] = await ex.fetch_positions([BTC])
    assert pos["stopLossPrice"] == float(stop)
    rows = server.true_candles("BTCUSDT", "1m", OCT_1_2021, OCT_1_2021 + 4 * HOUR)
    crossing = next(r for r in rows if min(Decimal(r.open), Decimal(r.close)) <= stop)
    server.clock.set(crossing.open_time_ms - 1)
    assert len(await ex.fetch_positions()) == 1
    server.clock.set(crossing.open_time_ms + MINUTE)
    assert await ex.fetch_positions() == []

    entry_order, stop_order = server.orders()
    assert (stop_order["stopOrderType"], stop_order["createType"], stop_order["orderStatus"],
            stop_order["reduceOnly"]) == ("StopLoss", "CreateByStopLoss", "Filled", True)
    # it fills at the path price when the stop is first reached: the stop itself, or the
    # candle's open if the price jumped past it between candles
    gap = Decimal(crossing.open) <= stop
    exit_price = hand.tick(Decimal(crossing.open)) if gap else stop
    assert Decimal(stop_order["avgPrice"]) == exit_price
    closed = await ex.fetch_closed_order(stop_order["orderId"], BTC)
    assert (closed["side"], closed["stopLossPrice"], closed["type"]) == ("sell", float(stop),
                                                                         "market")
    fees = Decimal("0.01") * (entry + exit_price) * TAKER
    assert wallet_balance(server) == START + Decimal("0.01") * (exit_price - entry) - fees
    assert entry_order["stopLoss"] == "43500"


async def test_take_profit_set_on_the_position(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    request = {"category": "linear", "symbol": "BTCUSDT", "positionIdx": 0}
    with pytest.raises(ccxt.BadRequest, match="zero position"):
        await ex.private_post_v5_position_trading_stop({**request, "takeProfit": "44500"})
    await ex.create_order(BTC, "market", "buy", 0.01)
    with pytest.raises(ccxt.BadRequest, match="takeProfit 43000 set for Buy"):
        await ex.private_post_v5_position_trading_stop({**request, "takeProfit": "43000"})
    await ex.private_post_v5_position_trading_stop({**request, "takeProfit": "44500"})
    [pos] = await ex.fetch_positions([BTC])
    assert pos["takeProfitPrice"] == 44500
    rows = server.true_candles("BTCUSDT", "1m", OCT_1_2021, OCT_1_2021 + 12 * HOUR)
    crossing = next(r for r in rows if max(Decimal(r.open), Decimal(r.close)) >= 44500)
    server.clock.set(crossing.open_time_ms + MINUTE)
    assert server.positions() == []
    tp = server.orders()[-1]
    assert (tp["createType"], tp["side"]) == ("CreateByTakeProfit", "Sell")
    assert Decimal(tp["avgPrice"]) >= 44500
    assert int(tp["createdTime"]) >= crossing.open_time_ms


async def test_stops_on_the_wrong_side_are_refused(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    with pytest.raises(ccxt.BadRequest, match="stopLoss 45000 set for Buy"):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"stopLoss": 45000.0})
    with pytest.raises(ccxt.BadRequest, match="takeProfit 40000 set for Buy"):
        await ex.create_order(BTC, "limit", "buy", 0.01, 43000.0, {"takeProfit": 40000.0})
    assert server.orders() == []
