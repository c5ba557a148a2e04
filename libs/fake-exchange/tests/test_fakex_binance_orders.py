"""Binance USDT-M futures private trading through real ccxt (`binanceusdm`, and `binance` with
defaultType future): fills, fees, wallet and position arithmetic checked by hand in Decimal,
resting limits, cancels and look-ups by client order id, hedge mode, leverage, the error codes
and the ccxt classes they map to, and the order faults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support
import pytest
from aiohttp import ClientSession

from meridian_common.ccxt_urls import reroute_urls
from meridian_fake_exchange import TEST_API_KEY, TEST_API_SECRET, FakeExchange
from meridian_fake_exchange.testing import follow_fake_clock

HOUR, MINUTE = 3_600_000, 60_000
OCT_1_2021 = 1_633_046_400_000      # BTC ~43820, falls to ~43380 by 03:00, ~48000 by 12:00
BTC = "BTC/USDT:USDT"
START = Decimal(100_000)
TAKER, MAKER = Decimal("0.0005"), Decimal("0.0002")
LEVERAGE = Decimal(20)              # Binance's default

Trader = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_binance() -> AsyncIterator[Trader]:
    """Keyed ccxt `binanceusdm` clients (or `binance` with defaultType future) rerouted to a
    server, with the venue's error maps kept (reroute_urls does it), signing with the fake
    clock unless follow_clock=False (sync_time=True: take the offset from /fapi/v1/time)."""
    clients: list[Any] = []

    async def factory(server: FakeExchange, *, name: str = "binanceusdm",
                      api_key: str = TEST_API_KEY, secret: str = TEST_API_SECRET,
                      follow_clock: bool = True, sync_time: bool = False, load: bool = True,
                      error_maps: bool = True) -> Any:
        options: dict[str, Any] = {"defaultType": "future"} if name == "binance" else {}
        exchange = getattr(ccxt.async_support, name)({
            "apiKey": api_key, "secret": secret, "enableRateLimit": False, "options": options})
        reroute_urls(exchange, server.base_url, keep_error_maps=error_maps)
        if follow_clock:
            follow_fake_clock(exchange, server.clock)
        clients.append(exchange)
        if sync_time:  # before load_markets: with keys it signs /sapi/v1/capital/config/getall
            await exchange.load_time_difference()
        if load:
            await exchange.load_markets()
        return exchange

    yield factory
    for exchange in clients:
        await exchange.close()


def account(server: FakeExchange) -> dict[str, Any]:
    return server.wallet(venue="binance")


async def test_market_order_fills_and_moves_position_and_wallet_exactly(
        make_server: Any, make_binance: Trader, hand: Any) -> None:
    t0 = OCT_1_2021 + 30_000  # half-way through a 1m candle
    server = await make_server(t0)
    ex = await make_binance(server)
    last = hand.price(server, t0)
    fill = hand.tick(last)
    assert (last, fill) == (Decimal("43822.87"), Decimal("43822.9"))
    qty = Decimal("0.02")

    created = await ex.create_order(BTC, "market", "buy", 0.02, params={"clientOrderId": "m-1"})
    assert (created["clientOrderId"], created["status"], created["filled"]) == \
        ("m-1", "closed", 0.02)  # ccxt asks newOrderRespType=RESULT
    order = await ex.fetch_order(None, BTC, {"clientOrderId": "m-1"})  # by client id
    assert (order["id"], order["status"], order["average"]) == (created["id"], "closed",
                                                                float(fill))
    assert order["info"]["status"] == "FILLED"
    assert Decimal(order["info"]["cumQuote"]) == qty * fill
    assert isinstance(order["info"]["orderId"], int)

    [trade] = await ex.fetch_my_trades(BTC, params={"orderId": order["id"]})
    fee1 = qty * fill * TAKER
    assert (trade["order"], trade["side"], trade["takerOrMaker"]) == (order["id"], "buy",
                                                                      "taker")
    assert Decimal(trade["info"]["commission"]) == fee1
    assert trade["fee"]["currency"] == "USDT"
    assert Decimal(trade["info"]["realizedPnl"]) == 0

    [pos] = await ex.fetch_positions([BTC])
    assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("long", 0.02, float(fill))
    assert Decimal(pos["info"]["unRealizedProfit"]) == qty * (last - fill)
    assert Decimal(pos["info"]["positionInitialMargin"]) == qty * fill / LEVERAGE
    balance = await ex.fetch_balance()
    margin_balance = START - fee1 + qty * (last - fill)
    assert balance["USDT"]["total"] == float(margin_balance)
    assert balance["USDT"]["used"] == float(qty * fill / LEVERAGE)
    assert balance["USDT"]["free"] == float(margin_balance - qty * fill / LEVERAGE)
    assert Decimal(account(server)["totalWalletBalance"]) == START - fee1

    server.clock.advance(HOUR)  # close with a reduce-only market sell at the new price
    fill2 = hand.tick(hand.price(server, t0 + HOUR))
    assert fill2 != fill
    await ex.create_order(BTC, "market", "sell", 0.02, params={"reduceOnly": True,
                                                               "clientOrderId": "m-2"})
    fee2, realised = qty * fill2 * TAKER, qty * (fill2 - fill)
    trades = await ex.fetch_my_trades(BTC)
    assert [(t["side"], t["price"]) for t in trades] == [("buy", float(fill)),
                                                         ("sell", float(fill2))]
    assert Decimal(trades[1]["info"]["realizedPnl"]) == realised  # before the commission
    assert Decimal(account(server)["totalWalletBalance"]) == START - fee1 - fee2 + realised
    assert await ex.fetch_positions() == []
    truth = server.orders(venue="binance")
    assert [(o["clientOrderId"], o["status"], o["reduceOnly"]) for o in truth] == [
        ("m-1", "FILLED", False), ("m-2", "FILLED", True)]
    assert [e["commission"] for e in server.executions(venue="binance")] == \
        [t["info"]["commission"] for t in trades]
    assert server.orders() == []  # the Bybit account of the same key is a separate one
    assert Decimal(server.wallet()["totalWalletBalance"]) == START


async def test_resting_limit_fills_as_maker_when_the_clock_moves_the_price_across(
        make_server: Any, make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    level = Decimal("43600.0")
    rows = server.true_candles("BTCUSDT", "1m", OCT_1_2021, OCT_1_2021 + 3 * HOUR)
    crossing = next(r for r in rows if min(Decimal(r.open), Decimal(r.close)) <= level)

    order = await ex.create_order(BTC, "limit", "buy", 0.01, float(level),
                                  {"clientOrderId": "l-1"})
    assert (order["status"], order["info"]["timeInForce"]) == ("open", "GTC")
    server.clock.set(crossing.open_time_ms - 1)
    [still] = await ex.fetch_open_orders(BTC)
    assert (still["clientOrderId"], still["filled"]) == ("l-1", 0.0)

    server.clock.set(crossing.open_time_ms + MINUTE)
    done = await ex.fetch_order(None, BTC, {"clientOrderId": "l-1"})
    assert (done["status"], done["average"], done["filled"]) == ("closed", float(level), 0.01)
    assert await ex.fetch_open_orders(BTC) == []
    [trade] = await ex.fetch_my_trades(BTC, params={"orderId": done["id"]})
    assert trade["takerOrMaker"] == "maker"
    assert crossing.open_time_ms <= trade["timestamp"] < crossing.open_time_ms + MINUTE
    fee = Decimal("0.01") * level * MAKER
    assert Decimal(trade["info"]["commission"]) == fee
    assert Decimal(account(server)["totalWalletBalance"]) == START - fee


async def test_cancel_by_client_order_id_and_not_found_answers(make_server: Any,
                                                                make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    await ex.create_order(BTC, "limit", "buy", 0.01, 40000.0, {"clientOrderId": "c-1"})
    canceled = await ex.cancel_order(None, BTC, {"clientOrderId": "c-1"})
    assert (canceled["clientOrderId"], canceled["status"]) == ("c-1", "canceled")
    assert (await ex.fetch_order(None, BTC, {"clientOrderId": "c-1"}))["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        await ex.cancel_order(None, BTC, {"clientOrderId": "c-1"})  # no longer open
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        await ex.fetch_order(None, BTC, {"clientOrderId": "never-sent"})
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        await ex.fetch_order("123", BTC)
    ids = [(await ex.create_order(BTC, "limit", "buy", 0.01, p))["id"] for p in (40000, 40100)]
    await ex.cancel_all_orders(BTC)
    assert await ex.fetch_open_orders(BTC) == []
    assert {o["orderId"]: o["status"] for o in server.orders(venue="binance")} == {
        int(canceled["id"]): "CANCELED", int(ids[0]): "CANCELED", int(ids[1]): "CANCELED"}


async def test_duplicate_client_order_id_among_open_orders(make_server: Any,
                                                           make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    await ex.create_order(BTC, "limit", "buy", 0.01, 40000.0, {"clientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    assert server.create_requests("dup-1") == 2  # seen twice, one order kept
    assert server.create_requests("dup-1", venue="bybit") == 0
    assert [o["clientOrderId"] for o in server.orders(venue="binance")] == ["dup-1"]
    # Binance wants client ids unique among OPEN orders only: once closed, the id is free
    await ex.cancel_order(None, BTC, {"clientOrderId": "dup-1"})
    again = await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "dup-1"})
    assert (await ex.fetch_order(None, BTC, {"clientOrderId": "dup-1"}))["id"] == again["id"]
    with pytest.raises(ccxt.BadRequest, match="-4015"):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "x" * 37})
    plain = await make_binance(server, error_maps=False)  # without the kept maps...
    await plain.create_order(BTC, "limit", "buy", 0.01, 40000.0, {"clientOrderId": "dup-2"})
    with pytest.raises(ccxt.ExchangeError) as caught:
        await plain.create_order(BTC, "limit", "buy", 0.01, 40000.0, {"clientOrderId": "dup-2"})
    assert type(caught.value) is ccxt.ExchangeError  # ...ccxt loses the USDT-M error map


async def test_order_rejections_map_to_the_ccxt_classes(make_server: Any,
                                                        make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    with pytest.raises(ccxt.InsufficientFunds, match="-2019"):  # 50 BTC: 2.19M at 20x
        await ex.create_order(BTC, "market", "buy", 50)
    with pytest.raises(ccxt.InvalidOrder, match=r"-4164.*smaller than 100"):
        await ex.create_order(BTC, "market", "buy", 0.001)
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # nothing to reduce
        await ex.create_order(BTC, "market", "sell", 0.01, params={"reduceOnly": True})
    raw = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0105"}
    with pytest.raises(ccxt.BadRequest, match="-1111"):  # ccxt would have rounded it
        await ex.fapiPrivatePostOrder(raw)
    with pytest.raises(ccxt.BadRequest, match="-1111"):
        await ex.fapiPrivatePostOrder({**raw, "type": "LIMIT", "quantity": "0.010",
                                       "price": "40000.05", "timeInForce": "GTC"})
    with pytest.raises(ccxt.BadRequest, match=r"-1102.*timeInForce"):
        await ex.fapiPrivatePostOrder({**raw, "type": "LIMIT", "quantity": "0.010",
                                       "price": "40000"})
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        await ex.fapiPrivatePostOrder({**raw, "symbol": "DOGEUSDT"})
    with pytest.raises(ccxt.OrderNotFillable, match="-5022"):  # post-only that would take
        await ex.create_order(BTC, "limit", "sell", 0.01, 40000.0, {"postOnly": True})
    with pytest.raises(ccxt.OrderNotFillable, match="-5021"):  # FOK that cannot fill now
        await ex.create_order(BTC, "limit", "buy", 0.01, 40000.0, {"timeInForce": "FOK"})
    with pytest.raises(ccxt.InvalidOrder, match="-4120"):  # conditional: the algo API
        await ex.fapiPrivatePostOrder({**raw, "type": "STOP_MARKET", "stopPrice": "40000"})
    assert server.orders(venue="binance") == []
    no_id = await ex.fapiPrivatePostOrder({**raw, "quantity": "0.010"})
    assert no_id["clientOrderId"].startswith("x-cvBPrNm9")  # ccxt names even raw creates
    assert no_id["status"] == "NEW"  # newOrderRespType ACK (the default): as accepted


async def test_authentication_errors(make_server: Any, make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        await make_binance(server, secret="wrong")  # load_markets signs the sapi calls
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        await make_binance(server, api_key="nobody")
    async with ClientSession() as http:  # no key header at all
        url = f"{server.base_url}/fapi.binance.com/fapi/v1/openOrders?timestamp=1&signature=x"
        async with http.get(url) as response:
            assert response.status == 401
            assert await response.json() == {"code": -2014, "msg": "API-key format invalid."}


async def test_stale_timestamp_is_invalid_nonce_until_the_client_resyncs(
        make_server: Any, make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server, follow_clock=False, sync_time=True)
    await ex.fetch_balance()
    server.clock.advance(HOUR)  # the client's offset is an hour stale now
    with pytest.raises(ccxt.InvalidNonce, match=r"-1021.*recvWindow"):
        await ex.fetch_balance()
    server.clock.set(OCT_1_2021 - HOUR)  # and now an hour ahead
    with pytest.raises(ccxt.InvalidNonce, match=r"-1021.*ahead"):
        await ex.fetch_balance()
    await ex.load_time_difference()
    assert (await ex.fetch_balance())["USDT"]["total"] == float(START)


async def test_accept_then_timeout_then_found_by_client_order_id(
        make_server: Any, make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    ex.timeout = 300  # ms
    server.accept_then_timeout(n=1, delay_s=5.0)
    with pytest.raises(ccxt.RequestTimeout):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "t-1"})
    ex.timeout = 10_000
    order = await ex.fetch_order(None, BTC, {"clientOrderId": "t-1"})
    assert (order["status"], order["filled"], order["clientOrderId"]) == ("closed", 0.01, "t-1")
    [trade] = await ex.fetch_my_trades(BTC, params={"orderId": order["id"]})
    assert trade["amount"] == 0.01
    assert server.create_requests("t-1") == 1


async def test_hedge_mode_with_position_side(make_server: Any, make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    with pytest.raises(ccxt.OperationRejected, match="-4059"):
        await ex.set_position_mode(False)  # already one-way
    await ex.set_position_mode(True)
    assert (await ex.fetch_position_mode(BTC))["hedged"] is True
    with pytest.raises(ccxt.OperationRejected, match="-4061"):  # BOTH in hedge mode
        await ex.create_order(BTC, "market", "buy", 0.01)
    long = await ex.create_order(BTC, "market", "buy", 0.01, params={"hedged": True})
    short = await ex.create_order(BTC, "market", "sell", 0.02, params={"hedged": True})
    assert (long["info"]["positionSide"], short["info"]["positionSide"]) == ("LONG", "SHORT")
    positions = sorted(await ex.fetch_positions([BTC]), key=lambda p: p["side"])
    assert [(p["side"], p["contracts"], p["hedged"]) for p in positions] == [
        ("long", 0.01, True), ("short", 0.02, True)]
    with pytest.raises(ccxt.OperationRejected, match="-4068"):
        await ex.set_position_mode(False)  # positions are open
    with pytest.raises(ccxt.BadRequest, match=r"-1106.*reduceOnly"):  # not in hedge mode
        await ex.fapiPrivatePostOrder({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET",
                                       "quantity": "0.010", "positionSide": "LONG",
                                       "reduceOnly": "true"})
    # ccxt turns reduceOnly + hedged into the closing positionSide (LONG for a sell)
    close = await ex.create_order(BTC, "market", "sell", 0.01,
                                  params={"hedged": True, "reduceOnly": True})
    assert close["info"]["positionSide"] == "LONG"
    [left] = await ex.fetch_positions([BTC])
    assert (left["side"], left["contracts"]) == ("short", 0.02)
    with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # the long is gone
        await ex.create_order(BTC, "market", "sell", 0.01,
                              params={"hedged": True, "reduceOnly": True})
    assert [p["positionSide"] for p in server.positions(venue="binance")] == ["SHORT"]


async def test_set_leverage_changes_margin(make_server: Any, make_binance: Trader,
                                           hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    answer = await ex.set_leverage(5, BTC)
    assert (answer["leverage"], answer["symbol"]) == (5, "BTCUSDT")
    assert (await ex.fetch_leverage(BTC))["longLeverage"] == 5
    assert (await ex.set_leverage(5, BTC))["leverage"] == 5  # unchanged: answered normally
    with pytest.raises(ccxt.InsufficientFunds, match="-2019"):  # 12 BTC = 526k > 5 x 100k
        await ex.create_order(BTC, "market", "buy", 12)
    await ex.create_order(BTC, "market", "buy", 0.1)
    fill = hand.tick(hand.price(server, OCT_1_2021))
    [pos] = await ex.fetch_positions([BTC])
    assert Decimal(pos["info"]["positionInitialMargin"]) == Decimal("0.1") * fill / 5
    with pytest.raises(ccxt.BadRequest, match="-4028"):
        await ex.fapiPrivatePostLeverage({"symbol": "BTCUSDT", "leverage": 200})
    await ex.set_leverage(20, BTC)
    await ex.create_order(BTC, "market", "buy", 12)  # fits again at 20x


async def test_partial_fills_and_injected_rejections(make_server: Any, make_binance: Trader,
                                                     hand: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    server.partial_fills(3)
    await ex.create_order(BTC, "market", "buy", 0.03, params={"clientOrderId": "p-1"})
    seen = []
    for _ in range(3):
        order = await ex.fetch_order(None, BTC, {"clientOrderId": "p-1"})
        seen.append((order["info"]["status"], order["filled"], order["status"]))
        server.clock.advance(1000)
    assert seen == [("PARTIALLY_FILLED", 0.01, "open"), ("PARTIALLY_FILLED", 0.02, "open"),
                    ("FILLED", 0.03, "closed")]
    trades = await ex.fetch_my_trades(BTC, params={"orderId": order["id"]})
    assert [t["amount"] for t in trades] == [0.01, 0.01, 0.01]
    prices = [hand.tick(hand.price(server, OCT_1_2021 + k * 1000)) for k in range(3)]
    assert [Decimal(t["info"]["price"]) for t in trades] == prices

    server.reject_orders(-1008, "Server is currently overloaded with other requests. Please "
                                "try again in a few minutes.", status=503)
    with pytest.raises(ccxt.OperationFailed, match="-1008"):
        await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "r-1"})
    assert server.create_requests("r-1") == 1
    with pytest.raises(ccxt.OrderNotFound):  # rejected: not recorded
        await ex.fetch_order(None, BTC, {"clientOrderId": "r-1"})


async def test_binance_class_with_default_type_future(make_server: Any,
                                                      make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server, name="binance")  # loads spot, linear and inverse markets
    await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "b-1"})
    order = await ex.fetch_order(None, BTC, {"clientOrderId": "b-1"})
    assert order["status"] == "closed"
    assert (await ex.fetch_balance())["USDT"]["used"] > 0
    [pos] = await ex.fetch_positions([BTC])
    assert pos["contracts"] == 0.01
    with pytest.raises(ccxt.InsufficientFunds):
        await ex.create_order(BTC, "market", "buy", 50)
    requests = server.stats.snapshot()["requests"]
    assert requests["api.binance.com/sapi/v1/capital/config/getall"] == 1


async def test_admin_truth_for_binance(make_server: Any, make_binance: Trader) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_binance(server)
    await ex.create_order(BTC, "market", "buy", 0.01, params={"clientOrderId": "a-1"})
    async with ClientSession() as http:
        base = f"{server.base_url}/_admin"
        async with http.get(f"{base}/orders?venue=binance") as response:
            body = await response.json()
        assert [o["clientOrderId"] for o in body["orders"]] == ["a-1"]
        assert body["create_requests"] == {"a-1": 1}
        async with http.get(f"{base}/positions?venue=binance") as response:
            [pos] = (await response.json())["positions"]
        assert (pos["positionAmt"], pos["account"]) == ("0.010", TEST_API_KEY)
        async with http.get(f"{base}/wallet?venue=binance") as response:
            assert "assets" in (await response.json())["wallet"]
        async with http.get(f"{base}/orders") as response:  # Bybit by default
            assert (await response.json())["orders"] == []
