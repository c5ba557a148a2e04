"""Ledger as the risk gate's audit writer: every decision on risk.decision.v1, approved or
rejected, becomes one row with every rule's verdict; a decision it cannot store is dead-lettered
with a reason naming the field, and takes no part in the fill/candle merge."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from meridian.v1 import common_pb2, risk_decision_pb2
from meridian_common import codec, host, topics
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.host import ServiceHost, all_topic_configs
from meridian_common.testing import until
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_ledger.store import Batch

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL

PASSED = [
    ("strategy.direction", True, "long allowed"),
    ("order.nonzero", True, "quantity 0.03 > 0"),
    ("order.min_notional", True, "notional 900 >= 10"),
]


def decision(i: int, approved: bool = True,
             rules: list[tuple[str, bool, str]] | None = None,
             **fields: Any) -> risk_decision_pb2.RiskDecision:
    sid = f"sig:feat:binance:BTCUSDT:1h:{T0 + i * HOUR}:r0"
    d = risk_decision_pb2.RiskDecision(
        meta=common_pb2.Meta(id="dec:" + sid, cause_id=sid, event_time_ms=T0 + i * HOUR,
                             producer="risk"),
        exchange="binance", symbol="BTCUSDT", approved=approved,
        rules=[risk_decision_pb2.RuleResult(rule=r, passed=p, detail=t)
               for r, p, t in (PASSED if rules is None else rules)],
        client_order_id=f"mrd-{i:032x}" if approved else "", side=BUY, quantity="0.03",
        reference_price="30000.5", reduce_only=False,
    )
    for name, value in fields.items():
        setattr(d, name, value)
    return d


def handle(handler: LedgerHandler, *msgs: object, topic: str = topics.RISK_DECISION) -> Outbox:
    out = Outbox("ledger")
    for offset, m in enumerate(msgs):
        handler.handle(Inbound(topic, KEY, m, (topic, 0, offset)), out)  # type: ignore[arg-type]
    return out


def new() -> LedgerHandler:
    return LedgerHandler(LedgerSettings(), store=None)


def test_approved_decision_is_one_row_with_every_rule() -> None:
    handler = new()
    d = decision(3)
    out = handle(handler, d)
    assert out.items == []  # audit only: nothing published
    (row,) = handler.batch.decisions
    assert row == {
        "ts": datetime.fromtimestamp((T0 + 3 * HOUR) / 1000, tz=UTC),
        "decision_id": d.meta.id, "cause_id": d.meta.cause_id,
        "exchange": "binance", "symbol": "BTCUSDT", "approved": True,
        "client_order_id": d.client_order_id, "side": "buy",
        "quantity": Decimal("0.03"), "reference_price": Decimal("30000.5"),
        "reduce_only": False, "failed_rules": [],
        "rules": [{"rule": r, "passed": p, "detail": t} for r, p, t in PASSED],
    }
    assert row["decision_id"] == "dec:" + row["cause_id"]  # type: ignore[operator]
    assert isinstance(row["quantity"], Decimal)


def test_rejected_decision_names_the_failed_rules_in_order() -> None:
    handler = new()
    rules = [
        ("strategy.direction", True, "short allowed"),
        ("order.max_notional", False, "notional 12000 > 10000"),
        ("position.max_notional", True, "position 0 <= 5000"),
        ("system.kill_switch", False, "engaged: only reduce-only orders pass"),
    ]
    handle(handler, decision(4, approved=False, rules=rules, side=SELL, quantity="0.4",
                             reduce_only=True))
    (row,) = handler.batch.decisions
    assert row["approved"] is False
    assert row["client_order_id"] == ""
    assert (row["side"], row["quantity"], row["reduce_only"]) == ("sell", Decimal("0.4"), True)
    assert row["failed_rules"] == ["order.max_notional", "system.kill_switch"]
    assert row["rules"] == [{"rule": r, "passed": p, "detail": t} for r, p, t in rules]


def test_decision_without_a_side_is_stored_with_an_empty_side() -> None:
    # e.g. a flat signal with nothing to close: the proposal has no side and quantity 0
    handler = new()
    handle(handler, decision(5, approved=False, rules=[("order.nonzero", False, "quantity 0")],
                             side=common_pb2.SIDE_UNSPECIFIED, quantity="0"))
    (row,) = handler.batch.decisions
    assert (row["side"], row["quantity"]) == ("", Decimal(0))
    assert row["failed_rules"] == ["order.nonzero"]


def test_rows_keep_arrival_order_and_leave_the_fill_candle_merge_alone() -> None:
    handler = new()
    ds = [decision(i) for i in (2, 0, 1)]
    handle(handler, *ds)
    assert [r["decision_id"] for r in handler.batch.decisions] == [d.meta.id for d in ds]
    assert handler.symbols == {}  # no per-symbol state, so nothing held back
    assert handler.retained() == {}
    # a redelivery is another row in the batch; the store's unique key drops it
    handle(handler, ds[0])
    assert len(handler.batch.decisions) == 4


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("quantity", "0.0.3", "RiskDecision.quantity: '0.0.3' is not a decimal number"),
    ("quantity", "", "RiskDecision.quantity: '' is not a decimal number"),
    ("reference_price", "NaN", "RiskDecision.reference_price: 'NaN' is not a finite number"),
    ("side", 7, "RiskDecision.side 7 is not BUY, SELL or unspecified"),
    ("exchange", "x" * 33, "RiskDecision.exchange is longer than 32 characters"),
])
def test_malformed_decision_raises_invalid_message_naming_the_field(
        field: str, value: object, reason: str) -> None:
    handler = new()
    bad = decision(1, **{field: value})
    with pytest.raises(InvalidMessage) as info:
        handle(handler, bad)
    assert reason in str(info.value)
    assert bad.meta.id in str(info.value)
    assert handler.batch.decisions == []  # nothing half-recorded
    handle(handler, decision(2))  # and the next one is taken as usual
    assert len(handler.batch.decisions) == 1


def test_decisions_are_flushed_with_the_batch() -> None:
    store = RecordingStore()
    handler = LedgerHandler(LedgerSettings(), store=store)  # type: ignore[arg-type]
    handle(handler, decision(0), decision(1, approved=False,
                                          rules=[("order.margin", False, "short of margin")]))
    asyncio.run(handler.flush())
    (batch,) = store.batches
    assert [r["approved"] for r in batch.decisions] == [True, False]
    assert handler.batch.decisions == []
    asyncio.run(handler.flush())  # an empty batch is not written
    assert len(store.batches) == 1


class RecordingStore:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def write(self, batch: Batch) -> None:
        self.batches.append(batch)

    async def fills(self, account: str) -> list[dict[str, Any]]:
        return []

    async def positions(self, account: str) -> list[dict[str, Any]]:
        return []


async def test_host_dead_letters_a_malformed_decision_and_stores_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "POLL_TIMEOUT_S", 0.01)
    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs("", 3))
    store = RecordingStore()
    h = ServiceHost(LedgerHandler(LedgerSettings(), store=store), bus)  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(h.run(stop))
    await asyncio.wait_for(h.ready.wait(), 5)
    producer = bus.producer()
    for d in (decision(0), decision(1, quantity="abc"), decision(2)):
        value, mtype = codec.encode(d)
        await producer.send(topics.RISK_DECISION, KEY.encode(), value,
                            ((codec.TYPE_HEADER, mtype),))
    dlq = topics.dlq(topics.RISK_DECISION)

    def stored() -> list[object]:
        return [r["decision_id"] for b in store.batches for r in b.decisions]

    await until(lambda: len(bus.read(dlq)) == 1 and len(stored()) == 2)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert stored() == [decision(0).meta.id, decision(2).meta.id]
    assert (h.handled, h.dead_letters) == (2, 1)
    (dead,) = bus.read(dlq)
    reason = (dead.header("dlq-reason") or b"").decode()
    assert "RiskDecision.quantity" in reason
    assert decision(1).meta.id in reason
    assert dead.header("dlq-service") == b"ledger"
