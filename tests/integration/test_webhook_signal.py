"""External signals by webhook, end to end over real Kafka: TradingView-style alerts posted over
HTTP to the control plane (run as deployed, `python -m meridian_control`), decided by the risk
gate and filled by the paper executor, on real BTCUSDT and ETHUSDT 1h candles of 2021-03-01
(/work/shared/data), with expectations checked by hand against the CSV rows below.

The replay goes candle by candle: the alerts of a bar are posted first (their `time` is the bar's
open, so each is stamped with that bar's close, the event time of the bar's candle), then the
candle of each symbol is published with a signal.v1 Watermark at its close (the part the signals
service plays: it had nothing to say), and the test waits until the gate has decided up to that
close. The kill switch is set and cleared over HTTP between two candles, since the gate takes
control commands on arrival.

Rows used (open time UTC: open / close), from BTCUSDT-1h.csv.gz and ETHUSDT-1h.csv.gz:
    BTC 01:00  46217.18 / 46161.83     BTC 02:00  46166.16 / 46419.56
    BTC 05:00  46474.53 / 46200.47     BTC 06:00  46200.46 / 45857.3
    ETH 03:00  1440.31 / 1434.06       ETH 07:00  1424.36 / 1437.74
    ETH 09:00  1464.48 / 1504.17       ETH 10:00  1504.17 / 1522.87

Risk gate: default settings (fixed notional 1000 USDT per entry, a stop-loss required on
entries) but at most one open position. Executor: paper, taker fee 0.1 %, no slippage: a market
order fills at the open of the first candle opening at or after its event time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from meridian.v1 import common_pb2, fill_pb2, order_approved_pb2, risk_decision_pb2
from meridian_common import topics
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_common.metrics import NullSensor
from meridian_common.testing import free_port, read_topic, service_process, stop_process
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T0 = 1_614_556_800_000  # 2021-03-01T00:00:00Z
CANDLES = 12  # 00:00 .. 11:00
TOKEN = "it-webhook-write-token-3b8e1f"
SECRET = "it-webhook-secret-7c2d90a4e1"
BTC, ETH = "binance:BTCUSDT", "binance:ETHUSDT"
WAIT_S = 60


@pytest.fixture
def control_plane(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[str]:
    """The control plane in its own process, webhook enabled; yields its base URL."""
    port = free_port()
    env = {"MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": topic_prefix, "MERIDIAN_CONTROL_PORT": str(port),
           "MERIDIAN_CONTROL_TOKEN": TOKEN, "MERIDIAN_CONTROL_WEBHOOK_SECRET": SECRET}
    logs = tmp_path / "control.log"
    base = f"http://127.0.0.1:{port}"
    with service_process("meridian_control", env, logs, f"{base}/health",
                         wait_s=WAIT_S) as proc:
        yield base
        assert stop_process(proc) == 0, logs.read_text()
    text = logs.read_text()
    assert "webhook alert: accepted" in text
    assert SECRET not in text
    assert TOKEN not in text


def _rows(symbol: str) -> list[Any]:
    rows = [r for r in CsvCandleSource(default_data_dir(), symbol, "1h").rows()
            if T0 <= r.open_time_ms < T0 + CANDLES * HOUR]
    assert len(rows) == CANDLES
    return rows


def _alert(symbol: str, bar: int, action: str, price: str, **extra: str) -> dict[str, str]:
    """An alert of the bar opening at T0 + bar hours, as TradingView sends {{time}}."""
    return {"secret": SECRET, "name": "tv-breakout", "symbol": symbol, "action": action,
            "price": price, "time": f"2021-03-01T{bar:02d}:00:00Z", **extra}


class Replay:
    """Candles step by step to a risk gate and a paper executor hosted on real Kafka."""

    def __init__(self, bootstrap: str, prefix: str, http: httpx.AsyncClient) -> None:
        self.bus = KafkaBus(bootstrap)
        self.prefix = prefix
        self.http = http
        self.risk = RiskHandler(RiskSettings(max_open_positions=1))
        self.execution = ExecutionHandler(ExecutionSettings())
        self.rows = {"BTCUSDT": _rows("BTCUSDT"), "ETHUSDT": _rows("ETHUSDT")}
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.producer = self.bus.producer()

    async def start(self) -> None:
        await self.bus.ensure_topics(all_topic_configs(self.prefix, 3))
        hosts = [ServiceHost(h, self.bus, prefix=self.prefix)
                 for h in (self.risk, self.execution)]
        self.tasks = [asyncio.create_task(h.run(self.stop)) for h in hosts]
        for h in hosts:
            await asyncio.wait_for(h.ready.wait(), WAIT_S)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)
        await self.producer.stop()

    async def candle(self, i: int) -> None:
        """Candle i of both symbols with the signal Watermarks at its close; returns once the
        gate has decided everything up to that close."""
        close = T0 + (i + 1) * HOUR
        items: list[Any] = []
        for symbol, rows in self.rows.items():
            key = f"binance:{symbol}"
            items.append((topics.CANDLE, key, make_candle("binance", symbol, "1h", rows[i],
                                                          "ingest")))
            items.append((topics.SIGNAL, key, common_pb2.Watermark(
                key=key, event_time_ms=close, producer="signals")))
        await publish(self.producer, self.prefix, items, NullSensor())
        await self.producer.flush()
        await self.until(lambda: self.risk.merge.released_to >= close, f"candle {i} decided")

    async def until(self, cond: Any, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not cond():
            for task in self.tasks:
                if task.done():
                    task.result()  # a host that died: its error
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def post(self, body: dict[str, str]) -> httpx.Response:
        return await self.http.post("/v1/webhook/tradingview", json=body, timeout=30)

    async def kill_switch(self, engaged: bool) -> None:
        answer = await self.http.post(
            "/v1/kill-switch", json={"engaged": engaged, "reason": "webhook test"},
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert answer.status_code == 202, answer.text
        await self.until(lambda: self.risk.kill_switch is engaged, "the kill switch")

    async def read(self, topic: str) -> list[Any]:
        return await read_topic(self.bus, self.prefix, topic)


def _failed(decision: risk_decision_pb2.RiskDecision) -> list[str]:
    return [r.rule for r in decision.rules if not r.passed]


async def _scenario(base: str, bootstrap: str, prefix: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        replay = Replay(bootstrap, prefix, http)
        await replay.start()
        try:
            ids = await _play(replay)
            fills = await _fills(replay, 3)
            decisions = {d.meta.cause_id: d
                         for d in await replay.read(topics.RISK_DECISION)
                         if isinstance(d, risk_decision_pb2.RiskDecision)}
            orders = sorted((o for o in await replay.read(topics.ORDER_APPROVED)
                             if isinstance(o, order_approved_pb2.ApprovedOrder)),
                            key=lambda o: o.meta.event_time_ms)
            signals = [s for s in await replay.read(topics.SIGNAL)
                       if not isinstance(s, common_pb2.Watermark)]
        finally:
            await replay.close()
    _check(ids, decisions, orders, fills, signals)


async def _play(replay: Replay) -> dict[str, str]:
    """The replay; returns the signal id of each alert by label."""
    ids: dict[str, str] = {}

    async def accepted(label: str, body: dict[str, str]) -> None:
        answer = await replay.post(body)
        assert answer.status_code == 202, answer.text
        ids[label] = answer.json()["id"]

    for i in range(CANDLES):
        if i == 1:
            btc_buy = _alert("BTCUSDT", 1, "buy", "46161.83", stop_loss="45000")
            await accepted("btc_buy", btc_buy)
            retry = await replay.post(btc_buy)  # the sender retried: published once
            assert retry.status_code == 200, retry.text
            assert retry.json() == {**retry.json(), "status": "duplicate", "id": ids["btc_buy"]}
        elif i == 3:  # BTC is open and one position is the most
            await accepted("eth_over_limit",
                           _alert("ETHUSDT", 3, "long", "1434.06", stop_loss="1400"))
        elif i == 5:  # the kill switch was set after candle 4: an exit still passes
            await accepted("btc_close", _alert("BTCUSDT", 5, "close", "46200.47"))
        elif i == 7:
            await accepted("eth_killed", _alert("ETHUSDT", 7, "buy", "1437.74",
                                                stop_loss="1400"))
        elif i == 9:  # cleared after candle 8
            await accepted("eth_buy", _alert("ETHUSDT", 9, "buy", "1504.17",
                                             stop_loss="1450", take_profit="1700"))
        await replay.candle(i)
        if i == 4:
            await replay.kill_switch(True)
        elif i == 8:
            await replay.kill_switch(False)
    return ids


async def _fills(replay: Replay, n: int) -> list[fill_pb2.Fill]:
    got: list[fill_pb2.Fill] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < n:
        assert time.monotonic() < deadline, f"{len(got)} fills of {n}"
        await asyncio.sleep(0.1)
        got = [f for f in await replay.read(topics.FILL) if isinstance(f, fill_pb2.Fill)]
    return sorted(got, key=lambda f: f.meta.event_time_ms)


def _check(ids: dict[str, str], decisions: dict[str, risk_decision_pb2.RiskDecision],
           orders: list[order_approved_pb2.ApprovedOrder], fills: list[fill_pb2.Fill],
           signals: list[Any]) -> None:
    # one record per alert on signal.v1 (the retry was not published), as the gate saw them
    assert sorted(s.meta.id for s in signals) == sorted(ids.values())
    assert {s.strategy for s in signals} == {"webhook:tv-breakout"}
    assert {s.meta.producer for s in signals} == {"webhook"}
    assert set(decisions) == set(ids.values())
    d = {label: decisions[signal_id] for label, signal_id in ids.items()}
    # each alert decided at the close of its bar
    assert {label: x.meta.event_time_ms for label, x in d.items()} == {
        "btc_buy": T0 + 2 * HOUR, "eth_over_limit": T0 + 4 * HOUR,
        "btc_close": T0 + 6 * HOUR, "eth_killed": T0 + 8 * HOUR, "eth_buy": T0 + 10 * HOUR}

    # 1000 USDT at 46161.83: 0.02166 BTC (0.02167 would be 1000.33), a buy
    assert (d["btc_buy"].approved, d["btc_buy"].quantity, d["btc_buy"].side) == (
        True, "0.02166", common_pb2.SIDE_BUY)
    # the limits hold: ETH while BTC is open, with at most one open position
    assert not d["eth_over_limit"].approved
    assert _failed(d["eth_over_limit"]) == ["portfolio.max_open_positions"]
    # the kill switch passes the exit (reduce-only, the whole position) and refuses the entry
    assert (d["btc_close"].approved, d["btc_close"].reduce_only, d["btc_close"].quantity,
            d["btc_close"].side) == (True, True, "0.02166", common_pb2.SIDE_SELL)
    assert not d["eth_killed"].approved
    assert _failed(d["eth_killed"]) == ["system.kill_switch"]
    # cleared: 1000 USDT at 1504.17 is 0.66481 ETH (0.66482 would be 1000.002)
    assert (d["eth_buy"].approved, d["eth_buy"].quantity) == (True, "0.66481")

    assert [(o.symbol, o.side, o.quantity, o.reduce_only, o.stop_loss, o.take_profit,
             o.strategy) for o in orders] == [
        ("BTCUSDT", common_pb2.SIDE_BUY, "0.02166", False, "45000", "", "webhook:tv-breakout"),
        ("BTCUSDT", common_pb2.SIDE_SELL, "0.02166", True, "", "", "webhook:tv-breakout"),
        ("ETHUSDT", common_pb2.SIDE_BUY, "0.66481", False, "1450", "1700",
         "webhook:tv-breakout")]

    # each at the open of the next candle (the first opening at the decision's time), 0.1 % fee
    assert [(f.symbol, f.side, f.quantity, f.price, f.fee, f.meta.event_time_ms)
            for f in fills] == [
        ("BTCUSDT", common_pb2.SIDE_BUY, "0.02166", "46166.16", "0.99995903", T0 + 2 * HOUR),
        ("BTCUSDT", common_pb2.SIDE_SELL, "0.02166", "46200.46", "1.00070196", T0 + 6 * HOUR),
        ("ETHUSDT", common_pb2.SIDE_BUY, "0.66481", "1504.17", "0.99998726", T0 + 10 * HOUR)]


def test_webhook_alerts_through_the_risk_gate_and_the_paper_executor(
        control_plane: str, kafka_bootstrap: str, topic_prefix: str) -> None:
    asyncio.run(_scenario(control_plane, kafka_bootstrap, topic_prefix))
