"""WebSocket kline streams: ccxt.pro watch_ohlcv and the raw frames, driven by the fake clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import ccxt
import pytest
from aiohttp import WSMsgType

from meridian_fake_exchange.testing import CCXT_VENUES, as_ohlcv, collect, receive_json, ws_url

HOUR, MINUTE = 3_600_000, 60_000
OCT_1_2021 = 1_633_046_400_000      # 2021-10-01T00:00Z
SEP_29_2021 = 1_632_873_600_000     # 2021-09-29T00:00Z; 1h file misses 07:00 and 08:00
IDS = [f"{name}-{kind}" for name, kind, _ in CCXT_VENUES]


async def watch_until(exchange: Any, symbol: str, timeframe: str,
                      done: Callable[[dict[int, list[float]]], bool],
                      within_s: float = 3.0) -> dict[int, list[float]]:
    """Call watch_ohlcv until ccxt's candle cache (by open time) satisfies `done`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        cache = exchange.ohlcvs.get(symbol, {}).get(timeframe) or []
        by_time = {row[0]: row for row in cache}
        if done(by_time):
            return by_time
        if loop.time() > deadline:
            raise TimeoutError(f"ccxt cache never satisfied the condition: {sorted(by_time)}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exchange.watch_ohlcv(symbol, timeframe), 0.2)


def bybit_final(frame: dict[str, Any]) -> bool:
    return bool(frame.get("data")) and frame["data"][0]["confirm"]


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_watch_ohlcv_gets_forming_then_final_values(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    server = await make_server(OCT_1_2021 + 30 * MINUTE)
    exchange = make_client(server, name, kind)
    truth = {r.open_time_ms: as_ohlcv(r)
             for r in server.true_candles("BTCUSDT", "1h", OCT_1_2021, OCT_1_2021 + 3 * HOUR)}

    first = await asyncio.wait_for(exchange.watch_ohlcv(symbol, "1h"), 3)
    assert first[-1][0] == OCT_1_2021
    assert first[-1] != truth[OCT_1_2021]  # half-way through, not the final values

    server.clock.advance(40 * MINUTE)  # 01:10: 00:00 closes, 01:00 opens
    seen = await watch_until(exchange, symbol, "1h", lambda c: OCT_1_2021 + HOUR in c)
    assert seen[OCT_1_2021] == truth[OCT_1_2021]
    opening = seen[OCT_1_2021 + HOUR]
    assert opening[1] == opening[2] == opening[3] == opening[4]
    assert opening[5] == 0

    server.clock.advance(2 * HOUR)  # 03:10: two more closes in one poll, none skipped
    seen = await watch_until(exchange, symbol, "1h", lambda c: OCT_1_2021 + 3 * HOUR in c)
    assert seen[OCT_1_2021 + HOUR] == truth[OCT_1_2021 + HOUR]
    assert seen[OCT_1_2021 + 2 * HOUR] == truth[OCT_1_2021 + 2 * HOUR]


async def test_bybit_stream_at_speed_sends_every_close_in_order(make_server: Any,
                                                               http: Any) -> None:
    start = SEP_29_2021 + 5 * HOUR + 30 * MINUTE
    server = await make_server(start)  # paused until subscribed
    truth = {r.open_time_ms: r for r in server.true_candles(
        "BTCUSDT", "1h", SEP_29_2021, SEP_29_2021 + 12 * HOUR)}
    ws = await http.ws_connect(ws_url(server, "/stream.bybit.com/v5/public/linear"))
    await ws.send_json({"op": "subscribe", "args": ["kline.60.BTCUSDT"], "req_id": "7"})
    ack = await receive_json(ws)
    server.clock.set_speed(3600 * 20)  # 20 fake hours per second
    server.clock.resume()
    assert ack["success"] is True
    assert ack["op"] == "subscribe"
    assert ack["req_id"] == "7"

    last_open = SEP_29_2021 + 11 * HOUR
    frames = await collect(ws, lambda fs: bool(fs) and bybit_final(fs[-1])
                           and fs[-1]["data"][0]["start"] == last_open)
    pushes = [(f["data"][0], f["ts"]) for f in frames]
    assert all(f["topic"] == "kline.60.BTCUSDT" and f["type"] == "snapshot" for f in frames)
    assert [ts for _, ts in pushes] == sorted(ts for _, ts in pushes)
    assert pushes[0][0]["start"] == SEP_29_2021 + 5 * HOUR
    assert not pushes[0][0]["confirm"]

    finals = [d for d, _ in pushes if d["confirm"]]
    hours = [5, 6, 9, 10, 11]  # 07:00 and 08:00 are missing in the data, so never pushed
    assert [d["start"] for d in finals] == [SEP_29_2021 + h * HOUR for h in hours]
    closed: set[int] = set()
    for data, _ in pushes:
        row = truth[data["start"]]
        values = (data["open"], data["high"], data["low"], data["close"], data["volume"])
        assert data["end"] == data["start"] + HOUR - 1
        assert data["interval"] == "60"
        if data["confirm"]:
            assert values == (row.open, row.high, row.low, row.close, row.volume)
            closed.add(data["start"])
        else:
            assert data["start"] not in closed  # no update after a candle's close
            assert values != (row.open, row.high, row.low, row.close, row.volume)
    await ws.close()


async def test_binance_combined_stream_many_closes_per_poll(make_server: Any,
                                                             http: Any) -> None:
    start = OCT_1_2021  # the next gap in the files is in 2023
    server = await make_server(start)  # paused until the stream is connected
    path = "/stream.binance.com/stream?streams=btcusdt@kline_1h/ethusdt@kline_1h"
    ws = await http.ws_connect(ws_url(server, path))
    snapshots = await collect(ws, lambda fs: len(fs) >= 2)
    assert {f["data"]["k"]["t"] for f in snapshots} == {start}
    server.clock.set_speed(3600 * 1000)  # ~10 fake hours per 10 ms poll
    server.clock.resume()
    end = start + 100 * HOUR

    def done(frames: list[Any]) -> bool:
        return sum(1 for f in frames if f["data"]["k"]["x"]
                   and f["data"]["k"]["t"] >= end) >= 2

    frames = snapshots + await collect(ws, done)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        stream = f"{symbol.lower()}@kline_1h"
        events = [f["data"] for f in frames if f["stream"] == stream]
        assert all(e["e"] == "kline" and e["s"] == symbol for e in events)
        finals = [e["k"] for e in events if e["k"]["x"]]
        truth = server.true_candles(symbol, "1h", start, finals[-1]["t"])
        assert len(truth) > 100
        assert [k["t"] for k in finals] == [r.open_time_ms for r in truth]
        assert [[k["t"], float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]),
                 float(k["v"])] for k in finals] == [as_ohlcv(r) for r in truth]
        assert all(k["T"] == k["t"] + HOUR - 1 for k in finals)
        assert all(k["i"] == "1h" for k in finals)
    await ws.close()


