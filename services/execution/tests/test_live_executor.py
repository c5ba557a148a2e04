"""The live executor against the fake exchange, through real ccxt: no broker, no mocks.

The handler is driven the way the host drives it (handle per record, then act), its outputs
collected; the fake exchange is the truth for "was anything sent twice".
"""

from __future__ import annotations

import logging
from decimal import Decimal

import ccxt.async_support as ccxt
import pytest

from meridian.v1 import common_pb2, control_pb2, fill_pb2, order_approved_pb2
from meridian_common import ids, orders, topics, venues
from meridian_common.ccxt_urls import reroute_urls
from meridian_common.handler import Inbound
from meridian_common.testing import sibling_module
from meridian_execution.live.handler import HALT_KEY
from meridian_fake_exchange import TEST_API_KEY, TEST_API_SECRET, FakeExchange

live = sibling_module(__file__, "live_support")
START_MS, Driver, Starter = live.START_MS, live.Driver, live.Starter
KEY = "bybit-linear:BTCUSDT"  # the venue name ingest gives a linear market


def approved(signal: str, side: int = common_pb2.SIDE_BUY, qty: str = "0.01", *,
             symbol: str = "BTCUSDT", reduce_only: bool = False, limit: str = "",
             stop: str = "", venue: str = "bybit", market_type: str = "linear",
             ) -> tuple[str, str, order_approved_pb2.ApprovedOrder]:
    coid = ids.client_order_id(signal)
    kind = order_approved_pb2.ORDER_TYPE_LIMIT if limit else order_approved_pb2.ORDER_TYPE_MARKET
    exchange = venues.venue(venue, market_type)
    return topics.ORDER_APPROVED, f"{exchange}:{symbol}", order_approved_pb2.ApprovedOrder(
        meta=common_pb2.Meta(id=coid, event_time_ms=START_MS, producer="test"),
        client_order_id=coid, signal_id=signal, exchange=exchange, symbol=symbol, side=side,
        order_type=kind, quantity=qty, limit_price=limit, reduce_only=reduce_only,
        stop_loss=stop, strategy="test")


def _wms(d: Driver, upto: int | None = None) -> list[int]:
    return [m.event_time_ms for t, k, m in d.published[:upto]
            if t == topics.FILL and isinstance(m, common_pb2.Watermark) and k == KEY] or [0]


def coid_of(item: tuple[str, str, order_approved_pb2.ApprovedOrder]) -> str:
    return item[2].client_order_id


# -- happy path ----------------------------------------------------------------------------------


async def test_market_order_fills_once_with_exact_decimals(exchange: FakeExchange,
                                                           make_driver: Starter) -> None:
    d = await make_driver()
    order = approved("s1", qty="0.013")
    await d.send(order)
    coid = coid_of(order)
    await d.until(lambda: "FILLED" in d.statuses(coid))
    assert d.statuses(coid) == ["PENDING_SUBMIT", "OPEN", "FILLED"]
    (fill,) = d.fills(coid)
    assert Decimal(fill.quantity) == Decimal("0.013")
    assert fill.liquidity == fill_pb2.LIQUIDITY_TAKER
    truth = [o for o in exchange.orders() if o["orderLinkId"] == coid]
    assert len(truth) == 1
    assert exchange.create_requests(coid) == 1
    assert Decimal(fill.price) == Decimal(truth[0]["avgPrice"])
    # the next tick moves the fill watermark past the fill (the ledger can mark candles); no
    # watermark ever promised a time the fill then came before
    await d.until(lambda: _wms(d)[-1] >= fill.meta.event_time_ms)
    position = d.published.index(next(x for x in d.published if x[2] is fill))
    assert all(w < fill.meta.event_time_ms for w in _wms(d, upto=position))
    assert d.handler.halted is None


