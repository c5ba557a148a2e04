"""Does the exchange match what the executor published? A pure function, tested without one.

Compared per symbol:
- every open order on the exchange carries a client id this executor created (or one of its
  own ids waiting to be re-consumed after a restart);
- every fill with a client id is ours the same way; a fill without one must be the exchange's
  own order for a stop-loss or take-profit attached to our position (counted like ours);
- the exchange's position equals the signed sum of our published fills plus the fills of our
  orders that are waiting to be adopted.
Each mismatch is one readable line naming the symbol, the ids and the numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from meridian_common.money import ZERO, to_str
from meridian_execution.live.venue import VenueFill, VenueOrder


@dataclass(slots=True)
class Snapshot:
    open_orders: dict[str, list[VenueOrder]] = field(default_factory=dict)
    fills: dict[str, list[VenueFill]] = field(default_factory=dict)
    # None: the position moved while it was read; not compared this time
    positions: dict[str, Decimal | None] = field(default_factory=dict)


def _signed(fill: VenueFill) -> Decimal:
    return fill.quantity if fill.side == "buy" else -fill.quantity


def mismatches(snapshot: Snapshot, ours: Collection[str], position: Mapping[str, Decimal],
               known: Collection[str], prefix: str) -> list[str]:
    """Readable lines, one per mismatch; empty when the exchange matches."""
    problems: list[str] = []

    def mine(coid: str) -> bool:
        return coid in ours or (coid.startswith(prefix) and coid in known)

    for symbol, found in sorted(snapshot.open_orders.items()):
        for order in found:
            if not mine(order.client_order_id):
                problems.append(f"{symbol}: open order {order.exchange_order_id} "
                                f"(client id {order.client_order_id or 'none'}) was not "
                                "placed by this executor")
    for symbol, fills in sorted(snapshot.fills.items()):
        pending = ZERO
        for fill in fills:
            foreign = not mine(fill.client_order_id) if fill.client_order_id \
                else not fill.protective
            if foreign:
                problems.append(f"{symbol}: fill {fill.exec_id} of order "
                                f"{fill.client_order_id or fill.exchange_order_id} was not "
                                "placed by this executor")
            elif fill.client_order_id and fill.client_order_id not in ours:
                pending += _signed(fill)
        exchange = snapshot.positions.get(symbol)
        if exchange is None:
            continue
        expected = position.get(symbol, ZERO) + pending
        if exchange != expected:
            problems.append(f"{symbol}: exchange position {to_str(exchange)} != "
                            f"{to_str(expected)} from the published fills")
    return problems
