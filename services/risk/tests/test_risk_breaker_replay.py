"""A replay of real candles through the features, signals and risk handlers in which the drawdown
breaker must fire, and does, at the right candle.

The right candle is found independently of the gate's code: the equity curve is recomputed here
from the gate's approved orders (quantity, side, reference price) and the candle closes, in event
time (at one time: candles, then the orders decided at it), and the first candle whose drawdown
from the running peak exceeds the limit is where the breaker must trip. That recomputation
knows nothing of stops, so its run has the signals' stops taken off (and the stop rule off).
The same inputs, stops on, handed to the gate in different arrival orders (candles first,
signals first, interleaved) must give the same outputs, the merge's promise, and a gate
restarted mid-replay must book the same stop-outs and trip at the same candle.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
from google.protobuf.message import Message

from meridian.v1 import (
    candle_pb2,
    common_pb2,
    control_pb2,
    fill_pb2,
    order_approved_pb2,
    signal_pb2,
)
from meridian_common import config, testing, topics
from meridian_common.handler import Inbound
from meridian_common.protection import exit_order_id
from meridian_execution.handler import ExecutionHandler
from meridian_execution.settings import ExecutionSettings
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ingest import commands
from meridian_ingest.settings import IngestSettings
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

LIMIT = Decimal("0.03")
STOPS_LIMIT = Decimal("0.02")  # stops keep the drawdown smaller
Routed = tuple[str, str, Message]


@cache
def _inputs(model_dir: str) -> tuple[tuple[Routed, ...], tuple[Routed, ...]]:
    """(candles with their watermarks, signals with theirs) for BTC+ETH, 2021-01..06."""
    common = config.load(config.CommonSettings, environ={})
    ingest = config.load(IngestSettings, environ={}, symbols="BTCUSDT,ETHUSDT",
                         start="2021-01-01", end="2021-07-01")
    stream = list(commands.candle_stream(common, ingest))
    features = testing.feed(FeaturesHandler(FeaturesSettings()), topics.CANDLE, stream)
    signals = SignalsHandler(SignalsSettings(model_dir=model_dir))
    asyncio.run(signals.start())  # no model promoted: the trend rules alone
    candles: list[Routed] = []
    for item in stream:
        if isinstance(item, candle_pb2.Candle):
            candles.append((topics.CANDLE, topics.market_key(item.exchange, item.symbol), item))
        else:
            candles.append((item.topic, item.key, item.message))
    return tuple(candles), tuple(testing.feed(signals, topics.FEATURES, features))


def _without_stops(signals: tuple[Routed, ...]) -> list[Routed]:
    out: list[Routed] = []
    for topic, key, m in signals:
        if isinstance(m, signal_pb2.Signal):
            m = signal_pb2.Signal.FromString(m.SerializeToString())
            m.ClearField("stop_loss")
            m.ClearField("take_profit")
        out.append((topic, key, m))
    return out


def _gate(limit: Decimal = STOPS_LIMIT, *, stops: bool = True) -> RiskHandler:
    return RiskHandler(RiskSettings(max_drawdown=limit, daily_loss_limit=Decimal(1),
                                    price_spike_pct_per_min=Decimal(0),
                                    require_stop_loss=stops))


def _expected_trip(candles: tuple[Routed, ...], out: list[Routed]) -> tuple[int, Decimal]:
    """(close time, drawdown) of the first candle past the limit, from first principles."""
    orders: dict[int, list[tuple[str, Decimal, Decimal]]] = {}
    prices = {d.client_order_id: Decimal(d.reference_price) for t, _, d in out
              if t == topics.RISK_DECISION and d.approved}  # type: ignore[attr-defined]
    for topic, key, m in out:
        if topic == topics.ORDER_APPROVED and isinstance(m, order_approved_pb2.ApprovedOrder):
            qty = Decimal(m.quantity) * (1 if m.side == common_pb2.SIDE_BUY else -1)
            orders.setdefault(m.meta.event_time_ms, []).append(
                (key, qty, prices[m.client_order_id]))
    closes = sorted((m.meta.event_time_ms, key, Decimal(m.close)) for _, key, m in candles
                    if isinstance(m, candle_pb2.Candle))
    qty: dict[str, Decimal] = {}
    avg: dict[str, Decimal] = {}
    mark: dict[str, Decimal] = {}
    realized = Decimal(0)
    peak = capital = Decimal(10000)
    booked_to = -1
    for t, key, close in closes:
        for ot in sorted(o for o in orders if booked_to < o < t):
            for k, delta, price in orders[ot]:
                q = qty.get(k, Decimal(0))
                if q and (q > 0) != (delta > 0):  # reduces, closes or flips
                    closed = min(abs(delta), abs(q))
                    realized += closed * (price - avg[k]) * (1 if q > 0 else -1)
                    new = q + delta
                    avg[k] = price if new and (new > 0) != (q > 0) else avg[k]
                    qty[k] = new
                else:
                    avg[k] = price if not q else (abs(q) * avg[k] + abs(delta) * price) / (
                        abs(q) + abs(delta))
                    qty[k] = q + delta
                mark[k] = price
            booked_to = ot
        mark[key] = close
        equity = capital + realized + sum(q * (mark[k] - avg[k]) for k, q in qty.items() if q)
        peak = max(peak, equity)
        if (peak - equity) / peak > LIMIT:
            return t, (peak - equity) / peak
    raise AssertionError("the drawdown never passes the limit: the scenario tests nothing")


def _controls(out: list[Routed]) -> list[control_pb2.Control]:
    return [m for t, _, m in out if t == topics.CONTROL]  # type: ignore[misc]


def test_the_drawdown_breaker_fires_at_the_right_candle(tmp_path: Path) -> None:
    candles, with_stops = _inputs(str(tmp_path / "models"))
    signals = _without_stops(with_stops)
    gate = _gate(LIMIT, stops=False)
    out = testing.feed(gate, topics.CANDLE, list(candles) + list(signals))
    assert gate.stopped == 0
    trip_time, drawdown = _expected_trip(candles, out)
    controls = _controls(out)
    first = controls[0]
    assert first.WhichOneof("command") == "breaker"
    assert first.meta.event_time_ms == trip_time
    assert first.breaker.level == "pause"
    assert first.breaker.reason.startswith("portfolio.max_drawdown: ")
    assert f"is {drawdown.quantize(Decimal('0.0001'))} below peak" in first.breaker.reason
    # Entries are refused from the trip on, for the pause (exits still pass).
    pause_end = first.breaker.until_ms
    during = [m for t, _, m in out if t == topics.RISK_DECISION
              and trip_time <= m.meta.event_time_ms < pause_end]  # type: ignore[attr-defined]
    for d in during:
        rules = {r.rule: r for r in d.rules}
        if d.quantity == "0":
            continue  # no order (e.g. flat while flat)
        if d.reduce_only:
            assert d.approved
        else:
            assert not d.approved
            assert not rules["system.breaker"].passed
            assert "entries paused until" in rules["system.breaker"].detail
    # Before the trip no decision saw the breaker.
    before = [m for t, _, m in out if t == topics.RISK_DECISION
              and m.meta.event_time_ms < trip_time]  # type: ignore[attr-defined]
    assert before
    assert all({r.rule: r.passed for r in d.rules}["system.breaker"] for d in before)


def test_the_decisions_do_not_depend_on_arrival_order(tmp_path: Path) -> None:
    candles, signals = _inputs(str(tmp_path / "models"))
    candles_first = testing.feed(_gate(), topics.CANDLE, list(candles) + list(signals))
    signals_first = testing.feed(_gate(), topics.CANDLE, list(signals) + list(candles))
    mixed = testing.feed(_gate(), topics.CANDLE, testing.interleave(
        list(candles), list(signals), [i % 7 < 3 for i in range(len(candles) + len(signals))]))

    def encoded(items: list[Routed]) -> list[tuple[str, str, bytes]]:
        return [(t, k, m.SerializeToString(deterministic=True)) for t, k, m in items
                if not isinstance(m, common_pb2.Watermark)]

    assert encoded(candles_first) == encoded(signals_first) == encoded(mixed)
    assert any(t == topics.CONTROL for t, _, _ in candles_first)
    gate = _gate()
    testing.feed(gate, topics.CANDLE, list(candles) + list(signals))
    assert gate.stopped > 10  # the stops were in play


def test_a_restart_mid_replay_decides_and_trips_as_an_uninterrupted_gate(tmp_path: Path) -> None:
    """Kill the gate part way (before the trip), restore a new one from its outputs and the
    input topics as a host would, hand it what the old one had not committed: the outputs
    equal the uninterrupted run's, breaker included (the peak equity came back)."""
    candles, signals = _inputs(str(tmp_path / "models"))
    items = testing.interleave(list(candles), list(signals),
                               [i % 5 < 2 for i in range(len(candles) + len(signals))])
    whole = testing.feed(_gate(), topics.CANDLE, items)
    trip_time = next(m.meta.event_time_ms for t, _, m in whole if t == topics.CONTROL)
    cut = next(i for i, (_, _, m) in enumerate(items) if isinstance(m, candle_pb2.Candle)
               and m.meta.event_time_ms >= trip_time - 5 * 24 * 3_600_000)

    first = _gate()
    before = testing.feed(first, topics.CANDLE, items[:cut])
    # the host commits below the first record still held back
    resume = min(first.retained().values(), default=cut)
    assert resume < cut  # something was held: the restart must take it again

    second = _gate()
    for topic in second.restore_from:  # each topic whole, as the host reads it
        source = before if topic in (topics.CONTROL, topics.RISK_DECISION,
                                     topics.ORDER_APPROVED) else items[:cut]
        for t, key, m in source:
            if t == topic:
                second.restore(Inbound(topic, key, m))  # type: ignore[arg-type]
    second.restored()
    assert second.book == first.book
    assert second.protect == first.protect
    assert first.stopped > 0  # stop-outs before the cut, replayed by the restore
    assert second.breakers.peak == first.breakers.peak
    after = testing.feed(second, topics.CANDLE, items[resume:])

    def decided(out: list[Routed]) -> list[tuple[str, str, bytes]]:
        return [(t, k, m.SerializeToString(deterministic=True)) for t, k, m in out
                if not isinstance(m, common_pb2.Watermark)]

    assert decided(before) + decided(after) == decided(whole)