async def test_binance_subscribe_messages(make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021 + 10 * MINUTE)
    ws = await http.ws_connect(ws_url(server, "/fstream.binance.com/market/ws/0"))
    await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1})
    assert await receive_json(ws) == {"result": None, "id": 1}
    event = await receive_json(ws)  # raw (not combined) stream: the bare event
    assert event["e"] == "kline"
    assert event["k"]["t"] == OCT_1_2021 + 10 * MINUTE
    assert event["k"]["x"] is False
    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
    assert await receive_json(ws) == {"result": ["btcusdt@kline_1m"], "id": 2}
    await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@kline_5m"], "id": 3})
    error = await receive_json(ws)
    assert error["id"] == 3
    assert error["error"]["code"] == 2
    await ws.send_json({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 4})
    assert await receive_json(ws) == {"result": None, "id": 4}
    server.clock.advance(HOUR)
    with pytest.raises(TimeoutError):
        await receive_json(ws, within_s=0.1)  # nothing subscribed, nothing pushed
    await ws.close()


@pytest.mark.parametrize("channel", ["linear", "spot"])
async def test_bybit_ping_subscribe_and_errors(make_server: Any, http: Any,
                                               channel: str) -> None:
    server = await make_server(OCT_1_2021 + 10 * MINUTE)
    ws = await http.ws_connect(ws_url(server, f"/stream.bybit.com/v5/public/{channel}"))
    await ws.send_json({"op": "ping", "req_id": "p1"})
    pong = await receive_json(ws)
    if channel == "linear":
        assert pong["op"] == "pong"
        assert pong["args"] == [str(OCT_1_2021 + 10 * MINUTE)]
    else:
        assert pong["op"] == "ping"
        assert pong["ret_msg"] == "pong"
        assert pong["success"]
    await ws.send_json({"op": "subscribe", "args": ["kline.60.DOGEUSDT"], "req_id": "s1"})
    error = await receive_json(ws)
    assert error["success"] is False
    assert error["req_id"] == "s1"
    await ws.send_json({"op": "subscribe", "args": ["kline.1.BTCUSDT"], "req_id": "s2"})
    ack = await receive_json(ws)
    assert ack["success"] is True
    push = await receive_json(ws)
    assert push["topic"] == "kline.1.BTCUSDT"
    assert push["data"][0]["confirm"] is False
    await ws.close()