async def test_fills_carry_the_venue_name_ingest_gives_the_market(exchange: FakeExchange,
                                                                  make_driver: Starter) -> None:
    """A linear executor's fills are keyed bybit-linear:SYMBOL, like the linear ingest's
    candles the ledger marks them on; an order keyed on the spot venue is refused, naming
    both (a second executor, for spot, would trade it)."""
    d = await make_driver()
    order = approved("s-venue")
    await d.send(order)
    coid = coid_of(order)
    await d.until(lambda: "FILLED" in d.statuses(coid))
    (fill,) = d.fills(coid)
    assert fill.exchange == "bybit-linear"
    assert [k for t, k, m in d.published if m is fill] == [KEY]
    spot = approved("s-venue-spot", market_type="spot")
    await d.send(spot)
    assert d.statuses(coid_of(spot)) == ["PENDING_SUBMIT", "REJECTED"]
    assert d.events(coid_of(spot))[-1].reason == "this executor trades bybit-linear, not bybit"


async def test_quantity_is_rounded_down_to_the_exchange_step(exchange: FakeExchange,
                                                             make_driver: Starter) -> None:
    d = await make_driver()
    order = approved("s-round", qty="0.0129")  # step 0.001 on the fake's BTCUSDT
    await d.send(order)
    coid = coid_of(order)
    await d.until(lambda: "CANCELED" in d.statuses(coid))
    assert d.fills(coid)[0].quantity == "0.012"
    assert exchange.orders()[0]["qty"] == "0.012"
    # the unsent rest ends the order (the risk gate releases it), saying why
    assert d.statuses(coid) == ["PENDING_SUBMIT", "OPEN", "PARTIALLY_FILLED", "CANCELED"]
    assert "below the exchange's quantity step" in d.events(coid)[-1].reason


# -- rejections with the exchange's codes ----------------------------------------------------------


@pytest.mark.parametrize(("code", "message"), [
    (110007, "ab not enough for new order"),
    (10001, "params error: qty invalid"),
])
async def test_exchange_rejection_is_final_and_named(exchange: FakeExchange, make_driver: Starter,
                                                     code: int, message: str) -> None:
    d = await make_driver()
    exchange.reject_orders(code, message)
    order = approved(f"s-rej-{code}")
    await d.send(order)
    coid = coid_of(order)
    assert d.statuses(coid) == ["PENDING_SUBMIT", "REJECTED"]
    assert d.events(coid)[-1].reason == f"{code}: {message}"
    for _ in range(3):
        await d.send()
    assert exchange.create_requests(coid) == 1  # a refusal is never retried


async def test_insufficient_margin_from_the_real_check(exchange: FakeExchange,
                                                       make_driver: Starter) -> None:
    d = await make_driver()
    order = approved("s-huge", qty="100")  # ~ 4.4 M USDT at 10x leverage on a 100 k wallet
    await d.send(order)
    event = d.events(coid_of(order))[-1]
    assert orders.name(event.status) == "REJECTED"
    assert event.reason.startswith("110007")


async def test_spot_insufficient_balance_170131(exchange: FakeExchange,
                                                make_driver: Starter) -> None:
    d = await make_driver(market_type="spot")
    order = approved("s-spot", side=common_pb2.SIDE_SELL, qty="50",  # no BTC in the wallet
                     market_type="spot")
    await d.send(order)
    event = d.events(coid_of(order))[-1]
    assert orders.name(event.status) == "REJECTED"
    assert event.reason.startswith("170131")


async def test_rate_limit_is_retried_with_backoff(exchange: FakeExchange,
                                                  make_driver: Starter) -> None:
    d = await make_driver()
    exchange.rate_limit(1)
    order = approved("s-rl")
    await d.send(order)
    coid = coid_of(order)
    await d.until(lambda: "FILLED" in d.statuses(coid))
    assert d.statuses(coid) == ["PENDING_SUBMIT", "OPEN", "FILLED"]


# -- ambiguity: accepted but unanswered ------------------------------------------------------------


async def test_timed_out_submit_is_resolved_by_query_never_resent(exchange: FakeExchange,
                                                                  make_driver: Starter) -> None:
    d = await make_driver(request_timeout_ms=300)
    exchange.accept_then_timeout(1, delay_s=1.5)
    order = approved("s-timeout")
    coid = coid_of(order)
    await d.send(order)  # the submit times out; the same tick's query finds the order
    await d.until(lambda: "FILLED" in d.statuses(coid))
    assert d.statuses(coid) == ["PENDING_SUBMIT", "UNKNOWN", "OPEN", "FILLED"]
    assert exchange.create_requests(coid) == 1
    assert len(d.fills(coid)) == 1


