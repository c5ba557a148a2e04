"""The risk gate's audit trail in real PostgreSQL: the ledger writes every decision on
risk.decision.v1 to `risk_decisions` once, however often it is delivered (in one batch, in a
later batch, or to a restarted ledger), in the same transaction as the fills, and the rules
come back from the JSONB column exactly as the gate reported them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
import sqlalchemy as sa

from meridian.v1 import common_pb2, fill_pb2, risk_decision_pb2
from meridian_common import db, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_ledger.store import SqlLedgerStore

pytestmark = pytest.mark.integration

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_609_459_200_000  # 2021-01-01T00:00Z

RULES_OK = [
    ("strategy.direction", True, "long allowed"),
    ("order.min_notional", True, "notional 900.015 >= 10"),
    ("position.max_notional", True, "position 900.015 <= 5000"),
]
RULES_REJECTED = [
    ("strategy.direction", True, "short allowed"),
    ("order.max_notional", False, "notional 12000 > 10000"),
    # detail with quotes, a backslash and non-ASCII: JSON must keep them as they were
    ("portfolio.max_exposure", False, 'exposure "52000" > 50000 \\ ≥ limit'),
    ("system.kill_switch", True, ""),
]


def decision(i: int, approved: bool) -> risk_decision_pb2.RiskDecision:
    sid = f"sig:feat:binance:BTCUSDT:1h:{T0 + i * HOUR}:r0"
    rules = RULES_OK if approved else RULES_REJECTED
    return risk_decision_pb2.RiskDecision(
        meta=common_pb2.Meta(id="dec:" + sid, cause_id=sid, event_time_ms=T0 + i * HOUR,
                             producer="risk"),
        exchange="binance", symbol="BTCUSDT", approved=approved,
        rules=[risk_decision_pb2.RuleResult(rule=r, passed=p, detail=t) for r, p, t in rules],
        client_order_id=f"mrd-{i:032x}" if approved else "",
        side=common_pb2.SIDE_BUY if approved else common_pb2.SIDE_SELL,
        quantity="0.03" if approved else "0.4", reference_price="30000.5",
        reduce_only=not approved,
    )


def fill(i: int) -> fill_pb2.Fill:
    fid = f"mrd-{i:032x}:f1"
    return fill_pb2.Fill(
        meta=common_pb2.Meta(id=fid, cause_id=f"mrd-{i:032x}", event_time_ms=T0 + i * HOUR,
                             producer="execution"),
        fill_id=fid, client_order_id=f"mrd-{i:032x}", exchange="binance", symbol="BTCUSDT",
        side=common_pb2.SIDE_BUY, quantity="0.03", price="30000.5", fee="0.9",
        fee_currency="USDT", liquidity=fill_pb2.LIQUIDITY_TAKER)


def booked(f: fill_pb2.Fill) -> list[tuple[str, object]]:
    """A fill with what makes the ledger book it: its candle and the fill watermark."""
    t = f.meta.event_time_ms
    return [(topics.CANDLE, make_candle("binance", "BTCUSDT", "1h",
                                        RawCandle(t, "30000", "30001", "29999", "30000.5", "1"),
                                        "ingest")),
            (topics.FILL, f),
            (topics.FILL, common_pb2.Watermark(key=KEY, event_time_ms=t, producer="execution"))]


async def _deliver(url: str, batches: list[list[tuple[str, object]]]) -> None:
    """One ledger (fresh state, loaded from the database) handling and flushing each batch."""
    engine = db.create_engine(url)
    try:
        handler = LedgerHandler(LedgerSettings(), SqlLedgerStore(engine))
        await handler.start()
        offsets: dict[str, int] = {}
        for batch in batches:
            out = Outbox("ledger")
            for topic, message in batch:
                offset = offsets[topic] = offsets.get(topic, -1) + 1
                handler.handle(Inbound(topic, KEY, message, (topic, 0, offset)),  # type: ignore[arg-type]
                               out)
            await handler.flush()
    finally:
        await engine.dispose()


def _decision_rows(url: str) -> list[dict[str, object]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("select * from risk_decisions order by ts, decision_id")
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_each_decision_is_stored_once_with_its_rules(new_database: Callable[[str], str]) -> None:
    url = new_database("riskaudit")
    db.migrate(url)
    db.migrate(url)  # idempotent
    with psycopg.connect(url) as conn:
        # 0004 created the table; later revisions leave it be
        assert conn.execute("select version_num from alembic_version").fetchone()[0] >= "0004"
        assert conn.execute("select to_regclass('risk_decisions')").fetchone()[0] is not None

    approved, rejected, later = decision(1, True), decision(2, False), decision(3, True)
    d = topics.RISK_DECISION
    # first ledger: a batch with a duplicate inside it, then a redelivery in a later batch
    asyncio.run(_deliver(url, [
        [(d, approved), (d, rejected), (d, approved), *booked(fill(1))],
        [(d, rejected)],
    ]))
    # a restarted ledger is given the same records again (offsets were not committed), plus one
    asyncio.run(_deliver(url, [[(d, rejected), (d, approved), (d, later)]]))

    rows = _decision_rows(url)
    assert [r["decision_id"] for r in rows] == [m.meta.id for m in (approved, rejected, later)]
    assert rows[0] == {
        "ts": datetime(2021, 1, 1, 1, tzinfo=UTC), "decision_id": approved.meta.id,
        "cause_id": approved.meta.cause_id, "exchange": "binance", "symbol": "BTCUSDT",
        "approved": True, "client_order_id": approved.client_order_id, "side": "buy",
        "quantity": Decimal("0.03"), "reference_price": Decimal("30000.5"),
        "reduce_only": False, "failed_rules": [],
        "rules": [{"rule": r, "passed": p, "detail": t} for r, p, t in RULES_OK],
    }
    assert rows[1] == {
        "ts": datetime(2021, 1, 1, 2, tzinfo=UTC), "decision_id": rejected.meta.id,
        "cause_id": rejected.meta.cause_id, "exchange": "binance", "symbol": "BTCUSDT",
        "approved": False, "client_order_id": "", "side": "sell",
        "quantity": Decimal("0.4"), "reference_price": Decimal("30000.5"),
        "reduce_only": True, "failed_rules": ["order.max_notional", "portfolio.max_exposure"],
        "rules": [{"rule": r, "passed": p, "detail": t} for r, p, t in RULES_REJECTED],
    }

    with psycopg.connect(url) as conn:
        # the JSON is queryable in place: why was each decision refused
        refused = conn.execute(
            "select decision_id, r->>'rule', r->>'detail' from risk_decisions, "
            "jsonb_array_elements(rules) r where not (r->>'passed')::boolean "
            "order by ts").fetchall()
        assert refused == [(rejected.meta.id, r, t) for r, p, t in RULES_REJECTED if not p]
        # the fill in the same batch as the decisions is there too, once
        assert conn.execute("select count(*) from fills").fetchone() == (1,)
        assert conn.execute("select count(*) from equity").fetchone() == (1,)
        key = conn.execute(
            "select array_agg(a.attname order by k.ord) from pg_index i "
            "cross join lateral unnest(i.indkey) with ordinality k(attnum, ord) "
            "join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum "
            "where i.indrelid = 'risk_decisions'::regclass and i.indisprimary").fetchone()
        assert key == (["ts", "decision_id"],)


def test_a_failed_batch_stores_neither_its_decisions_nor_its_fills(
        new_database: Callable[[str], str]) -> None:
    """One transaction per batch: if the write fails, nothing of the batch is left behind, so
    the uncommitted records are handled again from scratch."""
    url = new_database("riskaudit_tx")
    db.migrate(url)
    broken = fill(1)
    broken.fee_currency = "X" * 17  # longer than fills.fee_currency: the insert fails
    d = topics.RISK_DECISION
    with pytest.raises(sa.exc.DBAPIError, match="value too long"):
        asyncio.run(_deliver(url, [[(d, decision(1, True)), *booked(broken)]]))
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from risk_decisions").fetchone() == (0,)
        assert conn.execute("select count(*) from fills").fetchone() == (0,)
