"""`meridian bench` execution and ledger figures: approved orders per second through the paper
executor (its state machine, fill model and events), and fills per second through the ledger
with PostgreSQL (one transaction per 500 records, as the host batches).

Orders: one market order per candle per symbol, alternating buy and sell, over BTC and ETH 2021
(the executor at its busiest: every candle fills something). Baselines in the same run: encoding
and decoding the approved order (one hop of the pipeline) for the executor; the same ledger
without a database for the PostgreSQL figure. Figures count only if two runs agree (fingerprint:
fills and the sum of their prices; the ledger's final net PnL).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from google.protobuf.message import Message

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, order_approved_pb2
from meridian_cli import embedded_db
from meridian_cli.scripts import REPO
from meridian_common import codec, db, ids, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_ledger.store import SqlLedgerStore

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START, END = 1_609_459_200_000, 1_640_995_200_000  # 2021
BATCH = 500
Item = tuple[str, str, Message]


def _inputs() -> tuple[list[Item], int]:
    """Orders and candles in event time (an order at a close, then the candle opening there)."""
    items: list[tuple[int, int, str, Message]] = []
    orders = 0
    for symbol in SYMBOLS:
        key = f"binance:{symbol}"
        rows = [r for r in CsvCandleSource(default_data_dir(), symbol, "1h").rows()
                if START <= r.open_time_ms < END]
        for n, r in enumerate(rows):
            items.append((r.open_time_ms, 1, key, make_candle("binance", symbol, "1h", r,
                                                               "bench")))
            coid = ids.client_order_id(f"bench:{symbol}:{r.open_time_ms}")
            items.append((r.open_time_ms, 0, key, order_approved_pb2.ApprovedOrder(
                meta=common_pb2.Meta(id=coid, event_time_ms=r.open_time_ms, producer="bench"),
                client_order_id=coid, signal_id=f"bench:{n}", exchange="binance",
                symbol=symbol, side=common_pb2.SIDE_BUY if n % 2 == 0 else common_pb2.SIDE_SELL,
                order_type=order_approved_pb2.ORDER_TYPE_MARKET, quantity="0.01",
                strategy="bench")))
            orders += 1
    items.sort(key=lambda x: (x[0], x[1], x[2]))
    return [(topics.ORDER_APPROVED if rank == 0 else topics.CANDLE, key, m)
            for _, rank, key, m in items], orders


def _execute(items: list[Item]) -> tuple[float, list[Item], tuple[int, str]]:
    handler = ExecutionHandler(ExecutionSettings())
    out = Outbox("execution")
    started = time.perf_counter()
    for topic, key, message in items:
        handler.handle(Inbound(topic, key, message), out)
    seconds = time.perf_counter() - started
    emitted = out.drain()
    fills = [m for t, _, m in emitted if isinstance(m, fill_pb2.Fill)]
    total = sum((Decimal(f.price) for f in fills), Decimal(0))
    return seconds, emitted, (len(fills), str(total))


def _ledger_inputs(items: list[Item], emitted: list[Item]) -> list[Item]:
    """The executor's fills and fill watermarks with the candles, candles first per time."""
    merged = [(m.meta.event_time_ms - 3_600_000, 0, k, m) for t, k, m in items
              if isinstance(m, candle_pb2.Candle)]
    merged += [(m.meta.event_time_ms if not isinstance(m, common_pb2.Watermark)
                else m.event_time_ms, 1, k, m) for t, k, m in emitted if t == topics.FILL]
    merged.sort(key=lambda x: (x[0], x[1], x[2]))
    return [(topics.CANDLE if rank == 0 else topics.FILL, k, m) for _, rank, k, m in merged]


async def _ledger(items: list[Item], url: str | None) -> tuple[float, str]:
    engine = db.create_engine(url) if url else None
    try:
        handler = LedgerHandler(LedgerSettings(), SqlLedgerStore(engine) if engine else None)
        await handler.start()
        out = Outbox("ledger")
        started = time.perf_counter()
        for n, (topic, key, message) in enumerate(items, start=1):
            handler.handle(Inbound(topic, key, message), out)
            if n % BATCH == 0:
                await handler.flush()
                out.drain()
        await handler.flush()
        seconds = time.perf_counter() - started
        net = sum((st.book.realized_pnl - st.book.fees_paid for st in handler.symbols.values()),
                  Decimal(0))
        return seconds, str(net)
    finally:
        if engine is not None:
            await engine.dispose()


def main() -> int:
    items, orders = _inputs()
    seconds, emitted, fingerprint = _execute(items)
    again = _execute(items)[2]
    if again != fingerprint:
        print(f"EXECUTION FINGERPRINT MISMATCH: {fingerprint} vs {again}; figures do not count")
        return 1
    approved = [m for _, _, m in items if isinstance(m, order_approved_pb2.ApprovedOrder)]
    started = time.perf_counter()
    for m in approved:
        value, mtype = codec.encode(m)
        codec.decode(topics.ORDER_APPROVED, value, mtype)
    hop = (time.perf_counter() - started) / len(approved)
    per_order = seconds / orders  # the candles' handling included: each fills an order
    print(f"\npaper executor, {orders:,} market orders on {len(SYMBOLS)} symbols (2021, one per "
          f"candle), fingerprint (fills, sum of prices) = {fingerprint}")
    print(f"orders/s {orders / seconds:,.0f} (order + its candle + 3 order events + a fill: "
          f"{per_order * 1e6:.0f} us = {per_order / hop:.1f}x encoding + decoding the order)")

    ledger_items = _ledger_inputs(items, emitted)
    fills = fingerprint[0]
    memory_s, memory_net = asyncio.run(_ledger(ledger_items, None))
    server = embedded_db.start(REPO / ".local" / "embedded-pg")
    url = embedded_db.fresh_database(server, "meridian_bench_ledger")
    db.migrate(url)
    pg_s, pg_net = asyncio.run(_ledger(ledger_items, url))
    if pg_net != memory_net:
        print(f"LEDGER FINGERPRINT MISMATCH: {pg_net} vs {memory_net}; figures do not count")
        return 1
    print(f"ledger, {fills:,} fills and {len(ledger_items) - fills:,} candles and watermarks, "
          f"net realized {Decimal(memory_net):.2f}")
    print(f"{'ledger':<34}{'seconds':>10}{'fills/s':>12}{'vs in memory':>14}")
    for name, secs in (("in memory (no database)", memory_s),
                       (f"PostgreSQL (a transaction per {BATCH})", pg_s)):
        print(f"{name:<34}{secs:>10.2f}{fills / secs:>12,.0f}{memory_s / secs:>13.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
