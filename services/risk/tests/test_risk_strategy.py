"""The strategy layer: entries per UTC day, a cooldown after consecutive losses and a drawdown
limit on each strategy's realized PnL (from the gate's own view of its trades); exits always
pass; settings are validated; and a restarted gate (restore from its own outputs) decides exactly
as one that never stopped."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from meridian.v1 import common_pb2, risk_decision_pb2, signal_pb2
from meridian_common import config, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.testing import caught_up, protective_stop
from meridian_risk.handler import RiskHandler
from meridian_risk.ledger import DAY_MS, HOUR_MS
from meridian_risk.settings import RiskSettings

DAY0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS  # 2023-11-14T00:00:00Z
LONG, SHORT, FLAT = (common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT,
                     common_pb2.DIRECTION_FLAT)
A, B, C = "bybit:AAAUSDT", "bybit:BBBUSDT", "bybit:CCCUSDT"


def sig(hour: float, direction: int, price: str, key: str, strategy: str) -> signal_pb2.Signal:
    exchange, symbol = key.split(":")
    t = DAY0 + int(hour * HOUR_MS)
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:{strategy}:{key}:{t}", cause_id="f", event_time_ms=t,
                             producer="signals"),
        exchange=exchange, symbol=symbol, strategy=strategy, direction=direction, strength=0.5,
        confidence=1.0, reference_price=price, stop_loss=protective_stop(direction, price),
        reason="test")


def feed(handler: RiskHandler, signal: signal_pb2.Signal, key: str
         ) -> tuple[risk_decision_pb2.RiskDecision, list[tuple[str, str, object]]]:
    out = Outbox("risk")
    handler.handle(Inbound(topics.SIGNAL, key, signal), out)
    caught_up(handler, handler.merge.progress(), (topics.SIGNAL, key),
              signal.meta.event_time_ms, out)
    decisions = [m for t, _, m in out.items if t == topics.RISK_DECISION]
    assert len(decisions) == 1
    return decisions[0], out.items  # type: ignore[return-value]


class Gate:
    def __init__(self, **settings: object) -> None:
        self.handler = RiskHandler(RiskSettings(**settings))  # type: ignore[arg-type]

    def send(self, hour: float, direction: int, price: str = "100", key: str = A,
             strategy: str = "trend") -> risk_decision_pb2.RiskDecision:
        return feed(self.handler, sig(hour, direction, price, key, strategy), key)[0]


def result(d: risk_decision_pb2.RiskDecision, rule: str) -> tuple[bool, str]:
    r = next(r for r in d.rules if r.rule == rule)
    return r.passed, r.detail


def failed(d: risk_decision_pb2.RiskDecision) -> list[str]:
    return [r.rule for r in d.rules if not r.passed]


# --------------------------------------------------------------------------- max trades per day


def test_max_trades_per_day_counts_entries_per_strategy_and_utc_day() -> None:
    gate = Gate(max_trades_per_day=2)
    assert gate.send(20, LONG, key=A).approved
    assert gate.send(21, SHORT, key=B).approved
    d = gate.send(22, LONG, key=C)
    assert failed(d) == ["strategy.max_trades_per_day"]
    assert result(d, "strategy.max_trades_per_day") == (
        False, "2 entries of 'trend' on 2023-11-14 (UTC) vs max 2")
    d = gate.send(22.5, FLAT, key=A)  # an exit is never blocked, nor counted
    assert d.approved
    assert d.reduce_only
    assert result(d, "strategy.max_trades_per_day") == (
        True, "reduce-only exit: 2 entries of 'trend' on 2023-11-14 (UTC) vs max 2")
    assert gate.send(23, LONG, key=C, strategy="meanrev").approved  # its own count
    d = gate.send(24, LONG, key=A)  # 00:00 UTC the next day: a new count
    assert d.approved
    assert result(d, "strategy.max_trades_per_day") == (
        True, "0 entries of 'trend' on 2023-11-15 (UTC) vs max 2")


def test_max_trades_per_day_zero_is_unlimited() -> None:
    gate = Gate(max_trades_per_day=0, max_position_notional=Decimal(5000))
    for i in range(4):
        assert gate.send(i, LONG if i % 2 == 0 else SHORT).approved  # 4 entries (flips)
    assert result(gate.send(5, FLAT), "strategy.max_trades_per_day") == (
        True, "reduce-only exit: 4 entries of 'trend' on 2023-11-14 (UTC) vs no limit")


# --------------------------------------------------------------------------- cooldown


def test_cooldown_after_consecutive_losses_then_allowed_again() -> None:
    gate = Gate(cooldown_losses=3, cooldown_hours=Decimal(24))
    assert gate.send(0, LONG, "100", key=B).approved  # stays open: exited during the cooldown
    for h in (1, 3, 5):  # three losing trades: 10 long at 100, closed at 90 (-100 each)
        assert gate.send(h, LONG, "100").approved
        d = gate.send(h + 1, FLAT, "90")
        assert d.approved
        assert d.reduce_only
    assert gate.handler.ledger.stats("trend").losses == 3
    d = gate.send(7, LONG, "90")
    assert failed(d) == ["strategy.cooldown"]
    assert result(d, "strategy.cooldown") == (
        False, "3 consecutive losses of 'trend' vs 3: entries refused until 2023-11-15T06:00:00Z")
    assert gate.send(7, LONG, "90", key=C, strategy="meanrev").approved  # its own record
    d = gate.send(8, FLAT, "95", key=B)  # the exit passes (and is a 4th loss: -50 at 8:00)
    assert d.approved
    assert d.reduce_only
    assert result(d, "strategy.cooldown")[1].startswith("reduce-only exit: 3 consecutive")
    d = gate.send(31.5, LONG, "90")  # 8:00 + 24h = 32:00: still cooling down
    assert result(d, "strategy.cooldown") == (
        False, "4 consecutive losses of 'trend' vs 3: entries refused until 2023-11-15T08:00:00Z")
    d = gate.send(32, LONG, "90")  # the cooldown ends at 32:00 exactly
    assert d.approved
    assert result(d, "strategy.cooldown") == (
        True, "4 consecutive losses of 'trend' vs 3: cooldown ended 2023-11-15T08:00:00Z")
    assert gate.send(33, FLAT, "91").approved  # a win ends the streak
    assert result(gate.send(34, SHORT, "91"), "strategy.cooldown") == (
        True, "0 consecutive losses of 'trend' vs 3")


def test_cooldown_off_and_below_the_streak() -> None:
    gate = Gate()
    for h in (0, 2, 4):
        gate.send(h, LONG, "100")
        gate.send(h + 1, FLAT, "50")
    d = gate.send(6, LONG, "50")
    assert d.approved
    assert result(d, "strategy.cooldown") == (True, "off (cooldown_losses 0)")
    gate = Gate(cooldown_losses=3)
    for h in (0, 2):
        gate.send(h, SHORT, "100")
        gate.send(h + 1, FLAT, "110")  # a short closed higher loses
    d = gate.send(4, LONG, "110")
    assert d.approved
    assert result(d, "strategy.cooldown") == (True, "2 consecutive losses of 'trend' vs 3")


# --------------------------------------------------------------------------- drawdown


def test_max_drawdown_of_the_realized_pnl_curve() -> None:
    gate = Gate(strategy_max_drawdown=Decimal("0.05"), initial_capital=Decimal(10000))
    # (direction, entry, exit): 10 units each (order_notional 1000 at 100)
    trades = [(SHORT, "100", "80"),  # +200: equity 10200, the peak
              (LONG, "100", "50"),  # -500: 9700, drawdown 500 / 10200 = 0.049
              (LONG, "100", "99")]  # -10: 9690, drawdown 510 / 10200 = 0.05 exactly: allowed
    for i, (direction, entry, exit_) in enumerate(trades):
        assert gate.send(2 * i, direction, entry).approved
        assert gate.send(2 * i + 1, FLAT, exit_).approved
    d = gate.send(6, LONG, "100")
    assert d.approved
    assert result(d, "strategy.max_drawdown") == (
        True, "drawdown 0.05 (equity 9690 from peak 10200 over 3 closed trades of 'trend') vs "
              "max 0.05")
    assert gate.send(6, LONG, "100", key=B).approved  # open while the limit trips
    assert gate.send(7, FLAT, "98").approved  # -20: 9670, drawdown 530 / 10200 = 0.05196
    d = gate.send(8, SHORT, "98")
    assert failed(d) == ["strategy.max_drawdown"]
    assert result(d, "strategy.max_drawdown") == (
        False, "drawdown 0.052 (equity 9670 from peak 10200 over 4 closed trades of 'trend') vs "
               "max 0.05")
    assert gate.send(8, LONG, "98", key=C, strategy="meanrev").approved  # its own curve
    d = gate.send(9, FLAT, "120", key=B)  # the exit passes: +200, equity 9870
    assert d.approved
    assert d.reduce_only
    assert result(d, "strategy.max_drawdown")[1].startswith("reduce-only exit: drawdown 0.052")
    d = gate.send(10, LONG, "100")  # drawdown 330 / 10200 = 0.0324: entries again
    assert d.approved
    assert result(d, "strategy.max_drawdown")[1].startswith("drawdown 0.0324 (equity 9870")


def test_max_drawdown_default_is_off() -> None:
    gate = Gate(initial_capital=Decimal(1000), order_notional=Decimal(1000))
    gate.send(0, LONG, "100")  # 10 units on 1000 of capital
    gate.send(1, FLAT, "1")  # -990: drawdown 0.99
    d = gate.send(2, LONG, "100")
    assert d.approved
    assert result(d, "strategy.max_drawdown") == (
        True, "drawdown 0.99 (equity 10 from peak 1000 over 1 closed trades of 'trend') vs "
              "no limit (1 = off)")


def test_a_flip_closes_the_trade_for_the_strategy_that_opened_it() -> None:
    gate = Gate(max_position_notional=Decimal(5000))
    assert gate.send(0, LONG, "100", strategy="trend").approved
    d = gate.send(1, SHORT, "90", strategy="meanrev")  # closes trend's long at 90, opens short
    assert d.approved
    assert not d.reduce_only
    ledger = gate.handler.ledger
    assert [pnl for _, _, pnl in ledger.closed["trend"]] == [Decimal(-100)]
    assert "meanrev" not in ledger.closed
    assert ledger.open[A].strategy == "meanrev"
    assert gate.send(2, FLAT, "80", strategy="trend").approved
    assert [pnl for _, _, pnl in ledger.closed["meanrev"]] == [Decimal("111.1111")]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("env", "name"), [
    ({"MERIDIAN_RISK_MAX_TRADES_PER_DAY": "-1"}, "MERIDIAN_RISK_MAX_TRADES_PER_DAY"),
    ({"MERIDIAN_RISK_MAX_TRADES_PER_DAY": "many"}, "MERIDIAN_RISK_MAX_TRADES_PER_DAY"),
    ({"MERIDIAN_RISK_COOLDOWN_LOSSES": "-2"}, "MERIDIAN_RISK_COOLDOWN_LOSSES"),
    ({"MERIDIAN_RISK_COOLDOWN_HOURS": "0"}, "MERIDIAN_RISK_COOLDOWN_HOURS"),
    ({"MERIDIAN_RISK_STRATEGY_MAX_DRAWDOWN": "0"}, "MERIDIAN_RISK_STRATEGY_MAX_DRAWDOWN"),
    ({"MERIDIAN_RISK_STRATEGY_MAX_DRAWDOWN": "1.5"}, "MERIDIAN_RISK_STRATEGY_MAX_DRAWDOWN"),
])
def test_strategy_settings_errors_name_the_field(env: dict[str, str], name: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load(RiskSettings, environ=env)


def test_strategy_defaults_leave_runs_unaffected() -> None:
    s = config.load(RiskSettings, environ={})
    assert (s.max_trades_per_day, s.cooldown_losses, s.cooldown_hours,
            s.strategy_max_drawdown) == (1000, 0, Decimal(24), Decimal(1))


# --------------------------------------------------------------------------- restart


def stream(n: int) -> list[tuple[str, signal_pb2.Signal]]:
    """A seeded random walk of signals over three keys and two strategies, every 20 minutes."""
    rng = random.Random(7)
    prices = {A: 100.0, B: 50.0, C: 20.0}
    items = []
    for i in range(n):
        key = rng.choice([A, B, C])
        prices[key] *= 1 + rng.uniform(-0.06, 0.05)
        price = f"{prices[key]:.2f}"
        direction = rng.choice([LONG, SHORT, FLAT, FLAT])
        items.append((key, sig(i / 3, direction, price, key, rng.choice(["trend", "meanrev"]))))
    return items


TIGHT = {"max_trades_per_day": 6, "cooldown_losses": 2, "cooldown_hours": Decimal(3),
         "strategy_max_drawdown": Decimal("0.02"), "max_position_notional": Decimal(5000)}


def run(handler: RiskHandler, items: list[tuple[str, signal_pb2.Signal]]
        ) -> tuple[list[risk_decision_pb2.RiskDecision], list[tuple[str, str, object]]]:
    decisions, emitted = [], []
    for key, signal in items:
        d, out = feed(handler, signal, key)
        decisions.append(d)
        emitted += out
    return decisions, emitted


def restored(emitted: list[tuple[str, str, object]]) -> RiskHandler:
    """A fresh gate restored from `emitted`, each topic whole in restore_from order, with keys
    (partitions) interleaved differently from how they were produced (per key order kept)."""
    handler = RiskHandler(RiskSettings(**TIGHT))  # type: ignore[arg-type]
    for topic in handler.restore_from:
        per_key: dict[str, list[object]] = {}
        for t, key, message in emitted:
            if t == topic:
                per_key.setdefault(key, []).append(message)
        for key in sorted(per_key, reverse=True):
            for message in per_key[key]:
                handler.restore(Inbound(topic, key, message))  # type: ignore[arg-type]
    handler.restored()
    return handler


def test_a_restart_mid_stream_changes_no_decision() -> None:
    items = stream(600)
    whole, _ = run(RiskHandler(RiskSettings(**TIGHT)), items)  # type: ignore[arg-type]

    first = RiskHandler(RiskSettings(**TIGHT))  # type: ignore[arg-type]
    before, emitted = run(first, items[:300])
    second = restored(emitted)
    assert second.book == first.book
    assert second.ledger == first.ledger
    after, _ = run(second, items[300:])
    assert before + after == whole

    # The stream exercises every strategy rule after the restart, both ways.
    for rule in ("strategy.max_trades_per_day", "strategy.cooldown", "strategy.max_drawdown"):
        outcomes = {result(d, rule)[0] for d in after if d.quantity != "0"}
        assert outcomes == {True, False}, rule
    # A gate that forgot the ledger (only the book restored) would decide differently.
    forgetful = restored(emitted)
    forgetful.ledger.closed.clear()
    forgetful.ledger.entries.clear()
    assert run(forgetful, items[300:])[0] != after