@pytest.mark.parametrize("path", ["/stream.binance.com/ws", "/stream.bybit.com/v5/public/spot"])
async def test_ping_frames_are_answered(make_server: Any, http: Any, path: str) -> None:
    server = await make_server(OCT_1_2021)
    ws = await http.ws_connect(ws_url(server, path), autoping=False)
    await ws.ping(b"keepalive")
    message = await asyncio.wait_for(ws.receive(), 2)
    assert message.type == WSMsgType.PONG
    assert message.data == b"keepalive"
    await ws.close()


async def test_ws_handshake_on_unknown_path_is_refused(make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021)
    async with http.get(f"{server.base_url}/stream.bybit.com/v5/trade",
                        headers={"Upgrade": "websocket", "Connection": "Upgrade"}) as response:
        assert response.status == 404


@pytest.mark.parametrize(("name", "kind", "symbol"), CCXT_VENUES, ids=IDS)
async def test_dropped_connection_raises_network_error_then_reconnects(
        make_server: Any, make_client: Any, name: str, kind: str, symbol: str) -> None:
    server = await make_server(OCT_1_2021 + 30 * MINUTE)
    exchange = make_client(server, name, kind)
    await asyncio.wait_for(exchange.watch_ohlcv(symbol, "1h"), 3)
    pending = asyncio.ensure_future(exchange.watch_ohlcv(symbol, "1h"))
    await asyncio.sleep(0.05)
    assert server.drop_ws(after=0) == 1
    with pytest.raises(ccxt.NetworkError):
        await asyncio.wait_for(pending, 3)
    again = await asyncio.wait_for(exchange.watch_ohlcv(symbol, "1h"), 3)
    assert again[-1][0] == OCT_1_2021
    assert server.stats.ws_connections == 2
    assert server.stats.ws_dropped == 1


async def test_drop_after_k_pushes_and_drop_every(make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021)
    url = ws_url(server, "/stream.bybit.com/v5/public/linear")

    async def pushes_until_closed(ws: Any) -> int:
        count = 0
        while True:
            try:
                frame = await receive_json(ws)
            except ConnectionError:
                return count
            count += "topic" in frame

    async def subscribed() -> Any:
        ws = await http.ws_connect(url)
        await ws.send_json({"op": "subscribe", "args": ["kline.1.BTCUSDT"]})
        await receive_json(ws)  # ack
        assert "topic" in await receive_json(ws)  # the snapshot: push number 1
        return ws

    ws = await subscribed()
    server.drop_ws(after=5)
    server.clock.advance(10 * MINUTE)  # 10 closes and an open to push; the 5th is the last
    assert await pushes_until_closed(ws) == 5

    server.drop_ws_every(3)  # every connection, including new ones, after each 3 pushes
    for _ in range(2):
        ws = await subscribed()
        server.clock.advance(10 * MINUTE)
        assert await pushes_until_closed(ws) == 2
    assert server.stats.ws_dropped == 3


