"""The latency bench's inputs and its fingerprint (the Kafka run itself needs a broker: it is
`meridian bench`)."""

from __future__ import annotations

from decimal import Decimal

from meridian.v1 import common_pb2
from meridian_cli import bench_latency


def test_every_signal_is_approved_and_fills_at_the_next_open() -> None:
    candles, signals = bench_latency.inputs(6)
    assert len(candles) == 8
    assert [s.direction for s in signals] == [common_pb2.DIRECTION_LONG,
                                              common_pb2.DIRECTION_FLAT] * 3
    assert all(bool(s.stop_loss) == (s.direction == common_pb2.DIRECTION_LONG) for s in signals)
    assert [s.meta.event_time_ms for s in signals] == [c.close_time_ms for c in candles[:6]]
    approved, rejected, fills, _, prices, _ = bench_latency.reference(candles, signals)
    assert (approved, rejected, fills) == (6, 0, 6)
    # a market order at a close fills at the open of the candle opening there (no slippage)
    assert Decimal(prices) == sum(Decimal(c.open) for c in candles[1:7])


def test_the_fingerprint_sees_a_missing_fill() -> None:
    candles, signals = bench_latency.inputs(4)
    full = bench_latency.reference(candles, signals)
    assert bench_latency.reference(candles, signals[:3]) != full
