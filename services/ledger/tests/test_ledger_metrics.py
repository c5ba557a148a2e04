"""The ledger's series agree with the rows it writes: over real candles and the paper
executor's fills of the risk gate's orders, fills and fees counted as booked, and the equity,
realized PnL, drawdown and open positions gauges equal to what the equity and positions rows say
(the account curve recomputed here from the rows); funding paid and received; nothing counted
while the host replays."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
from google.protobuf.message import Message

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, funding_pb2
from meridian_common import config, testing, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.testing import bound_registry, exported
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

Routed = tuple[str, str, Message]
CAPITAL = Decimal(10000)


@cache
def _ledger_inputs(model_dir: str) -> tuple[Routed, ...]:
    """Real BTC+ETH candles (2021-01..03) and the paper fills of the orders the risk gate
    approves on them, in the order the ledger may see them (each fill before its candle's
    mark, fill watermarks included)."""
    common = config.load(config.CommonSettings, environ={})
    ingest = config.load(IngestSettings, environ={}, symbols="BTCUSDT,ETHUSDT",
                         start="2021-01-01", end="2021-03-01")
    stream = list(commands.candle_stream(common, ingest))
    features = testing.feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE, stream)
    signals = SignalsHandler(SignalsSettings(model_dir=model_dir))
    asyncio.run(signals.start())
    candles = [(topics.CANDLE, topics.market_key(m.exchange, m.symbol), m) for m in stream
               if isinstance(m, candle_pb2.Candle)]
    decided = testing.feed(RiskHandler(RiskSettings()), topics.CANDLE,
                           candles + testing.feed(signals, topics.FEATURES, features))
    orders = [r for r in decided if r[0] == topics.ORDER_APPROVED]
    merged = sorted([(m.open_time_ms, 1, r) for r in candles for m in (r[2],)]  # type: ignore[attr-defined]
                    + [(Inbound(*r).event_time_ms, 0, r) for r in orders],
                    key=lambda x: (x[0], x[1], x[2][1]))
    executed = testing.feed(ExecutionHandler(ExecutionSettings()), topics.CANDLE,
                            [r for *_, r in merged])
    fills = [r for r in executed if r[0] == topics.FILL]
    return tuple(testing.interleave(fills, candles, [i % 3 == 0 for i in range(
        len(fills) + len(candles))]))



def _account_curve(rows: list[dict[str, object]]) -> list[Decimal]:
    """At each marked time, capital + the sum of every symbol's latest net PnL (the control
    plane's account curve)."""
    latest: dict[object, Decimal] = {}
    curve: dict[object, Decimal] = {}
    for row in sorted(rows, key=lambda r: (r["ts"], r["symbol"])):  # type: ignore[return-value]
        latest[row["symbol"]] = row["net_pnl"]  # type: ignore[assignment]
        curve[row["ts"]] = CAPITAL + sum(latest.values(), Decimal(0))
    return list(curve.values())


def test_the_gauges_equal_the_rows_the_ledger_writes(tmp_path: Path) -> None:
    ledger = LedgerHandler(LedgerSettings(), None)
    registry = bound_registry(ledger)
    testing.feed(ledger, topics.CANDLE, _ledger_inputs(str(tmp_path / "models")))
    batch = ledger.batch  # every row written so far (no store: the flush only sets gauges)
    asyncio.run(ledger.flush())  # the gauges follow each batch, as the host flushes it
    fills = Counter(row["symbol"] for row in batch.fills)
    assert len(batch.trades) > 5
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert fills[symbol] > 0
        assert exported(registry, "meridian_ledger_fills_total", symbol=symbol) == fills[symbol]
    fees = sum((row["fee"] for row in batch.fills), Decimal(0))
    assert exported(registry, "meridian_ledger_fees_quote_total") == pytest.approx(float(fees),
                                                                               rel=1e-12)
    curve = _account_curve(batch.equity)
    assert exported(registry, "meridian_ledger_equity_quote") == float(curve[-1])
    last = max(batch.equity, key=lambda r: r["ts"])
    assert float(last["net_pnl"]) != 0.0
    peak = max([CAPITAL, *curve])
    assert peak > curve[-1]  # a drawdown to measure
    assert exported(registry, "meridian_ledger_drawdown_ratio") == pytest.approx(
        float((peak - curve[-1]) / peak), abs=1e-12)
    positions = list(batch.positions.values())
    realized = sum((p["realized_pnl"] - p["fees_paid"] - p["funding_paid"] for p in positions),
                   Decimal(0))
    assert exported(registry, "meridian_ledger_realized_pnl_quote") == float(realized)
    assert exported(registry, "meridian_ledger_open_positions") == sum(
        1 for p in positions if p["quantity"] != 0)
    assert exported(registry, "meridian_ledger_funding_quote_total") == 0


