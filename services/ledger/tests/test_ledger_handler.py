"""Ledger: candles marked in event time after the fills they contain, fills booked once,
and the same PositionUpdates whatever the interleaving of fills and candles."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.v1 import candle_pb2, common_pb2, fill_pb2, portfolio_pb2
from meridian_common import codec, topics
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.testing import interleave
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
BUY, SELL = common_pb2.SIDE_BUY, common_pb2.SIDE_SELL


def candle(i: int, close: str, symbol: str = "BTCUSDT") -> candle_pb2.Candle:
    return make_candle("binance", symbol, "1h",
                       RawCandle(T0 + i * HOUR, close, close, close, close, "1"), "ingest")


def fill(i: int, side: int, qty: str, price: str, fee: str, n: int = 1,
         symbol: str = "BTCUSDT") -> fill_pb2.Fill:
    fid = f"mrd-{symbol.lower()}-{i}-{n}:f1"
    return fill_pb2.Fill(
        meta=common_pb2.Meta(id=fid, cause_id=f"mrd-{i}", event_time_ms=T0 + i * HOUR,
                             producer="execution"),
        fill_id=fid, client_order_id=f"mrd-{i}", exchange="binance", symbol=symbol, side=side,
        quantity=qty, price=price, fee=fee, fee_currency="USDT",
        liquidity=fill_pb2.LIQUIDITY_TAKER)


def wm(i: int, key: str = KEY) -> common_pb2.Watermark:
    return common_pb2.Watermark(key=key, event_time_ms=T0 + i * HOUR, producer="execution")


class Feeder:
    """Hands messages to the handler with physical positions, one offset counter per topic."""

    def __init__(self, handler: LedgerHandler) -> None:
        self.handler = handler
        self.offsets: dict[str, int] = {}

    def __call__(self, *msgs: object) -> list[portfolio_pb2.PositionUpdate]:
        out = Outbox("ledger")
        for m in msgs:
            topic = topics.CANDLE if isinstance(m, candle_pb2.Candle) else topics.FILL
            key = m.key if isinstance(m, common_pb2.Watermark) else \
                f"binance:{m.symbol}"  # type: ignore[attr-defined]
            offset = self.offsets.get(topic, 0)
            self.offsets[topic] = offset + 1
            self.handler.handle(Inbound(topic, key, m, (topic, 0, offset)), out)  # type: ignore[arg-type]
        assert all(t == topics.PORTFOLIO for t, _, _ in out.items)
        return [m for _, _, m in out.items]  # type: ignore[misc]


def new() -> tuple[LedgerHandler, Feeder]:
    handler = LedgerHandler(LedgerSettings(), store=None)
    return handler, Feeder(handler)


def test_candle_waits_for_the_fill_watermark() -> None:
    handler, feed = new()
    assert feed(candle(0, "30000")) == []
    assert handler.retained() == {(topics.CANDLE, 0): 0}
    assert feed(common_pb2.Watermark(key=KEY, event_time_ms=T0 - 1)) == []
    (update,) = feed(wm(0))
    assert handler.retained() == {}
    c = candle(0, "30000")
    assert update.meta.id == f"pos:paper:{KEY}:{c.close_time_ms}"
    assert update.meta.cause_id == c.meta.id
    assert update.meta.event_time_ms == update.as_of_ms == c.close_time_ms
    assert (update.account, update.exchange, update.symbol) == ("paper", "binance", "BTCUSDT")
    assert update.quantity == "0"
    assert update.mark_price == "30000"
    assert update.net_pnl == "0"
    codec.validate(update)


def test_update_key_is_account_scoped() -> None:
    handler = LedgerHandler(LedgerSettings(account="acct-1"), store=None)
    out = Outbox("ledger")
    handler.handle(Inbound(topics.CANDLE, KEY, candle(0, "1")), out)
    handler.handle(Inbound(topics.FILL, KEY, wm(0)), out)
    assert [(t, k) for t, k, _ in out.items] == [(topics.PORTFOLIO, "acct-1:" + KEY)]


def test_fill_is_booked_before_the_mark_of_its_candle() -> None:
    for order in ("fill-first", "candle-first"):
        _handler, feed = new()
        f = fill(1, BUY, "0.1", "30010", "3.001")
        c = candle(1, "30050")
        msgs = [f, c] if order == "fill-first" else [c, f]
        assert feed(candle(0, "30000"), *msgs) == []
        (u,) = feed(wm(1))[-1:]
        assert u.as_of_ms == T0 + 2 * HOUR
        assert u.quantity == "0.1"
        assert u.average_price == "30010"
        assert u.unrealized_pnl == "4"
        assert u.fees_paid == "3.001"
        assert u.net_pnl == "0.999"


def test_fill_after_the_candle_open_is_not_in_that_mark() -> None:
    handler, feed = new()
    updates = feed(candle(0, "30000"), fill(1, BUY, "1", "30010", "0"), wm(0))
    assert [u.quantity for u in updates] == ["0"]
    assert handler.retained() == {(topics.FILL, 0): 0}  # the fill is held, not yet booked


def test_duplicate_fill_is_booked_once() -> None:
    handler, feed = new()
    f = fill(1, BUY, "0.5", "100", "0.05")
    feed(f, f, candle(1, "110"))
    (u,) = feed(wm(1))
    assert u.quantity == "0.5"
    feed(f)  # redelivered after booking
    (u,) = feed(candle(2, "120"), wm(2))
    assert u.quantity == "0.5"
    assert u.fees_paid == "0.05"
    assert len(handler.batch.fills) == 1


def test_round_trip_realizes_pnl() -> None:
    handler, feed = new()
    updates = feed(
        candle(1, "105"), fill(1, BUY, "2", "100", "0.2"), wm(1),
        fill(2, SELL, "2", "110", "0.22"), candle(2, "111"), wm(2),
    )
    last = updates[-1]
    assert last.quantity == "0"
    assert last.realized_pnl == "20"
    assert last.unrealized_pnl == "0"
    assert last.fees_paid == "0.42"
    assert last.net_pnl == "19.58"
    assert last.trades_closed == 1
    assert len(handler.batch.trades) == 1
    assert handler.batch.trades[0]["net_pnl"] == Decimal("19.58")


async def test_flush_without_store_clears_the_batch() -> None:
    handler, feed = new()
    feed(fill(1, BUY, "1", "1", "0"), candle(1, "1"), wm(1))
    assert handler.batch.fills
    assert handler.batch.equity
    assert handler.batch.positions
    await handler.flush()
    assert not handler.batch


def test_redelivered_candle_is_marked_once() -> None:
    handler, feed = new()
    assert len(feed(candle(0, "1"), candle(0, "1"), wm(0))) == 1
    assert feed(candle(0, "2")) == []
    assert handler.retained() == {}


def test_watermark_on_candle_topic_does_not_crash() -> None:
    """The codec lets a Watermark through on md.candle.v1; the ledger must ignore it or reject
    it as InvalidMessage (-> DLQ), not raise an error that stops the service."""
    handler, feed = new()
    out = Outbox("ledger")
    with contextlib.suppress(InvalidMessage):
        handler.handle(Inbound(topics.CANDLE, KEY, wm(0), (topics.CANDLE, 0, 0)), out)
    assert out.items == []
    assert len(feed(candle(0, "1"), wm(0))) == 1


@pytest.mark.parametrize(("side", "qty"), [
    (BUY, "0"), (BUY, "-1"), (common_pb2.SIDE_UNSPECIFIED, "1"), (7, "1"),
])
def test_invalid_fill_is_rejected_not_booked(side: int, qty: str) -> None:
    """A Fill that passes the codec (decimal strings parse) but has a non-positive quantity or no
    side must be rejected as InvalidMessage (-> DLQ) or ignored: it must neither be booked (an
    unspecified side is not a sell) nor make a later candle or watermark raise, which would stop
    the ledger and, as the offset is not committed, stop it again after every restart."""
    handler, feed = new()
    bad = fill(0, side, qty, "100", "0")
    with contextlib.suppress(InvalidMessage):
        feed(bad)
    (update,) = feed(candle(0, "100"), wm(0))
    assert update.quantity == "0"
    assert handler.symbols[KEY].book.quantity == 0


# --- determinism over interleavings ---------------------------------------------------------

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[object], list[object], list[bool]]:
    n = draw(st.integers(min_value=1, max_value=8))
    cs: list[object] = []
    fs: list[object] = []
    for i in range(n):
        for sym in SYMBOLS:
            if draw(st.integers(0, 5)) == 0:
                continue  # the symbol has a gap here
            cs.append(candle(i, str(draw(st.integers(100, 200))), sym))
            if draw(st.integers(0, 5)) == 0:
                cs.append(candle(i, "1", sym))  # redelivery
    for i in range(n):
        for sym in SYMBOLS:
            for k in range(draw(st.integers(0, 2))):
                f = fill(i, draw(st.sampled_from([BUY, SELL])),
                         str(Decimal(draw(st.integers(1, 1000))) / 100),
                         str(draw(st.integers(100, 200))),
                         str(Decimal(draw(st.integers(0, 100))) / 1000), n=k, symbol=sym)
                fs.append(f)
                if draw(st.booleans()):
                    fs.append(f)  # redelivered fill
            if draw(st.booleans()) or i == n - 1:
                fs.append(wm(i, f"binance:{sym}"))
    picks = draw(st.lists(st.booleans(), min_size=len(cs) + len(fs),
                          max_size=len(cs) + len(fs)))
    return cs, fs, picks


def per_key(updates: list[portfolio_pb2.PositionUpdate]) -> dict[str, list[bytes]]:
    grouped: dict[str, list[bytes]] = {}
    for u in updates:
        grouped.setdefault(u.symbol, []).append(codec.encode(u)[0])
    return grouped


@settings(max_examples=200, deadline=None)
@given(streams())
def test_updates_do_not_depend_on_interleaving(case: tuple[list[object], list[object],
                                                           list[bool]]) -> None:
    cs, fs, picks = case
    _, ref_feed = new()
    reference = ref_feed(*cs, *fs)
    handler, feed = new()
    got = feed(*interleave(cs, fs, picks))
    assert per_key(got) == per_key(reference)
    # every distinct candle is marked exactly once, in open-time order
    for sym in SYMBOLS:
        opens = sorted({c.open_time_ms for c in cs if c.symbol == sym})  # type: ignore[attr-defined]
        marked = [u.as_of_ms - HOUR for u in got if u.symbol == sym]
        assert marked == opens
    assert handler.retained() == {} or all(
        topic == topics.FILL for topic, _ in handler.retained())