async def test_crash_between_submit_and_publish_adopts_instead_of_resending(
        exchange: FakeExchange, make_driver: Starter) -> None:
    first = await make_driver()
    order = approved("s-crash")
    coid = coid_of(order)
    await first.send(order)  # sent and filled; pretend nothing of it reached Kafka
    assert exchange.create_requests(coid) == 1
    await first.handler.stop()
    second = await make_driver()
    second.handler.restored()  # empty topics: nothing was published
    await second.send(order)  # the approved order is consumed again
    await second.until(lambda: "FILLED" in second.statuses(coid))
    assert exchange.create_requests(coid) == 1
    assert len(second.fills(coid)) == 1
    assert second.handler.halted is None


# -- partial fills, restarts with open orders, the kill switch ------------------------------------


async def test_partial_fills_then_filled(exchange: FakeExchange, make_driver: Starter) -> None:
    d = await make_driver()
    exchange.partial_fills(3)
    order = approved("s-part", qty="0.03")
    coid = coid_of(order)
    await d.send(order)
    await d.until(lambda: "FILLED" in d.statuses(coid))
    assert d.statuses(coid) == ["PENDING_SUBMIT", "OPEN", "PARTIALLY_FILLED",
                                "PARTIALLY_FILLED", "FILLED"]
    assert sum(Decimal(f.quantity) for f in d.fills(coid)) == Decimal("0.03")
    filled = [Decimal(e.filled_quantity) for e in d.events(coid)]
    assert filled == sorted(filled)
    assert filled[-1] == Decimal("0.03")


def _restart_inputs(first: Driver) -> list[Inbound]:
    approved_items = [Inbound(topics.ORDER_APPROVED, k, m) for t, k, m in first.published
                      if t == topics.ORDER_APPROVED]
    outputs = [Inbound(t, k, m) for t, k, m in first.published
               if t in (topics.ORDER_EVENT, topics.FILL, topics.CONTROL)]
    return approved_items + outputs


async def test_restart_with_a_resting_order_then_kill_switch_cancels_it(
        exchange: FakeExchange, make_driver: Starter) -> None:
    first = await make_driver()
    resting = approved("s-rest", limit="1000")  # far below the 2021 price: rests
    coid = coid_of(resting)
    await first.send(resting)
    first.published.append(resting)  # what the approved topic holds, for the restore
    assert first.statuses(coid) == ["PENDING_SUBMIT", "OPEN"]
    await first.handler.stop()

    second = await make_driver()
    for inbound in _restart_inputs(first):
        second.handler.restore(inbound)
    second.handler.restored()
    await second.send(resting)  # redelivered after the restart: nothing new happens
    assert exchange.create_requests(coid) == 1
    assert second.handler.halted is None  # the resting order is recognised as ours
    kill = control_pb2.Control(meta=common_pb2.Meta(id="k1", event_time_ms=START_MS),
                               kill_switch=control_pb2.KillSwitch(engaged=True, reason="test"))
    await second.send((topics.CONTROL, "kill_switch", kill))
    await second.until(lambda: "CANCELED" in second.statuses(coid))
    assert [o["orderStatus"] for o in exchange.orders() if o["orderLinkId"] == coid] == \
        ["Cancelled"]
    # entries are refused while the switch is engaged; exits still go out
    entry = approved("s-after-kill")
    await second.send(entry)
    assert second.statuses(coid_of(entry)) == ["PENDING_SUBMIT", "REJECTED"]


# -- reconciliation fails closed -----------------------------------------------------------------


async def test_foreign_order_halts_entries_but_not_exits(exchange: FakeExchange,
                                                         make_driver: Starter) -> None:
    manual = ccxt.bybit({"apiKey": TEST_API_KEY, "secret": TEST_API_SECRET,
                         "options": {"defaultType": "swap", "fetchMarkets": {"types": ["linear"]},
                                     "adjustForTimeDifference": True}})
    reroute_urls(manual, exchange.base_url)
    try:
        await manual.load_time_difference()  # the fake's clock is in 2021
        await manual.load_markets()
        await manual.create_order("BTC/USDT:USDT", "market", "buy", 0.002)
    finally:
        await manual.close()
    d = await make_driver()
    entry = approved("s-halted")
    await d.send(entry)
    assert "not placed by this executor" in (d.handler.halted or "")
    assert d.statuses(coid_of(entry)) == ["PENDING_SUBMIT", "REJECTED"]
    assert "execution halted" in d.events(coid_of(entry))[-1].reason
    halts = [m for t, k, m in d.published if t == topics.CONTROL and k == HALT_KEY]
    assert halts
    assert halts[-1].halt.halted  # type: ignore[attr-defined]
    exit_ = approved("s-exit", side=common_pb2.SIDE_SELL, qty="0.002", reduce_only=True)
    await d.send(exit_)
    await d.until(lambda: "FILLED" in d.statuses(coid_of(exit_)))