@pytest.mark.parametrize(("trailing", "leverage"), [("0", "1"), ("0.03", "1"), ("0", "10")])
def test_the_gate_books_exactly_the_stop_outs_the_paper_executor_fills(
        tmp_path: Path, trailing: str, leverage: str) -> None:
    """The gate never sees a fill: it closes a position in its book on the candle whose range
    triggers the position's stop-loss or take-profit, as the executor fills it. Over the real
    replay both must close the same positions, with the same exit ids, at the same candles, and
    end with the same positions; otherwise the gate's limits act on positions that are gone."""
    candles, signals = _inputs(str(tmp_path / "models"))
    # default limits (no breaker in the way), with or without a trailing stop on each entry
    gate = RiskHandler(RiskSettings(trailing_stop=Decimal(trailing),
                                    leverage=Decimal(leverage)))
    decided = testing.feed(gate, topics.CANDLE, list(candles) + list(signals))
    approved = [(t, k, m) for t, k, m in decided
                if isinstance(m, order_approved_pb2.ApprovedOrder)]
    order_stream = [(t, k, m) for t, k, m in decided if t == topics.ORDER_APPROVED]
    stream = sorted(
        [(m.open_time_ms, 1, t, k, m) for t, k, m in candles
         if isinstance(m, candle_pb2.Candle)]
        + [(Inbound(t, k, m).event_time_ms, 0, t, k, m) for t, k, m in order_stream],
        key=lambda x: (x[0], x[1], x[3]))
    executor = ExecutionHandler(ExecutionSettings())
    filled = testing.feed(executor, topics.CANDLE, [(t, k, m) for *_, t, k, m in stream])
    entries = {m.client_order_id for _, _, m in approved}  # type: ignore[attr-defined]
    stop_fills = sorted((f.meta.event_time_ms + 3_600_000, f.client_order_id)
                        for t, _, f in filled if isinstance(f, fill_pb2.Fill)
                        and f.client_order_id not in entries)
    stop_ids = {exit_order_id(c, r) for c in entries
                for r in ("stop_loss", "take_profit", "trailing_stop", "liquidation")}
    booked = sorted((t, coid) for trades in gate.ledger.closed.values()
                    for t, coid, _ in trades if coid in stop_ids)
    assert gate.stopped > 10
    assert len(booked) == gate.stopped
    assert stop_fills == booked
    positions = {k: b.position for k, b in executor.books.items() if b.position != 0}
    assert positions == gate.positions
