"""The Bybit private WebSocket through ccxt.pro (watch_orders, watch_my_trades, watch_positions,
watch_balance) and its protocol with raw frames (auth, subscribe, ping)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import ccxt
import pytest

from meridian_fake_exchange import TEST_API_KEY, TEST_API_SECRET
from meridian_fake_exchange.testing import receive_json, ws_url

HOUR, MINUTE = 3_600_000, 60_000
OCT_1_2021 = 1_633_046_400_000
BTC = "BTC/USDT:USDT"


async def watch_until(watch: Any, done: Any, within_s: float = 3.0) -> Any:
    """Call a ccxt.pro watch method until `done(result)` holds."""
    async def loop() -> Any:
        while True:
            result = await watch()
            if done(result):
                return result
    return await asyncio.wait_for(loop(), within_s)


async def test_watch_orders_and_my_trades_follow_the_clock(make_server: Any,
                                                           make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server, pro=True)
    orders = asyncio.ensure_future(ex.watch_orders(BTC))
    trades = asyncio.ensure_future(ex.watch_my_trades(BTC))
    await asyncio.sleep(0.2)  # subscribed
    created = await ex.create_order(BTC, "limit", "buy", 0.01, 43600.0,
                                    {"clientOrderId": "ws-1"})
    first = await asyncio.wait_for(orders, 3)
    assert [(o["id"], o["clientOrderId"], o["status"]) for o in first] == [
        (created["id"], "ws-1", "open")]
    assert not trades.done()
    server.clock.advance(3 * HOUR)  # crosses 43600; no REST call: the stream drives it
    filled = await watch_until(lambda: ex.watch_orders(BTC),
                               lambda r: r[-1]["status"] == "closed")
    assert (filled[-1]["id"], filled[-1]["average"]) == (created["id"], 43600.0)
    [trade] = await asyncio.wait_for(trades, 3)
    assert (trade["order"], trade["price"], trade["takerOrMaker"]) == (created["id"], 43600.0,
                                                                      "maker")


async def test_watch_positions_and_balance(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server, pro=True)
    assert await asyncio.wait_for(ex.watch_positions([BTC]), 3) == []  # the REST snapshot
    positions = asyncio.ensure_future(ex.watch_positions([BTC]))
    balance = asyncio.ensure_future(ex.watch_balance())
    await asyncio.sleep(0.2)
    await ex.create_order(BTC, "market", "buy", 0.01, params={"stopLoss": 43500.0})
    [long] = await asyncio.wait_for(positions, 3)
    assert (long["side"], long["contracts"], long["stopLossPrice"]) == ("long", 0.01, 43500.0)
    wallet = await asyncio.wait_for(balance, 3)
    assert 99_000 < wallet["USDT"]["total"] < 100_000
    server.clock.advance(4 * HOUR)  # the stop loss closes it
    closed = await watch_until(lambda: ex.watch_positions([BTC]),
                               lambda r: r[-1]["contracts"] == 0)
    assert closed[-1]["symbol"] == BTC


async def test_partial_fills_are_pushed_piece_by_piece(make_server: Any,
                                                       make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server, pro=True)
    pending = asyncio.ensure_future(ex.watch_orders(BTC))
    await asyncio.sleep(0.2)
    server.partial_fills(2)
    await ex.create_order(BTC, "market", "buy", 0.02)
    first = await asyncio.wait_for(pending, 3)
    assert (first[-1]["info"]["orderStatus"], first[-1]["filled"]) == ("PartiallyFilled", 0.01)
    server.clock.advance(1000)
    done = await watch_until(lambda: ex.watch_orders(BTC), lambda r: r[-1]["filled"] == 0.02)
    assert done[-1]["status"] == "closed"


async def test_wrong_secret_fails_authentication(make_server: Any, make_trader: Any) -> None:
    server = await make_server(OCT_1_2021)
    ex = await make_trader(server, pro=True, load=False)
    await ex.load_markets()
    ex.secret = "not-the-secret"  # REST calls of load_markets are done; now the stream
    with pytest.raises(ccxt.AuthenticationError):
        await asyncio.wait_for(ex.watch_orders(BTC), 3)


async def test_private_stream_protocol_with_raw_frames(make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021)
    async with http.ws_connect(ws_url(server, "/stream.bybit.com/v5/private")) as ws:
        await ws.send_json({"op": "subscribe", "args": ["order"], "req_id": "1"})
        refused = await receive_json(ws)
        assert (refused["success"], refused["ret_msg"]) == (False, "Request not authorized")
        expires = str(OCT_1_2021 + 10_000)
        signature = hmac.new(TEST_API_SECRET.encode(), f"GET/realtime{expires}".encode(),
                             hashlib.sha256).hexdigest()
        await ws.send_json({"op": "auth", "args": [TEST_API_KEY, str(OCT_1_2021 - 1),
                                                   signature]})
        assert (await receive_json(ws))["success"] is False  # expired (and signed otherwise)
        await ws.send_json({"op": "auth", "args": [TEST_API_KEY, expires, signature]})
        assert (await receive_json(ws))["success"] is True
        await ws.send_json({"op": "subscribe", "args": ["order.linear", "execution"]})
        assert (await receive_json(ws))["success"] is True
        await ws.send_json({"op": "subscribe", "args": ["orderbook.50.BTCUSDT"]})
        assert (await receive_json(ws))["success"] is False
        await ws.send_json({"op": "ping", "req_id": "p"})
        pong = await receive_json(ws)
        assert (pong["op"], pong["req_id"], pong["args"]) == ("pong", "p", [str(OCT_1_2021)])
        account = server.engine.accounts[TEST_API_KEY]
        server.engine.place(account, {"category": "linear", "symbol": "BTCUSDT", "side": "Buy",
                                      "orderType": "Market", "qty": "0.01"}, OCT_1_2021)
        pushes = [await receive_json(ws), await receive_json(ws)]
        by_topic = {p["topic"]: p["data"] for p in pushes}
        assert by_topic["execution"][0]["execQty"] == "0.010"
        assert by_topic["order.linear"][0]["orderStatus"] == "Filled"
        assert by_topic["order.linear"][0]["category"] == "linear"