def test_one_symbol_equity_is_capital_plus_its_last_equity_row() -> None:
    ledger = LedgerHandler(LedgerSettings(), None)
    registry = bound_registry(ledger)
    assert exported(registry, "meridian_ledger_equity_quote") == float(CAPITAL)
    hour, t0 = 3_600_000, 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    out = Outbox("ledger")
    key = "binance:BTCUSDT"
    fill = fill_pb2.Fill(
        meta=common_pb2.Meta(id="mrd-1:f1", event_time_ms=t0, producer="execution"),
        fill_id="mrd-1:f1", client_order_id="mrd-1", exchange="binance", symbol="BTCUSDT",
        side=common_pb2.SIDE_BUY, quantity="0.5", price="30000", fee="15.3", fee_currency="USDT")
    for i, (topic, msg) in enumerate([
            (topics.FILL, fill),
            (topics.CANDLE, make_candle("binance", "BTCUSDT", "1h",
                                        RawCandle(t0, "30000", "30000", "30000", "28000.5",
                                                  "1"), "ingest")),
            (topics.FILL, common_pb2.Watermark(key=key, event_time_ms=t0 + hour))]):
        ledger.handle(Inbound(topic, key, msg, (topic, 0, i)), out)
    [row] = ledger.batch.equity
    asyncio.run(ledger.flush())
    assert row["net_pnl"] == Decimal("-1015.05")  # 0.5 x (28000.5 - 30000) - 15.3
    assert exported(registry, "meridian_ledger_equity_quote") == float(CAPITAL + row["net_pnl"])
    assert exported(registry, "meridian_ledger_drawdown_ratio") == float(
        Decimal("1015.05") / CAPITAL)
    assert exported(registry, "meridian_ledger_realized_pnl_quote") == -15.3
    assert exported(registry, "meridian_ledger_open_positions") == 1
    assert exported(registry, "meridian_ledger_fees_quote_total") == 15.3


def test_funding_paid_then_received_and_nothing_counted_while_replaying() -> None:
    hour = 3_600_000
    t0 = 1_700_000_000_000 - (1_700_000_000_000 % (8 * hour))  # a settlement time
    key = "bybit-linear:BTCUSDT"

    def candle(i: int, close: str) -> tuple[str, Message]:
        return topics.CANDLE, make_candle("bybit-linear", "BTCUSDT", "1h", RawCandle(
            t0 + i * hour, close, close, close, close, "1"), "ingest")

    def funding(hours: int, rate: str) -> tuple[str, Message]:
        t = t0 + hours * hour
        return topics.FUNDING, funding_pb2.FundingRate(
            meta=common_pb2.Meta(id=f"f:{t}", event_time_ms=t, producer="ingest"),
            exchange="bybit-linear", symbol="BTCUSDT", funding_time_ms=t, rate=rate)

    def done(topic: str, i: int) -> tuple[str, Message]:
        return topic, common_pb2.Watermark(key=key, event_time_ms=t0 + i * hour)

    buy = fill_pb2.Fill(meta=common_pb2.Meta(id="mer-1:f1", event_time_ms=t0 - hour),
                        fill_id="mer-1:f1", client_order_id="mer-1", exchange="bybit-linear",
                        symbol="BTCUSDT", side=common_pb2.SIDE_BUY, quantity="2", price="100",
                        fee="0.1", fee_currency="USDT")
    stream = [(topics.FILL, buy), candle(-1, "110"), funding(0, "0.0001"), done(topics.FILL, 0),
              *[item for i in range(7) for item in (candle(i, "105"), done(topics.FUNDING, i + 1),
                                                     done(topics.FILL, i + 1))],
              candle(7, "100"), funding(8, "-0.0003"), done(topics.FUNDING, 9),
              done(topics.FILL, 9), candle(8, "100")]
    ledger = LedgerHandler(LedgerSettings(funding=True), None)
    registry = bound_registry(ledger)
    ledger.replaying = True  # type: ignore[attr-defined]  # as a host replaying inputs
    offsets = itertools.count()
    out = Outbox("ledger")
    for topic, msg in stream:
        ledger.handle(Inbound(topic, key, msg, (topic, 0, next(offsets))), out)
    # paid 2 x 110 x 0.0001 = 0.022, then received 2 x 100 x 0.0003 = 0.06
    assert [r["funding_paid"] for r in ledger.batch.equity][-1] == Decimal("-0.038")
    equity_rows = ledger.batch.equity
    asyncio.run(ledger.flush())
    assert exported(registry, "meridian_ledger_funding_quote_total") == -0.038
    assert exported(registry, "meridian_ledger_fills_total", symbol="BTCUSDT") == 0
    assert exported(registry, "meridian_ledger_fees_quote_total") == 0
    curve = _account_curve(equity_rows)
    assert exported(registry, "meridian_ledger_equity_quote") == float(curve[-1])
