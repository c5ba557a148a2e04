"""The gate's rules, each named "<layer>.<rule>" and reported in every decision.

Positions are the gate's own book of what it approved (paper market orders always fill), which
keeps the gate the single serialization point: two signals can never both pass a limit that only
one of them fits. Reconciling that book with portfolio.v1 and order.event.v1 comes with the full
risk issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from meridian.v1 import common_pb2
from meridian.v1.risk_decision_pb2 import RuleResult
from meridian_common.money import MONEY_CONTEXT, ZERO, to_str
from meridian_common.sizing import quantity_for_notional
from meridian_risk.settings import RiskSettings


@dataclass(frozen=True, slots=True)
class Proposal:
    side: int
    quantity: Decimal  # positive
    target: Decimal  # signed position after the order
    reduce_only: bool


KNOWN_DIRECTIONS = (common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT,
                    common_pb2.DIRECTION_FLAT)


def target_position(direction: int, current: Decimal, price: Decimal,
                    settings: RiskSettings) -> Decimal:
    if direction not in KNOWN_DIRECTIONS:
        return current  # no trade; evaluate() reports the rule that failed
    if direction == common_pb2.DIRECTION_FLAT:
        return ZERO
    size = quantity_for_notional(settings.order_notional, price, settings.quantity_step)
    if direction == common_pb2.DIRECTION_LONG:
        return current if current > 0 else size
    return current if current < 0 else -size


def propose(direction: int, current: Decimal, price: Decimal, settings: RiskSettings) -> Proposal:
    target = target_position(direction, current, price, settings)
    delta = target - current
    side = common_pb2.SIDE_BUY if delta > 0 else common_pb2.SIDE_SELL
    reduce_only = target == 0 or (abs(target) < abs(current) and (target > 0) == (current > 0))
    return Proposal(side, abs(delta), target, reduce_only)


def evaluate(direction: int, proposal: Proposal, price: Decimal, kill_switch: bool,
             settings: RiskSettings) -> list[RuleResult]:
    value = MONEY_CONTEXT.multiply(proposal.quantity, price)
    position_value = MONEY_CONTEXT.multiply(abs(proposal.target), price)
    known = direction in KNOWN_DIRECTIONS
    return [
        RuleResult(rule="signal.direction", passed=known,
                   detail="long, short or flat" if known else f"unknown direction {direction}"),
        RuleResult(rule="order.nonzero", passed=proposal.quantity > 0,
             detail="order changes the position" if proposal.quantity > 0
             else "position already at target"),
        RuleResult(rule="order.min_notional", passed=value >= settings.min_order_notional,
             detail=f"{to_str(value)} vs min {to_str(settings.min_order_notional)}"),
        RuleResult(rule="position.max_notional",
             passed=proposal.reduce_only or position_value <= settings.max_position_notional,
             detail=f"{to_str(position_value)} vs max {to_str(settings.max_position_notional)}"),
        RuleResult(rule="system.kill_switch", passed=not kill_switch or proposal.reduce_only,
             detail="engaged: only reduce-only orders pass" if kill_switch else "clear"),
    ]