async def _bybit_frames(server: Any, http: Any, initial: int,
                        per_advance: int) -> list[tuple[int, bool]]:
    """(start, confirm) of the pushes of a paused-clock scenario: subscribe (`initial` frames
    expected), then 4 one-hour steps (`per_advance` each), each waited for so that nothing is
    coalesced."""
    ws = await http.ws_connect(ws_url(server, "/stream.bybit.com/v5/public/linear"))
    await ws.send_json({"op": "subscribe", "args": ["kline.60.BTCUSDT"]})
    await receive_json(ws)
    frames = await collect(ws, lambda fs: len(fs) >= initial)
    for _ in range(4):
        server.clock.advance(HOUR)
        frames += await collect(ws, lambda fs: len(fs) >= per_advance)
    with pytest.raises(TimeoutError):
        await receive_json(ws, within_s=0.1)  # and nothing more
    await ws.close()
    return [(f["data"][0]["start"], f["data"][0]["confirm"]) for f in frames]


async def test_duplicate_and_reorder_faults(make_server: Any, http: Any) -> None:
    # the snapshot, then per advance: the close of one candle and the next one's opening
    reference = await _bybit_frames(await make_server(OCT_1_2021), http, 1, 2)
    steps = [frame for h in range(4)
             for frame in ((OCT_1_2021 + h * HOUR, True), (OCT_1_2021 + (h + 1) * HOUR, False))]
    assert reference == [(OCT_1_2021, False), *steps]

    server = await make_server(OCT_1_2021)
    server.duplicate_ws(1.0)
    duplicated = await _bybit_frames(server, http, 2, 4)
    assert duplicated == [frame for frame in reference for _ in range(2)]

    server = await make_server(OCT_1_2021)
    server.reorder_ws(1.0)  # the snapshot is held back behind the first close, and so on
    reordered = await _bybit_frames(server, http, 0, 2)
    assert reordered == [frame for i in range(0, 8, 2)
                         for frame in (reference[i + 1], reference[i])]
    # the 9th message (the last opening update) waits for a 10th that never comes


async def test_correction_is_pushed_after_the_wrong_close(make_server: Any, http: Any) -> None:
    server = await make_server(OCT_1_2021 + 30 * MINUTE)
    fix = server.correction("BTCUSDT", "1h", OCT_1_2021, delay_ms=20 * MINUTE)
    assert fix.effective_ms == OCT_1_2021 + HOUR + 20 * MINUTE
    ws = await http.ws_connect(ws_url(server, "/stream.bybit.com/v5/public/linear"))
    await ws.send_json({"op": "subscribe", "args": ["kline.60.BTCUSDT"]})
    await receive_json(ws)
    await receive_json(ws)  # snapshot
    server.clock.advance(HOUR)  # to 01:30: wrong close at 01:00, correction at 01:20
    frames = await collect(ws, lambda fs: len(fs) >= 3)
    summary = [(f["data"][0]["start"], f["data"][0]["confirm"], f["data"][0]["close"],
                f["ts"]) for f in frames]
    assert summary[:2] == [(OCT_1_2021, True, fix.wrong.close, OCT_1_2021 + HOUR),
                           (OCT_1_2021, True, fix.true.close, fix.effective_ms)]
    assert summary[2][:2] == (OCT_1_2021 + HOUR, False)  # 01:00 half-way, at 01:30
    assert fix.wrong.close != fix.true.close
    await ws.close()
