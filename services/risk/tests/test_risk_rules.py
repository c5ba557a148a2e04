"""The rule framework: sizing methods, order / position / portfolio limits, leverage and
liquidation, stop losses, exits never blocked by limits, and the book a restart restores."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meridian.v1 import common_pb2, order_approved_pb2, risk_decision_pb2, signal_pb2
from meridian_common import config, topics
from meridian_common.handler import Inbound, Outbox
from meridian_common.testing import caught_up, protective_stop
from meridian_risk.handler import RiskHandler
from meridian_risk.rules import RULE_NAMES
from meridian_risk.settings import RiskSettings

HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
LONG, SHORT, FLAT = (common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT,
                     common_pb2.DIRECTION_FLAT)
KEYS = ["bybit:AAAUSDT", "bybit:BBBUSDT", "bybit:CCCUSDT"]


def sig(i: int, direction: int, price: str = "100", key: str = KEYS[0], stop: str | None = None,
        confidence: float = 1.0) -> signal_pb2.Signal:
    """stop None: a protective stop 10% away (as the signals service attaches); "" for none."""
    exchange, symbol = key.split(":")
    if stop is None:
        stop = protective_stop(direction, price)
    t = T0 + i * HOUR
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=f"sig:{key}:{t}", cause_id="f", event_time_ms=t,
                             producer="signals"),
        exchange=exchange, symbol=symbol, strategy="trend", direction=direction, strength=0.5,
        confidence=confidence, reference_price=price, stop_loss=stop, reason="test")


class Gate:
    """A RiskHandler plus everything it emitted."""

    def __init__(self, **settings: object) -> None:
        self.handler = RiskHandler(RiskSettings(**settings))  # type: ignore[arg-type]
        self.items: list[tuple[str, str, object]] = []
        self.i = 0

    def send(self, direction: int, key: str = KEYS[0], price: str = "100",
             stop: str | None = None,
             confidence: float = 1.0) -> risk_decision_pb2.RiskDecision:
        self.i += 1
        out = Outbox("risk")
        signal = sig(self.i, direction, price, key, stop, confidence)
        self.handler.handle(Inbound(topics.SIGNAL, key, signal), out)
        caught_up(self.handler, self.handler.merge.progress(), (topics.SIGNAL, key),
                  signal.meta.event_time_ms, out)
        self.items += out.items
        decisions = [m for t, _, m in out.items if t == topics.RISK_DECISION]
        assert len(decisions) == 1
        d = decisions[0]
        assert [r.rule for r in d.rules] == list(RULE_NAMES)
        assert all(r.detail for r in d.rules)
        return d  # type: ignore[return-value]


def failed(d: risk_decision_pb2.RiskDecision) -> list[str]:
    return [r.rule for r in d.rules if not r.passed]


def detail(d: risk_decision_pb2.RiskDecision, rule: str) -> str:
    return next(r.detail for r in d.rules if r.rule == rule)


# --------------------------------------------------------------------------- sizing


def test_fixed_fraction_sizes_from_initial_capital() -> None:
    d = Gate(sizing="fixed_fraction", initial_capital=Decimal(20000),
             sizing_fraction=Decimal("0.05")).send(LONG)
    assert d.approved
    assert d.quantity == "10"  # 20000 x 0.05 / 100


@pytest.mark.parametrize(("confidence", "quantity"), [(0.5, "10"), (1.0, "20"), (0.0, "0")])
def test_confidence_scaled_is_capped(confidence: float, quantity: str) -> None:
    d = Gate(sizing="confidence_scaled", sizing_fraction=Decimal("0.2"),
             sizing_max_fraction=Decimal("0.2")).send(LONG, confidence=confidence)
    assert d.quantity == quantity
    assert d.approved == (quantity != "0")
    if quantity == "0":
        assert "entry sized to 0" in detail(d, "order.nonzero")


def test_volatility_adjusted_uses_the_stop_distance() -> None:
    gate = Gate(sizing="volatility_adjusted", risk_per_trade=Decimal("0.01"))
    d = gate.send(LONG, stop="95")  # lose 100 over a 5 move: 20 units
    assert d.approved
    assert d.quantity == "20"
    d = gate.send(SHORT, key=KEYS[1], stop="")
    assert not d.approved
    assert failed(d) == ["order.nonzero", "order.min_notional"]
    assert "stop_loss" in detail(d, "order.nonzero")
    d = gate.send(SHORT, key=KEYS[2], stop="99")  # a stop below a short's entry protects nothing
    assert not d.approved
    assert "protective side" in detail(d, "order.nonzero")


# --------------------------------------------------------------------------- order layer


def test_order_max_notional_and_max_leverage() -> None:
    d = Gate(max_order_notional=Decimal(500)).send(LONG)
    assert failed(d) == ["order.max_notional"]
    assert detail(d, "order.max_notional") == "1000 vs max 500"
    d = Gate(initial_capital=Decimal(800), max_order_notional=Decimal(5000)).send(LONG)
    assert "order.max_leverage" in failed(d)
    assert detail(d, "order.max_leverage") == "1000 / capital 800 = 1.25x vs max 1x"
    d = Gate(initial_capital=Decimal(800), leverage=Decimal(2)).send(LONG, stop="80")
    assert d.approved, failed(d)


def test_order_margin_counts_margin_already_committed() -> None:
    gate = Gate(initial_capital=Decimal(1500))
    assert gate.send(LONG, KEYS[0]).approved
    d = gate.send(LONG, KEYS[1])
    assert failed(d) == ["order.margin"]
    assert detail(d, "order.margin") == "order 1000 + committed 1000 = 2000 vs capital 1500"
    gate = Gate(initial_capital=Decimal(1500), leverage=Decimal(2))
    assert gate.send(LONG, KEYS[0], stop="90").approved
    d = gate.send(LONG, KEYS[1], stop="90")
    assert d.approved
    assert detail(d, "order.margin") == "order 500 + committed 500 = 1000 vs capital 1500"


def test_order_precision_checks_the_stop_tick() -> None:
    d = Gate(price_tick=Decimal("0.5")).send(LONG, stop="90.25")
    assert failed(d) == ["order.precision"]
    assert "tick 0.5" in detail(d, "order.precision")
    assert Gate(price_tick=Decimal("0.5")).send(LONG, stop="90.5").approved


# --------------------------------------------------------------------------- position layer


def test_stop_loss_required() -> None:
    gate = Gate()  # required by default
    d = gate.send(LONG, KEYS[0], stop="")
    assert failed(d) == ["position.stop_loss_required"]
    assert detail(d, "position.stop_loss_required") == "entry without stop_loss"
    d = gate.send(LONG, KEYS[0], stop="101")
    assert failed(d) == ["position.stop_loss_required"]
    assert detail(d, "position.stop_loss_required") == "stop 101 not below entry 100"
    d = gate.send(SHORT, KEYS[1], stop="101")
    assert d.approved
    assert detail(d, "position.stop_loss_required") == "stop 101 above entry 100"
    assert gate.send(FLAT, KEYS[1]).approved  # an exit needs no stop


def test_unparseable_stop_is_rejected_even_when_not_required() -> None:
    gate = Gate(require_stop_loss=False)
    d = gate.send(LONG, stop="ninety")
    assert failed(d) == ["position.stop_loss_required"]
    assert "Signal.stop_loss" in detail(d, "position.stop_loss_required")
    assert gate.send(LONG, stop="").approved  # no stop at all: fine when not required


def test_stop_before_liquidation_isolated() -> None:
    # long liquidation at 10x, mmr 0.005: 100 x (1 - 0.1 + 0.005) = 90.5
    d = Gate(leverage=Decimal(10)).send(LONG, stop="90")
    assert failed(d) == ["position.stop_before_liquidation"]
    assert detail(d, "position.stop_before_liquidation") == (
        "stop 90 <= liquidation 90.5 (isolated, 10x)")
    d = Gate(leverage=Decimal(10)).send(LONG, stop="95")
    assert d.approved
    d = Gate(leverage=Decimal(10)).send(SHORT, stop="105")  # short liquidation 109.5
    assert d.approved
    assert detail(d, "position.stop_before_liquidation") == (
        "stop 105 < liquidation 109.5 (isolated, 10x)")
    d = Gate(leverage=Decimal(10)).send(LONG)
    assert failed(d) == ["position.stop_before_liquidation"]


def test_stop_before_liquidation_cross_uses_the_book() -> None:
    gate = Gate(leverage=Decimal(10), margin_mode="cross", initial_capital=Decimal(150))
    # alone, a 10 unit short at 100 with wallet 150: 100 - (10 x 100 x 0.005 - 150) / 10
    d = gate.send(SHORT, KEYS[0], stop="114")
    assert d.approved, failed(d)
    assert detail(d, "position.stop_before_liquidation") == (
        "stop 114 < liquidation 114.5 (cross, 10x)")
    # the first short is 10 down (mark 101) and holds 5 of maintenance: the same stop on a
    # second short now sits past 100 - (5 + 5 - 150 + 10) / 10 = 113
    gate.handler.book.marks[KEYS[0]] = Decimal(101)
    d = gate.send(SHORT, KEYS[1], stop="114")
    assert failed(d) == ["order.margin", "position.stop_before_liquidation"]
    assert detail(d, "position.stop_before_liquidation") == (
        "stop 114 >= liquidation 113 (cross, 10x)")


def test_position_max_notional_and_flip() -> None:
    gate = Gate(max_position_notional=Decimal(1500))
    assert gate.send(LONG, price="100").approved
    d = gate.send(SHORT, price="100")  # a flip opens a new position: limits apply
    assert d.approved
    assert d.quantity == "20"
    assert not d.reduce_only
    assert gate.handler.positions[KEYS[0]] == Decimal(-10)


# --------------------------------------------------------------------------- portfolio layer


def test_portfolio_max_exposure_and_open_positions() -> None:
    gate = Gate(max_portfolio_notional=Decimal(2500), max_position_notional=Decimal(2000))
    assert gate.send(LONG, KEYS[0]).approved
    assert gate.send(SHORT, KEYS[1]).approved
    d = gate.send(LONG, KEYS[2])
    assert failed(d) == ["portfolio.max_exposure"]
    assert detail(d, "portfolio.max_exposure") == "3000 vs max 2500"
    assert gate.send(FLAT, KEYS[0]).approved
    assert gate.send(LONG, KEYS[2]).approved

    gate = Gate(max_open_positions=2)
    gate.send(LONG, KEYS[0])
    gate.send(LONG, KEYS[1])
    d = gate.send(SHORT, KEYS[2])
    assert failed(d) == ["portfolio.max_open_positions"]
    assert detail(d, "portfolio.max_open_positions") == "3 vs max 2"


def test_exits_pass_every_limit_even_over_all_of_them() -> None:
    loose = Gate(max_position_notional=Decimal(5000))
    for key in KEYS:
        assert loose.send(LONG, key).approved
    tight = Gate(max_order_notional=Decimal(100), max_position_notional=Decimal(100),
                 max_portfolio_notional=Decimal(100), max_open_positions=1,
                 initial_capital=Decimal(100), min_order_notional=Decimal(1),
                 order_notional=Decimal(50), require_stop_loss=True)
    tight.handler.book = loose.handler.book
    tight.handler.kill_switch = True
    d = tight.send(LONG, KEYS[2], price="200")  # already long: no change, no limit judged
    assert failed(d) == ["order.nonzero", "order.min_notional"]
    for key in KEYS:
        d = tight.send(FLAT, key, price="300")
        assert d.approved, failed(d)
        assert d.reduce_only
    assert tight.handler.positions == {}


# --------------------------------------------------------------------------- restore


def test_restore_rebuilds_quantities_entries_and_marks() -> None:
    gate = Gate()
    gate.send(LONG, KEYS[0], price="100")
    gate.send(SHORT, KEYS[1], price="50")
    gate.send(SHORT, KEYS[0], price="110")  # flip: entry 110
    gate.send(LONG, KEYS[1], price="55")  # already short? no: flip to long at 55
    gate.send(FLAT, KEYS[2], price="7")  # rejected, but marks CCC
    restored = RiskHandler(RiskSettings())
    by_topic = {t: [(k, m) for tt, k, m in gate.items if tt == t]
                for t in restored.restore_from}
    for topic in restored.restore_from:  # the host reads each topic whole, in this order
        for key, message in by_topic.get(topic, []):
            restored.restore(Inbound(topic, key, message))  # type: ignore[arg-type]
    restored.restored()
    assert restored.book == gate.handler.book
    assert restored.book.positions[KEYS[0]].entry == Decimal(110)
    assert restored.book.marks[KEYS[2]] == Decimal(7)
    assert isinstance(by_topic[topics.ORDER_APPROVED][0][1], order_approved_pb2.ApprovedOrder)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("env", "name"), [
    ({"MERIDIAN_RISK_SIZING": "martingale"}, "MERIDIAN_RISK_SIZING"),
    ({"MERIDIAN_RISK_LEVERAGE": "0.5"}, "MERIDIAN_RISK_LEVERAGE"),
    ({"MERIDIAN_RISK_MARGIN_MODE": "portfolio"}, "MERIDIAN_RISK_MARGIN_MODE"),
    ({"MERIDIAN_RISK_LEVERAGE": "100", "MERIDIAN_RISK_MAINTENANCE_MARGIN_RATE": "0.01"},
     "maintenance_margin_rate"),
    ({"MERIDIAN_RISK_MAX_POSITION_NOTIONAL": "60000"}, "max_portfolio_notional"),
    ({"MERIDIAN_RISK_PRICE_TICK": "0"}, "MERIDIAN_RISK_PRICE_TICK"),
    ({"MERIDIAN_RISK_MAX_OPEN_POSITIONS": "0"}, "MERIDIAN_RISK_MAX_OPEN_POSITIONS"),
])
def test_settings_errors_name_the_field(env: dict[str, str], name: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load(RiskSettings, environ=env)


def test_every_setting_is_described() -> None:
    for field_name, info in RiskSettings.model_fields.items():
        assert info.description, field_name
