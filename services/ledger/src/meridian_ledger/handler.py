"""Ledger: fills and candles in, positions, PnL and the equity curve out (DB and portfolio.v1);
risk decisions in, as the audit trail of the risk gate (DB).

Per symbol, candles are marked in event time: a candle is marked only once the fill watermark has
reached its open, after every fill up to that open is booked. So the PnL curve is the same however
fills and candles interleave in arrival. Until then the candle is held back (and its offset not
committed). A fill is booked once: its id is remembered, and unique in the database.

Funding (MERIDIAN_LEDGER_FUNDING) joins the same way, on perpetual keys only (venue name
ending in -linear, meridian_common.venues): a perpetual's candle also waits until md.funding.v1
for its key has reached its close (a settlement or a funding Watermark); every settlement up to
that close is then paid on the position held through it (fills up to the candle's open), valued
at the close. A settlement at or before the last close already marked (after a restart: the
positions row's as_of) is not paid twice. A spot key never waits for funding (no stream will
come, so it would stall forever: the spot leg of a spot/perpetual pair must be marked as any
spot market), and a funding record on a spot key is bad input (InvalidMessage, to the DLQ).

Risk decisions change no position, so they take no part in that merge: each becomes a row of the
batch at once, written in the same transaction as the fills, and the database's unique key on the
decision id drops a redelivered one. The ledger writes them because it already is the service
that makes the trading record durable, one transaction per batch.

Tracing: portfolio.v1 is one update per candle mark (its cause is the candle), not per fill, so
a mark continues its candle's trace, the context held with the candle while it waits for the
fill watermark; a fill's own trace ends here (its booking is in the fill.v1 consumer span).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from opentelemetry.context import Context
from prometheus_client import CollectorRegistry

from meridian.v1 import (
    candle_pb2,
    common_pb2,
    fill_pb2,
    funding_pb2,
    portfolio_pb2,
    risk_decision_pb2,
)
from meridian_common import topics, venues
from meridian_common.accounting import ClosedTrade, PositionBook
from meridian_common.db import schema
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox, Position
from meridian_common.money import ZERO, dec, to_str
from meridian_ledger.metrics import AccountCurve, LedgerMetrics
from meridian_ledger.settings import LedgerSettings
from meridian_ledger.store import Batch, SqlLedgerStore

log = logging.getLogger(__name__)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _check_fill(fill: fill_pb2.Fill) -> None:
    """Reject a fill that cannot be booked now, so it goes to the DLQ instead of failing later."""
    if fill.side not in (common_pb2.SIDE_BUY, common_pb2.SIDE_SELL):
        raise InvalidMessage(f"fill {fill.fill_id}: side {fill.side} is neither BUY nor SELL")
    if dec(fill.quantity, "Fill.quantity") <= 0:
        raise InvalidMessage(f"fill {fill.fill_id}: quantity {fill.quantity} is not positive")
    if dec(fill.price, "Fill.price") <= 0:
        raise InvalidMessage(f"fill {fill.fill_id}: price {fill.price} is not positive")


_SIDES = {common_pb2.SIDE_UNSPECIFIED: "", common_pb2.SIDE_BUY: "buy",
          common_pb2.SIDE_SELL: "sell"}


def _decision_row(decision: risk_decision_pb2.RiskDecision) -> dict[str, object]:
    """The audit row of a decision; InvalidMessage naming the field if it cannot be stored."""
    did = decision.meta.id

    def number(name: str) -> Decimal:
        try:
            return dec(getattr(decision, name), f"RiskDecision.{name}")
        except ValueError as exc:
            raise InvalidMessage(f"decision {did}: {exc}") from None

    side = _SIDES.get(decision.side)
    if side is None:
        raise InvalidMessage(f"decision {did}: RiskDecision.side {decision.side} is not BUY, "
                             "SELL or unspecified")
    for name in ("exchange", "symbol", "client_order_id"):
        value, limit = getattr(decision, name), schema.risk_decisions.c[name].type.length
        if len(value) > limit:
            raise InvalidMessage(f"decision {did}: RiskDecision.{name} is longer than {limit} "
                                 f"characters: {value[:40]!r}")
    return {
        "ts": _ts(decision.meta.event_time_ms), "decision_id": did,
        "cause_id": decision.meta.cause_id, "exchange": decision.exchange,
        "symbol": decision.symbol, "approved": decision.approved,
        "client_order_id": decision.client_order_id, "side": side,
        "quantity": number("quantity"), "reference_price": number("reference_price"),
        "reduce_only": decision.reduce_only,
        "failed_rules": [r.rule for r in decision.rules if not r.passed],
        "rules": [{"rule": r.rule, "passed": r.passed, "detail": r.detail}
                  for r in decision.rules],
    }


@dataclass(slots=True)
class _Symbol:
    exchange: str = ""
    symbol: str = ""
    book: PositionBook = field(default_factory=PositionBook)
    fills: deque[tuple[fill_pb2.Fill, Position]] = field(default_factory=deque)
    # (candle, its trace context, position): waiting for the fill watermark
    candles: deque[tuple[candle_pb2.Candle, Context | None, Position]] = field(
        default_factory=deque)
    fill_wm: int = 0
    last_marked_open: int = -1
    # fill Watermarks not yet used by a mark (time, position): retained, so a restart gets them
    # again instead of waiting for watermarks it consumed and committed before the crash
    fill_wms: deque[tuple[int, Position]] = field(default_factory=deque)
    # (settlement ms, rate, position) waiting for their candle; progress of md.funding.v1
    settlements: deque[tuple[int, Decimal, Position]] = field(default_factory=deque)
    funding_wm: int = -1
    funding_to: int = -1  # settlements up to here are paid
    waits_for_funding: bool = False  # funding on and a perpetual key: resolved once, at creation
    net: Decimal = ZERO  # net PnL of the last mark (its equity row's), for the account equity


class LedgerHandler(Handler):
    name = "ledger"
    inputs = (topics.FILL, topics.CANDLE, topics.FUNDING, topics.RISK_DECISION)
    outputs = (topics.PORTFOLIO,)

    def __init__(self, settings: LedgerSettings, store: SqlLedgerStore | None) -> None:
        self.settings = settings
        self.store = store
        self.symbols: dict[str, _Symbol] = {}
        self.seen_fills: set[str] = set()
        self.batch = Batch()
        self.marks = 0
        self.metrics: LedgerMetrics | None = None
        # the account curve's peak (the drawdown's reference); from the stored curve at start
        self.curve = AccountCurve(settings.initial_capital)

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        self.metrics = LedgerMetrics(registry)
        self._observe()

    def equity(self) -> Decimal:
        """Initial capital + every symbol's net PnL at its last mark: the account curve's last
        point, as the control plane sums the equity rows."""
        return self.settings.initial_capital + sum((st.net for st in self.symbols.values()),
                                                   ZERO)

    def _observe(self) -> None:
        """The account gauges from the books (after each batch, and once the state is loaded)."""
        if self.metrics is None:
            return
        books = [st.book for st in self.symbols.values()]
        for key in self.symbols:
            self.metrics.fills.labels(key.rpartition(":")[2])  # a symbol seen reads 0
        self.metrics.account(
            equity=self.equity(), peak=self.curve.peak,
            realized=sum((b.realized_pnl - b.fees_paid - b.funding_paid for b in books), ZERO),
            funding=sum((b.funding_paid for b in books), ZERO),
            open_positions=sum(1 for b in books if b.quantity != 0))

    async def start(self) -> None:
        """Rebuild each symbol's book from the stored fills (the trading record), so an open
        trade keeps its entry and a round trip spanning a restart still gets its trades row;
        funding paid and how far it was paid come from the positions rows (fills hold none)."""
        if self.store is None:
            return
        account = self.settings.account
        for row in await self.store.fills(account):
            st = self._symbol(f"{row['exchange']}:{row['symbol']}")
            st.exchange, st.symbol = row["exchange"], row["symbol"]
            st.book.apply_fill(row["side"], row["quantity"], row["price"], row["fee"],
                               int(row["ts"].timestamp() * 1000))
            self.seen_fills.add(row["fill_id"])
        marked = False
        for row in await self.store.positions(account):
            st = self._symbol(f"{row['exchange']}:{row['symbol']}")
            st.exchange, st.symbol = row["exchange"], row["symbol"]
            if st.book.quantity != row["quantity"]:
                log.warning("stored position differs from its fills: the fills win", extra={
                    "symbol": row["symbol"], "position": str(row["quantity"]),
                    "from_fills": str(st.book.quantity)})
            st.book.funding_paid = row["funding_paid"]
            if st.book.open_trade is not None:
                st.book.open_trade.funding = ZERO  # per-trade funding before the restart: lost
            as_of = int(row["as_of"].timestamp() * 1000)
            st.funding_to = as_of
            # candles up to the last close marked are not marked again: the book rebuilt from
            # the fills is already past them (it would rewrite their rows with a later position)
            st.last_marked_open = max(st.last_marked_open, as_of - 1)
            marked = True
        if marked:  # positions rows are written with the equity rows: none, no curve
            await self._load_marks(account)
        self._observe()
        if self.seen_fills:
            log.info("ledger state loaded", extra={"fills": len(self.seen_fills),
                                                   "positions": len(self.symbols)})

    async def _load_marks(self, account: str) -> None:
        """The equity and its peak at the last marked candle, from the stored curve, so the
        gauges of a restarted ledger read what they read before the restart."""
        assert self.store is not None
        nets, peak_net = await self.store.marks(account)
        for (exchange, symbol), net in nets.items():
            key = f"{exchange}:{symbol}"
            st = self._symbol(key)
            st.net = net
            self.curve.restore(key, st.funding_to, net)  # funding_to: the last close marked
        self.curve.restored(peak_net)

    def _symbol(self, key: str) -> _Symbol:
        st = self.symbols.get(key)
        if st is None:
            st = self.symbols[key] = _Symbol(
                waits_for_funding=self.settings.funding and venues.is_perpetual_key(key))
            self.curve.track(key)  # its marks complete the curve's points from now on
        return st

    def handle(self, msg: Inbound, out: Outbox) -> None:
        if msg.topic == topics.RISK_DECISION:
            if not msg.is_watermark:  # the topic is dense; a stray watermark says nothing
                self.batch.decisions.append(_decision_row(msg.message))  # type: ignore[arg-type]
            return
        if msg.topic == topics.FUNDING:
            if self.settings.funding and self._is_funded(msg):
                self._funding(msg)
                self._process(msg.key, self._symbol(msg.key), out)
            return
        st = self._symbol(msg.key)
        if msg.is_watermark:
            # (candles are dense: their watermarks add nothing)
            if msg.topic == topics.FILL and msg.event_time_ms > st.fill_wm:
                st.fill_wm = msg.event_time_ms
                st.fill_wms.append((msg.event_time_ms, msg.position))
        elif msg.topic == topics.CANDLE:
            candle: candle_pb2.Candle = msg.message  # type: ignore[assignment]
            if candle.open_time_ms > st.last_marked_open and (
                not st.candles or candle.open_time_ms > st.candles[-1][0].open_time_ms
            ):
                st.candles.append((candle, msg.trace_context, msg.position))
        else:
            fill: fill_pb2.Fill = msg.message  # type: ignore[assignment]
            _check_fill(fill)
            if fill.fill_id not in self.seen_fills:
                self.seen_fills.add(fill.fill_id)
                st.fills.append((fill, msg.position))
        self._process(msg.key, st, out)

    @staticmethod
    def _is_funded(msg: Inbound) -> bool:
        """Whether a funding message concerns a market that settles funding. A Watermark on a
        spot key promises nothing anyone waits for: dropped. A rate on one would be paid on a
        spot position: refused."""
        if venues.is_perpetual_key(msg.key):
            return True
        if msg.is_watermark:
            return False
        raise InvalidMessage(f"funding for {msg.key}: funding is for perpetual markets (a "
                             "-linear venue), not a spot key")

    def _funding(self, msg: Inbound) -> None:
        st = self._symbol(msg.key)
        if msg.is_watermark:
            st.funding_wm = max(st.funding_wm, msg.event_time_ms)
            return
        rate: funding_pb2.FundingRate = msg.message  # type: ignore[assignment]
        try:
            value = dec(rate.rate, "FundingRate.rate")
        except ValueError as exc:
            raise InvalidMessage(f"funding {rate.meta.id}: {exc}") from None
        t = rate.funding_time_ms
        st.funding_wm = max(st.funding_wm, t)
        if t > st.funding_to and (not st.settlements or t > st.settlements[-1][0]):
            st.settlements.append((t, value, msg.position))

    @staticmethod
    def _ready(st: _Symbol) -> bool:
        """Fills are known up to the head candle's open and, on a perpetual with funding on,
        settlements up to its close."""
        candle = st.candles[0][0]
        return candle.open_time_ms <= st.fill_wm and (
            not st.waits_for_funding or st.funding_wm >= candle.close_time_ms)

    def _process(self, key: str, st: _Symbol, out: Outbox) -> None:
        while st.candles and self._ready(st):
            candle, trace, _ = st.candles.popleft()
            while st.fills and st.fills[0][0].meta.event_time_ms <= candle.open_time_ms:
                fill, _ = st.fills.popleft()
                self._book(st, fill)
            if st.settlements:
                self._settle(st, candle)
            self._mark(key, st, candle, out, trace)

    def _settle(self, st: _Symbol, candle: candle_pb2.Candle) -> None:
        """Pay every settlement up to the candle's close on the position held through it."""
        close = candle.close_time_ms
        mark = dec(candle.close, "Candle.close")
        while st.settlements and st.settlements[0][0] <= close:
            t, rate, _ = st.settlements.popleft()
            if t > st.funding_to:
                st.book.apply_funding(rate, mark)
        st.funding_to = max(st.funding_to, close)

    def _book(self, st: _Symbol, fill: fill_pb2.Fill) -> None:
        st.exchange, st.symbol = fill.exchange, fill.symbol
        t = fill.meta.event_time_ms
        fee = dec(fill.fee, "Fill.fee")
        closed = st.book.apply_fill(fill.side, dec(fill.quantity, "Fill.quantity"),
                                    dec(fill.price, "Fill.price"), fee, t)
        if self.metrics is not None and not getattr(self, "replaying", False):
            self.metrics.booked(fill.symbol, fee)
        account = self.settings.account
        self.batch.fills.append({
            "ts": _ts(t), "fill_id": fill.fill_id, "account": account,
            "client_order_id": fill.client_order_id, "exchange": fill.exchange,
            "symbol": fill.symbol, "side": fill.side, "quantity": dec(fill.quantity),
            "price": dec(fill.price), "fee": dec(fill.fee), "fee_currency": fill.fee_currency,
        })
        for trade in closed:
            self.batch.trades.append(self._trade_row(st, trade))

    def _trade_row(self, st: _Symbol, trade: ClosedTrade) -> dict[str, object]:
        return {
            "account": self.settings.account, "exchange": st.exchange, "symbol": st.symbol,
            "entry_time": _ts(trade.entry_time_ms), "exit_time": _ts(trade.exit_time_ms),
            "direction": trade.direction, "quantity": trade.quantity,
            "entry_price": trade.entry_price, "exit_price": trade.exit_price,
            "gross_pnl": trade.gross_pnl, "fees": trade.fees, "net_pnl": trade.net_pnl,
            "funding": trade.funding,
        }

    def _mark(self, key: str, st: _Symbol, candle: candle_pb2.Candle, out: Outbox,
              trace: Context | None) -> None:
        st.exchange, st.symbol = candle.exchange, candle.symbol
        st.last_marked_open = candle.open_time_ms
        while st.fill_wms and st.fill_wms[0][0] <= candle.open_time_ms:
            st.fill_wms.popleft()  # used: a later watermark (or this mark) covers it
        mark = dec(candle.close, "Candle.close")
        book = st.book
        unrealized = book.unrealized(mark)
        net = book.realized_pnl + unrealized - book.fees_paid - book.funding_paid
        t = candle.close_time_ms
        account = self.settings.account
        self.marks += 1
        st.net = net
        self.curve.mark(key, t, net)
        self.batch.equity.append({
            "account": account, "exchange": st.exchange, "symbol": st.symbol, "ts": _ts(t),
            "quantity": book.quantity, "mark_price": mark, "realized_pnl": book.realized_pnl,
            "unrealized_pnl": unrealized, "fees_paid": book.fees_paid, "net_pnl": net,
            "funding_paid": book.funding_paid,
        })
        self.batch.positions[(account, st.exchange, st.symbol)] = {
            "account": account, "exchange": st.exchange, "symbol": st.symbol,
            "quantity": book.quantity, "average_price": book.average_price,
            "realized_pnl": book.realized_pnl, "fees_paid": book.fees_paid,
            "trades_closed": book.trades_closed, "as_of": _ts(t),
            "funding_paid": book.funding_paid,
        }
        out.emit(topics.PORTFOLIO, f"{account}:{key}", portfolio_pb2.PositionUpdate(
            meta=common_pb2.Meta(id=f"pos:{account}:{key}:{t}", cause_id=candle.meta.id,
                                 event_time_ms=t, producer=self.name),
            account=account, exchange=st.exchange, symbol=st.symbol, as_of_ms=t,
            quantity=to_str(book.quantity), average_price=to_str(book.average_price),
            mark_price=candle.close, realized_pnl=to_str(book.realized_pnl),
            unrealized_pnl=to_str(unrealized), fees_paid=to_str(book.fees_paid),
            net_pnl=to_str(net), trades_closed=book.trades_closed,
            funding_paid=to_str(book.funding_paid),
        ), cause=trace)

    async def flush(self) -> None:
        self._observe()  # per batch: per mark, the gauges cost the replay more than the books
        if not self.batch:
            return
        batch, self.batch = self.batch, Batch()
        if self.store is not None:
            await self.store.write(batch)

    def retained(self) -> Mapping[tuple[str, int], int]:
        low: dict[tuple[str, int], int] = {}
        for st in self.symbols.values():
            for queue in (st.candles, st.fills, st.settlements, st.fill_wms):
                if queue:  # a queue is in offset order: its head is its lowest offset
                    topic, partition, offset = queue[0][-1]
                    if 0 <= offset < low.get((topic, partition), offset + 1):
                        low[(topic, partition)] = offset
        return low