# -- secrets -------------------------------------------------------------------------------------


async def test_secrets_never_reach_reasons_or_logs(exchange: FakeExchange, make_driver: Starter,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = await make_driver(api_secret="wrong-secret-value-123")
    order = approved("s-auth")
    await d.send(order)
    assert "credentials" in (d.handler.halted or "")
    text = caplog.text + repr(d.published)
    assert "wrong-secret-value-123" not in text
    assert TEST_API_KEY not in text


# -- account settings, attached stops --------------------------------------------------------------


async def test_hedge_mode_and_leverage_are_set_and_used(exchange: FakeExchange,
                                                        make_driver: Starter) -> None:
    d = await make_driver(position_mode="hedge", leverage="5")
    entry = approved("s-hedge-long", qty="0.01")
    await d.send(entry)
    await d.until(lambda: "FILLED" in d.statuses(coid_of(entry)))
    exit_ = approved("s-hedge-exit", side=common_pb2.SIDE_SELL, qty="0.01", reduce_only=True)
    short = approved("s-hedge-short", side=common_pb2.SIDE_SELL, qty="0.02", symbol="ETHUSDT")
    await d.send(exit_, short)
    await d.until(lambda: "FILLED" in d.statuses(coid_of(exit_))
                  and "FILLED" in d.statuses(coid_of(short)))
    legs = {(o["orderLinkId"], o["positionIdx"]) for o in exchange.orders()}
    # the long's entry and its reduce-only exit on the buy leg (1), the short on the sell leg
    assert legs == {(coid_of(entry), 1), (coid_of(exit_), 1), (coid_of(short), 2)}
    (eth,) = exchange.positions()
    assert (eth["symbol"], eth["positionIdx"], eth["leverage"]) == ("ETHUSDT", 2, "5")
    assert d.handler.halted is None
    # a second start finds the mode and leverage already set: not an error
    again = await make_driver(position_mode="hedge", leverage="5")
    await again.send()
    assert again.handler.halted is None


async def test_attached_stop_loss_closes_the_position_and_its_fill_is_published(
        exchange: FakeExchange, make_driver: Starter) -> None:
    d = await make_driver()
    # a short at ~43,820 with its stop at 44,500: BTC rose past it on 2021-10-01
    entry = approved("s-sl", side=common_pb2.SIDE_SELL, qty="0.01", stop="44500")
    await d.send(entry)
    await d.until(lambda: "FILLED" in d.statuses(coid_of(entry)))
    (order,) = [o for o in exchange.orders() if o["orderLinkId"] == coid_of(entry)]
    assert order["stopLoss"] == "44500"
    for _ in range(24):  # hour by hour until the real price crosses the stop
        if not exchange.positions():
            break
        exchange.clock.advance(3_600_000)  # the executor must resync its clock offset
        await d.send()
    assert not exchange.positions(), "the price never reached the stop: pick another"
    await d.until(lambda: len(d.fills()) == 2)
    stop_fill = d.fills()[-1]
    assert stop_fill.client_order_id.startswith("x-")  # the exchange's own order, no client id
    assert (stop_fill.side, stop_fill.quantity) == (common_pb2.SIDE_BUY, "0.01")
    assert Decimal(stop_fill.price) >= Decimal("44500")
    assert d.handler.state.position["BTCUSDT"] == 0
    await d.send()  # the next reconciliation still matches: the stop's fill is ours
    d.handler._reconciled_at = None
    await d.send()
    assert d.handler.halted is None


async def test_a_trailing_stop_the_exchange_would_not_get_is_refused_not_dropped(
        exchange: FakeExchange, make_driver: Starter) -> None:
    d = await make_driver()
    item = approved("s-trail")
    item[2].trailing_stop = "0.05"
    await d.send(item)
    assert d.statuses(coid_of(item)) == ["PENDING_SUBMIT", "REJECTED"]
    assert "MERIDIAN_RISK_TRAILING_STOP=0" in d.events(coid_of(item))[-1].reason
    assert exchange.create_requests(coid_of(item)) == 0


async def test_status_unknown_answers_resolve_by_query_and_resend_the_same_id(
        exchange: FakeExchange, make_driver: Starter) -> None:
    """Bybit 10016 (internal error) says nothing about the order: UNKNOWN; the query finds no
    order, so the same client id is sent again (and again after a second 10016, without a
    second UNKNOWN event); one order at the end."""
    d = await make_driver()
    exchange.reject_orders(10016, "Internal server error.", n=2)
    order = approved("s-10016")
    coid = coid_of(order)
    await d.send(order)
    await d.until(lambda: "FILLED" in d.statuses(coid))
    assert d.statuses(coid) == ["PENDING_SUBMIT", "UNKNOWN", "OPEN", "FILLED"]
    assert exchange.create_requests(coid) == 3
    assert [o["orderLinkId"] for o in exchange.orders()].count(coid) == 1


# -- Binance USDT-M: the same guarantees through the second connector ---------------------------


async def test_binance_market_fill_and_fills_joined_by_order_id(exchange: FakeExchange,
                                                                make_driver: Starter) -> None:
    d = await make_driver(venue="binance")
    order = approved("b-1", qty="0.01", venue="binance")
    coid = coid_of(order)
    await d.send(order)
    await d.until(lambda: "FILLED" in d.statuses(coid))
    assert d.statuses(coid) == ["PENDING_SUBMIT", "OPEN", "FILLED"]
    (fill,) = d.fills(coid)  # userTrades carry no client id: joined through the order id
    (truth,) = [o for o in exchange.orders(venue="binance") if o["clientOrderId"] == coid]
    assert Decimal(fill.price) == Decimal(truth["avgPrice"])
    assert Decimal(fill.quantity) == Decimal("0.01")
    assert exchange.create_requests(coid) == 1
    assert d.handler.halted is None


async def test_binance_margin_refusal_and_stops_refused_by_name(exchange: FakeExchange,
                                                                make_driver: Starter) -> None:
    d = await make_driver(venue="binance")
    exchange.reject_orders(-2019, "Margin is insufficient.")
    poor = approved("b-poor", venue="binance")
    await d.send(poor)
    assert d.statuses(coid_of(poor)) == ["PENDING_SUBMIT", "REJECTED"]
    assert d.events(coid_of(poor))[-1].reason == "-2019: Margin is insufficient."
    stopped = approved("b-stop", stop="40000", venue="binance")
    await d.send(stopped)
    assert d.statuses(coid_of(stopped)) == ["PENDING_SUBMIT", "REJECTED"]
    assert "takes no stop-loss" in d.events(coid_of(stopped))[-1].reason
    assert exchange.create_requests(coid_of(stopped)) == 0


async def test_binance_timeout_and_crash_adoption_send_each_order_once(
        exchange: FakeExchange, make_driver: Starter) -> None:
    """Binance checks client ids among open orders only: a filled market order's id is free
    again, so only the query by client id stands between a lost answer and a second order."""
    d = await make_driver(venue="binance", request_timeout_ms=300)
    exchange.accept_then_timeout(1, delay_s=1.5)
    timed_out = approved("b-timeout", venue="binance")
    await d.send(timed_out)
    await d.until(lambda: "FILLED" in d.statuses(coid_of(timed_out)))
    assert "UNKNOWN" in d.statuses(coid_of(timed_out))
    assert exchange.create_requests(coid_of(timed_out)) == 1
    crashed = approved("b-crash", venue="binance")
    await d.send(crashed)  # sent and filled; nothing of it reaches Kafka
    await d.handler.stop()
    second = await make_driver(venue="binance")
    second.handler.restored()
    await second.send(crashed)
    await second.until(lambda: "FILLED" in second.statuses(coid_of(crashed)))
    assert exchange.create_requests(coid_of(crashed)) == 1
    assert len(second.fills(coid_of(crashed))) == 1
    assert second.handler.halted is None
