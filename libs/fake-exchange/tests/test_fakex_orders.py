"""Bybit private trading through real ccxt: fills, fees, wallet and position arithmetic (checked
by hand in Decimal), resting limits, partial fills, cancels, and the error codes ccxt maps."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from meridian_fake_exchange import TEST_API_KEY

HOUR, MINUTE = 3_600_000, 60_000
OCT_1_2021 = 1_633_046_400_000      # BTC ~43820, falls to ~43380 by 03:00, ~48000 by 12:00
BTC = "BTC/USDT:USDT"
START = Decimal(100_000)
TAKER, MAKER = Decimal("0.00055"), Decimal("0.0002")


def usdt(server: Any) -> dict[str, Any]:
    return next(c for c in server.wallet()["coin"] if c["coin"] == "USDT")


async def test_market_order_moves_position_and_wallet_exactly(make_server: Any,
                                                              make_trader: Any,
                                                              hand: Any) -> None:
    t0 = OCT_1_2021 + 30_000  # half-way through a 1m candle: price half-way open -> close
    server = await make_server(t0)
    ex = await make_trader(server)
    last = hand.price(server, t0)
    fill = hand.tick(last)
    assert last == Decimal("43822.87")  # (43820.01 + 43825.73) / 2
    qty = Decimal("0.02")

    created = await ex.create_order(BTC, "market", "buy", 0.02, params={"clientOrderId": "m-1"})
    assert created["clientOrderId"] == "m-1"
    order = await ex.fetch_order(created["id"], BTC, {"acknowledged": True})
    assert (order["status"], order["filled"], order["remaining"]) == ("closed", 0.02, 0.0)
    assert order["average"] == float(fill)
    fee1 = qty * fill * TAKER
    assert Decimal(order["info"]["cumExecFee"]) == fee1
    assert order["info"]["orderStatus"] == "Filled"

    [pos] = await ex.fetch_positions([BTC])
    assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("long", 0.02, float(fill))
    assert pos["leverage"] == 10
    assert Decimal(pos["info"]["positionIM"]) == qty * fill / 10
    assert Decimal(pos["info"]["unrealisedPnl"]) == qty * (last - fill)
    assert Decimal(usdt(server)["walletBalance"]) == START - fee1
    balance = await ex.fetch_balance()
    assert balance["USDT"]["used"] == float(qty * fill / 10)  # position margin
    assert balance["USDT"]["total"] == float(START - fee1)

    server.clock.advance(HOUR)  # the price moved: close the long with a market sell
    fill2 = hand.tick(hand.price(server, t0 + HOUR))
    assert fill2 != fill
    await ex.create_order(BTC, "market", "sell", 0.02, params={"reduceOnly": True})
    fee2 = qty * fill2 * TAKER
    realised = qty * (fill2 - fill)
    assert Decimal(usdt(server)["walletBalance"]) == START - fee1 - fee2 + realised
    assert Decimal(usdt(server)["cumRealisedPnl"]) == realised - fee1 - fee2
    balance = await ex.fetch_balance()
    assert balance["USDT"]["total"] == float(START - fee1 - fee2 + realised)
    assert balance["USDT"]["used"] == 0
    assert await ex.fetch_positions() == []  # by settleCoin: open positions only
    [flat] = await ex.fetch_positions([BTC])  # by symbol: the empty position too
    assert flat["contracts"] == 0

    trades = await ex.fetch_my_trades(BTC)
    assert [(t["side"], t["price"], t["takerOrMaker"]) for t in trades] == [
        ("buy", float(fill), "taker"), ("sell", float(fill2), "taker")]
    assert [Decimal(t["info"]["execFee"]) for t in trades] == [fee1, fee2]
    assert [t["timestamp"] for t in trades] == [t0, t0 + HOUR]
    assert [e["execFee"] for e in server.executions()] == [t["info"]["execFee"] for t in trades]


async def test_resting_limit_fills_as_maker_when_the_price_crosses(make_server: Any,
                                                                    make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    level = Decimal("43600.0")
    rows = server.true_candles("BTCUSDT", "1m", OCT_1_2021, OCT_1_2021 + 3 * HOUR)
    crossing = next(r for r in rows if min(Decimal(r.open), Decimal(r.close)) <= level)
    assert crossing.open_time_ms > OCT_1_2021 + 10 * MINUTE

    order = await ex.create_order(BTC, "limit", "buy", 0.01, float(level))
    assert (await ex.fetch_open_order(order["id"], BTC))["status"] == "open"
    server.clock.set(crossing.open_time_ms - 1)  # one ms before the candle that reaches it
    [still] = await ex.fetch_open_orders(BTC)
    assert (still["id"], still["filled"]) == (order["id"], 0.0)

    server.clock.set(crossing.open_time_ms + MINUTE)
    done = await ex.fetch_order(order["id"], BTC, {"acknowledged": True})
    assert (done["status"], done["average"], done["filled"]) == ("closed", float(level), 0.01)
    assert await ex.fetch_open_orders(BTC) == []
    [trade] = await ex.fetch_my_trades(BTC)
    assert trade["takerOrMaker"] == "maker"
    assert crossing.open_time_ms <= trade["timestamp"] < crossing.open_time_ms + MINUTE
    fee = Decimal("0.01") * level * MAKER
    assert Decimal(trade["info"]["execFee"]) == fee
    assert Decimal(trade["info"]["feeRate"]) == MAKER
    [pos] = server.positions()
    assert Decimal(pos["avgPrice"]) == level
    assert Decimal(usdt(server)["walletBalance"]) == START - fee


async def test_marketable_limit_takes_at_the_market_never_worse_than_its_limit(
        make_server: Any, make_trader: Any, hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    market = hand.tick(hand.price(server, OCT_1_2021))
    order = await ex.create_order(BTC, "limit", "buy", 0.01, float(market + 100))
    done = await ex.fetch_closed_order(order["id"], BTC)
    assert done["average"] == float(market)  # price improvement: fills at the market
    [trade] = await ex.fetch_my_trades(BTC)
    assert trade["takerOrMaker"] == "taker"
    post = await ex.create_order(BTC, "limit", "sell", 0.01, float(market - 100),
                                 {"postOnly": True})
    rejected = await ex.fetch_order(post["id"], BTC, {"acknowledged": True})
    assert rejected["status"] == "canceled"  # a post-only order that would take is cancelled
    assert rejected["info"]["rejectReason"] == "EC_PostOnlyWillTakeLiquidity"
    ioc = await ex.create_order(BTC, "limit", "buy", 0.01, float(market - 100),
                                {"timeInForce": "IOC"})
    assert (await ex.fetch_order(ioc["id"], BTC, {"acknowledged": True}))["status"] == \
        "canceled"


async def test_partial_fills_are_observable_then_filled(make_server: Any, make_trader: Any,
                                                        hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    server.partial_fills(3)
    created = await ex.create_order(BTC, "market", "buy", 0.03, params={"clientOrderId": "p-1"})
    seen = []
    for _ in range(3):
        order = await ex.fetch_order(created["id"], BTC, {"acknowledged": True})
        seen.append((order["info"]["orderStatus"], order["filled"], order["status"]))
        server.clock.advance(1000)
    assert seen == [("PartiallyFilled", 0.01, "open"), ("PartiallyFilled", 0.02, "open"),
                    ("Filled", 0.03, "closed")]
    trades = await ex.fetch_order_trades(created["id"], BTC)
    assert [t["amount"] for t in trades] == [0.01, 0.01, 0.01]
    assert [t["timestamp"] for t in trades] == [OCT_1_2021, OCT_1_2021 + 1000,
                                                OCT_1_2021 + 2000]
    prices = [hand.tick(hand.price(server, OCT_1_2021 + k * 1000)) for k in range(3)]
    assert [Decimal(t["info"]["execPrice"]) for t in trades] == prices
    assert Decimal(server.orders()[0]["avgPrice"]) == sum(prices) / 3
    # the fault was for one order: the next fills at once
    nxt = await ex.create_order(BTC, "market", "buy", 0.03)
    assert (await ex.fetch_order(nxt["id"], BTC, {"acknowledged": True}))["filled"] == 0.03


async def test_partial_fills_of_a_resting_limit(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    server.partial_fills(2)
    order = await ex.create_order(BTC, "limit", "buy", 0.002, 43600.0)
    server.clock.advance(3 * HOUR)  # crossed: one piece per matching step
    first = await ex.fetch_order(order["id"], BTC, {"acknowledged": True})
    assert (first["info"]["orderStatus"], first["filled"]) == ("PartiallyFilled", 0.001)
    server.clock.advance(1)
    second = await ex.fetch_order(order["id"], BTC, {"acknowledged": True})
    assert (second["status"], second["filled"], second["average"]) == ("closed", 0.002, 43600.0)


async def test_cancel_and_cancel_all(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    ids = [(await ex.create_order(BTC, "limit", "buy", 0.01, price))["id"]
           for price in (40000.0, 40100.0, 40200.0)]
    canceled = await ex.cancel_order(ids[0], BTC)
    assert canceled["id"] == ids[0]
    assert (await ex.fetch_order(ids[0], BTC, {"acknowledged": True}))["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound, match="110001"):
        await ex.cancel_order(ids[0], BTC)  # already cancelled: too late
    with pytest.raises(ccxt.OrderNotFound):
        await ex.cancel_order("no-such-order", BTC)
    assert sorted(o["id"] for o in await ex.fetch_open_orders(BTC)) == sorted(ids[1:])
    gone = await ex.cancel_all_orders(BTC)
    assert sorted(o["id"] for o in gone) == sorted(ids[1:])
    assert await ex.fetch_open_orders(BTC) == []
    statuses = {o["orderId"]: (o["orderStatus"], o["cancelType"]) for o in server.orders()}
    assert statuses == {i: ("Cancelled", "CancelByUser") for i in ids}
    canceled_list = await ex.fetch_canceled_orders(BTC)
    assert sorted(o["id"] for o in canceled_list) == sorted(ids)


async def test_duplicate_order_link_id_is_invalid_order(make_server: Any,
                                                        make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    await ex.create_order(BTC, "limit", "buy", 0.01, 40000.0, {"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="110072"):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    assert server.create_requests("dup-1") == 2  # the exchange saw the request twice...
    assert [o["orderLinkId"] for o in server.orders()] == ["dup-1"]  # ...and kept one order
    assert server.create_requests("never-sent") == 0
    with pytest.raises(ccxt.BadRequest, match="36 characters"):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "x" * 37})


async def test_margin_check_answers_110007_insufficient_funds(make_server: Any,
                                                              make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    # a resting buy at 40000 holds qty * 40000 * (1/10 + taker fee) = qty * 4022 USDT
    with pytest.raises(ccxt.InsufficientFunds, match="ab not enough for new order"):
        await ex.create_order(BTC, "limit", "buy", 25, 40000.0)  # 100550 > 100000
    big = await ex.create_order(BTC, "limit", "buy", 24, 40000.0)  # 96528 fits
    wallet = server.wallet()
    assert Decimal(wallet["totalInitialMargin"]) == 24 * Decimal(40000) * Decimal("0.10055")
    with pytest.raises(ccxt.InsufficientFunds):  # 4022 > 100000 - 96528 left
        await ex.create_order(BTC, "limit", "buy", 1, 40000.0)
    await ex.cancel_order(big["id"], BTC)
    await ex.create_order(BTC, "limit", "buy", 1, 40000.0)
    assert [o["orderStatus"] for o in server.orders()] == ["Cancelled", "New"]


async def test_bad_parameters_are_10001_bad_request(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    base = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy"}
    cases = [
        ({"orderType": "Market", "qty": "0.0015"}, "qty 0.0015 is not a multiple of qtyStep"),
        ({"orderType": "Limit", "qty": "0.001", "price": "40000.05"},
         "price 40000.05 is not a multiple of tickSize"),
        ({"orderType": "Market", "qty": "120"}, "exceeds maxMktOrderQty 119"),
        ({"orderType": "Limit", "qty": "0.001"}, "price is required"),
        ({"orderType": "Market"}, "qty is required"),
        ({"orderType": "Stop", "qty": "0.001"}, "orderType invalid"),
        ({"orderType": "Market", "qty": "0.001", "positionIdx": 1},
         "position idx not match position mode"),
    ]
    for extra, message in cases:
        with pytest.raises(ccxt.BadRequest, match=message) as caught:
            await ex.private_post_v5_order_create({**base, **extra})
        assert '"retCode":10001' in str(caught.value)
    with pytest.raises(ccxt.BadSymbol):
        await ex.private_post_v5_order_create({**base, "symbol": "DOGEUSDT",
                                               "orderType": "Market", "qty": "1"})
    with pytest.raises(ccxt.InvalidOrder, match="110094"):  # below the 5 USDT minimum value
        await ex.create_order(BTC, "limit", "buy", 0.001, 1000.0)
    assert server.orders() == []


async def test_spot_orders_balances_and_errors(make_server: Any, make_trader: Any,
                                               hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server, "spot")
    spot = "BTC/USDT"
    with pytest.raises(ccxt.InsufficientFunds, match="170131"):
        await ex.create_order(spot, "market", "buy", 10)  # ~438k USDT
    with pytest.raises(ccxt.InsufficientFunds, match="Balance insufficient"):
        await ex.create_order(spot, "market", "sell", 0.001)  # no BTC yet
    with pytest.raises(ccxt.InvalidOrder, match="170137"):
        await ex.private_post_v5_order_create({"category": "spot", "symbol": "BTCUSDT",
                                               "side": "Buy", "orderType": "Limit",
                                               "qty": "0.0000001", "price": "40000"})
    with pytest.raises(ccxt.InvalidOrder, match="170136"):  # minOrderQty 0.000048
        await ex.create_order(spot, "limit", "buy", 0.00001, 40000.0)
    price = hand.tick(hand.price(server, OCT_1_2021), "0.01")
    order = await ex.create_order(spot, "market", "buy", 0.01)
    done = await ex.fetch_order(order["id"], spot, {"acknowledged": True})
    assert (done["status"], done["filled"], done["average"]) == ("closed", 0.01, float(price))
    balance = await ex.fetch_balance()
    fee = Decimal("0.01") * Decimal("0.001")  # a spot buy pays its fee in the coin bought
    assert balance["BTC"]["total"] == float(Decimal("0.01") - fee)
    assert balance["USDT"]["total"] == float(START - Decimal("0.01") * price)
    [trade] = await ex.fetch_my_trades(spot)
    assert trade["fee"]["currency"] == "BTC"
    sell = await ex.create_order(spot, "limit", "sell", 0.009, 60000.0)  # rests, locks 0.009
    with pytest.raises(ccxt.InsufficientFunds):
        await ex.create_order(spot, "limit", "sell", 0.001, 60000.0)  # only 0.00099 free
    assert [o["id"] for o in await ex.fetch_open_orders(spot)] == [sell["id"]]


async def test_accept_then_timeout_client_times_out_but_the_order_exists(
        make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    ex.timeout = 300  # ms
    server.accept_then_timeout(n=1, delay_s=5.0)
    with pytest.raises(ccxt.RequestTimeout):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "t-1"})
    ex.timeout = 10_000
    # the executor's recovery: look the order up by its client id before re-sending
    [found] = await ex.fetch_open_orders(BTC, params={"orderLinkId": "t-1"})
    assert (found["clientOrderId"], found["status"], found["filled"]) == ("t-1", "closed", 0.01)
    [closed] = await ex.fetch_closed_orders(BTC, params={"orderLinkId": "t-1"})
    assert closed["id"] == found["id"]
    assert server.create_requests("t-1") == 1
    assert len(server.positions()) == 1

    server.accept_then_timeout(drop=True)  # the connection is cut instead of answered late
    with pytest.raises(ccxt.NetworkError):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "t-2"})
    assert [o["orderLinkId"] for o in server.orders()] == ["t-1", "t-2"]
    assert (await ex.fetch_open_orders(BTC, params={"orderLinkId": "t-2"}))[0]["filled"] == 0.01
    # a create rejected by validation is answered normally and does not use up the fault
    server.accept_then_timeout(n=1, delay_s=5.0)
    ex.timeout = 300
    with pytest.raises(ccxt.InvalidOrder, match="110072"):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "t-2"})
    with pytest.raises(ccxt.RequestTimeout):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "t-3"})


async def test_reject_orders_fault_answers_the_given_code(make_server: Any,
                                                          make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    server.reject_orders(10006, "Too many visits!", n=2)
    for _ in range(2):
        with pytest.raises(ccxt.RateLimitExceeded):
            await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "r-1"})
    assert server.orders() == []
    assert server.create_requests("r-1") == 2
    await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "r-1"})
    assert [o["orderStatus"] for o in server.orders()] == ["Filled"]
    server.reject_orders(110007, "ab not enough for new order")
    server.clear_faults()
    await ex.create_order(BTC, "market", "buy", 0.01)


async def test_background_matching_fills_while_the_clock_runs(make_server: Any,
                                                              make_trader: Any) -> None:
    server = await make_server(OCT_1_2021, speed=7200.0)  # two fake hours per real second
    ex = await make_trader(server)
    order = await ex.create_order(BTC, "limit", "buy", 0.01, 43600.0)
    state = server.engine.accounts[TEST_API_KEY].by_id[order["id"]]
    for _ in range(60):  # look at the engine's state directly: no request drives it
        if state.status == "Filled":
            break
        await asyncio.sleep(0.05)
    assert state.status == "Filled"
    assert server.clock.now_ms() < OCT_1_2021 + 6 * HOUR


async def test_admin_routes_expose_the_truth_and_order_faults(make_server: Any,
                                                              make_trader: Any,
                                                              http: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server)
    admin = f"{server.base_url}/_admin"
    async with http.post(f"{admin}/faults", json=[
            {"action": "partial_fills", "pieces": 2},
            {"action": "reject_orders", "code": 10016, "msg": "System error. Please try again"},
    ]) as r:
        assert r.status == 200
    with pytest.raises(ccxt.ExchangeError):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "a-1"})
    await ex.create_order(BTC, "market", "buy", 0.02, params={"clientOrderId": "a-1"})
    async with http.get(f"{admin}/orders") as r:
        body = await r.json()
    assert body["create_requests"] == {"a-1": 2}
    [order] = body["orders"]
    assert (order["orderLinkId"], order["orderStatus"], order["cumExecQty"]) == \
        ("a-1", "PartiallyFilled", "0.010")
    assert order["account"] == TEST_API_KEY
    server.clock.advance(1000)
    async with http.get(f"{admin}/executions", params={"api_key": TEST_API_KEY}) as r:
        assert len((await r.json())["executions"]) == 2
    async with http.get(f"{admin}/positions") as r:
        assert (await r.json())["positions"][0]["size"] == "0.020"
    async with http.get(f"{admin}/wallet") as r:
        text = await r.text()
    assert "walletBalance" in text
    assert "SECRET" not in text.upper()
    async with http.get(f"{admin}/wallet", params={"api_key": "nobody"}) as r:
        assert r.status == 400
    async with http.post(f"{admin}/faults", json={"action": "accept_then_timeout",
                                                  "drop": True}) as r:
        assert r.status == 200
    with pytest.raises(ccxt.NetworkError):
        await ex.create_order(BTC, "market", "buy", 0.01)
    async with http.post(f"{admin}/faults", json={"action": "clear"}) as r:
        assert r.status == 200
    assert server.faults.orders.timeout_left == 0
