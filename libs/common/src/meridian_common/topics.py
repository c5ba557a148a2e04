"""Every topic on the bus: its contract, key, producer and consumers, in one place.

A newcomer finds a topic's producer and consumers here in one hop; the codec uses the same table
to know which message type a topic carries. Names are logical: a run-wide prefix (for isolated
backtests and tests) is added by the bus host, never by a handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from meridian.v1 import (
    candle_pb2,
    common_pb2,
    control_pb2,
    features_pb2,
    fill_pb2,
    funding_pb2,
    order_approved_pb2,
    order_event_pb2,
    order_intent_pb2,
    portfolio_pb2,
    risk_decision_pb2,
    signal_pb2,
)

CANDLE = "md.candle.v1"
FUNDING = "md.funding.v1"
FEATURES = "features.v1"
SIGNAL = "signal.v1"
ORDER_INTENT = "order.intent.v1"
RISK_DECISION = "risk.decision.v1"
ORDER_APPROVED = "order.approved.v1"
ORDER_EVENT = "order.event.v1"
FILL = "fill.v1"
PORTFOLIO = "portfolio.v1"
CONTROL = "control.v1"

DLQ_PREFIX = "dlq."


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    message: type[Message]
    producer: str
    consumers: tuple[str, ...]
    key: str
    # Compacted topics keep the latest value per key (state, not history).
    compacted: bool = False
    # Sparse topics carry Watermark records between messages (see common.proto).
    sparse: bool = False
    # Single-partition topics keep a total order (control commands).
    partitions: int | None = None
    # History topics are never deleted by time: a service whose state is a function of its
    # inputs rebuilds that state on start by replaying them (market data is small).
    history: bool = False


TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in (
        TopicSpec(CANDLE, candle_pb2.Candle, "ingest",
                  ("features", "risk", "execution", "ledger", "bots"),
                  "exchange:symbol", history=True),
        TopicSpec(FUNDING, funding_pb2.FundingRate, "ingest", ("features", "ledger", "bots"),
                  "exchange:symbol", sparse=True, history=True),
        TopicSpec(FEATURES, features_pb2.Features, "features", ("signals",), "exchange:symbol"),
        TopicSpec(SIGNAL, signal_pb2.Signal, "signals", ("risk",), "exchange:symbol", sparse=True),
        TopicSpec(ORDER_INTENT, order_intent_pb2.OrderIntent, "bots", ("risk",),
                  "exchange:symbol", sparse=True),
        # Watermarks only while the gate takes bots' intents (risk intents=true): the bots host
        # needs to know it has every decision on its orders up to a time.
        TopicSpec(RISK_DECISION, risk_decision_pb2.RiskDecision, "risk", ("ledger", "bots"),
                  "exchange:symbol", sparse=True),
        TopicSpec(ORDER_APPROVED, order_approved_pb2.ApprovedOrder, "risk", ("execution",),
                  "exchange:symbol", sparse=True),
        TopicSpec(ORDER_EVENT, order_event_pb2.OrderEvent, "execution", ("risk",),
                  "exchange:symbol"),
        TopicSpec(FILL, fill_pb2.Fill, "execution", ("ledger", "bots"), "exchange:symbol",
                  sparse=True),
        TopicSpec(PORTFOLIO, portfolio_pb2.PositionUpdate, "ledger", ("control-plane",),
                  "account:exchange:symbol", compacted=True),
        TopicSpec(CONTROL, control_pb2.Control, "control-plane", ("all",), "command subject",
                  compacted=True, partitions=1),
    )
}

WATERMARK = common_pb2.Watermark


def spec(topic: str) -> TopicSpec:
    try:
        return TOPICS[topic]
    except KeyError:
        raise KeyError(f"unknown topic {topic!r}; known: {sorted(TOPICS)}") from None


def dlq(topic: str) -> str:
    """Dead-letter topic of a topic."""
    return DLQ_PREFIX + topic


def market_key(exchange: str, symbol: str) -> str:
    return f"{exchange}:{symbol}"
