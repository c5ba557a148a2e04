"""Codec: round trips for every topic, Watermarks anywhere, and errors that name the bad field."""

from __future__ import annotations

import pytest
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
from meridian_common import codec, topics
from meridian_common.codec import MalformedMessage


def _meta(id_: str = "m-1", t: int = 1_700_000_000_000) -> common_pb2.Meta:
    return common_pb2.Meta(id=id_, cause_id="cause-1", event_time_ms=t, producer="test")


def _candle(**kw: object) -> candle_pb2.Candle:
    fields: dict[str, object] = dict(
        meta=_meta("binance:BTCUSDT:1h:1699996400000:r0"), exchange="binance", symbol="BTCUSDT",
        timeframe="1h", open_time_ms=1_699_996_400_000, close_time_ms=1_700_000_000_000,
        open="35000.5", high="35100", low="34900.25", close="35050.75", volume="123.456")
    fields.update(kw)
    return candle_pb2.Candle(**fields)


SAMPLES: dict[str, Message] = {
    topics.CANDLE: _candle(),
    topics.FUNDING: funding_pb2.FundingRate(
        meta=_meta(), exchange="binance", symbol="BTCUSDT", funding_time_ms=1_700_000_000_000,
        rate="0.0001"),
    topics.FEATURES: features_pb2.Features(
        meta=_meta(), exchange="binance", symbol="BTCUSDT", timeframe="1h",
        feature_set="trend-basic", candle_open_time_ms=1, close="35050.75", ready=True,
        values=[features_pb2.FeatureValue(name="ema_fast", value=1.5)]),
    topics.SIGNAL: signal_pb2.Signal(
        meta=_meta(), exchange="binance", symbol="BTCUSDT", strategy="ema_cross",
        direction=common_pb2.DIRECTION_LONG, strength=0.5, confidence=1.0,
        reference_price="35050.75", stop_loss="34000", reason="cross"),
    topics.RISK_DECISION: risk_decision_pb2.RiskDecision(
        meta=_meta(), exchange="binance", symbol="BTCUSDT", approved=True,
        rules=[risk_decision_pb2.RuleResult(rule="order.nonzero", passed=True, detail="ok")],
        client_order_id="mrd-1", side=common_pb2.SIDE_BUY, quantity="0.02853",
        reference_price="35050.75"),
    topics.ORDER_APPROVED: order_approved_pb2.ApprovedOrder(
        meta=_meta(), client_order_id="mrd-1", signal_id="sig-1", exchange="binance",
        symbol="BTCUSDT", side=common_pb2.SIDE_BUY,
        order_type=order_approved_pb2.ORDER_TYPE_MARKET, quantity="0.02853"),
    topics.ORDER_INTENT: order_intent_pb2.OrderIntent(
        meta=_meta("intent:g1-1-2"), exchange="binance", symbol="BTCUSDT", strategy="bot:g1",
        client_order_id="g1-1-2", action=order_approved_pb2.ORDER_ACTION_PLACE,
        side=common_pb2.SIDE_BUY, order_type=order_approved_pb2.ORDER_TYPE_LIMIT,
        quantity="0.01", limit_price="33400", reason="grid-buy"),
    topics.ORDER_EVENT: order_event_pb2.OrderEvent(
        meta=_meta(), client_order_id="mrd-1", exchange="binance", symbol="BTCUSDT",
        status=order_event_pb2.ORDER_STATUS_OPEN, sequence=1, quantity="0.02853"),
    topics.FILL: fill_pb2.Fill(
        meta=_meta(), fill_id="mrd-1:f1", client_order_id="mrd-1", exchange="binance",
        symbol="BTCUSDT", side=common_pb2.SIDE_BUY, quantity="0.02853", price="35000.5",
        fee="0.99856427", fee_currency="USDT", liquidity=fill_pb2.LIQUIDITY_TAKER),
    topics.PORTFOLIO: portfolio_pb2.PositionUpdate(
        meta=_meta(), account="paper", exchange="binance", symbol="BTCUSDT", as_of_ms=1,
        quantity="0.02853", average_price="35000.5", mark_price="35050.75", realized_pnl="0",
        unrealized_pnl="1.43", fees_paid="0.99", net_pnl="0.44"),
    topics.CONTROL: control_pb2.Control(
        meta=_meta(), kill_switch=control_pb2.KillSwitch(engaged=True, reason="r", actor="a")),
}


def test_samples_cover_every_topic() -> None:
    assert set(SAMPLES) == set(topics.TOPICS)


@pytest.mark.parametrize("topic", sorted(topics.TOPICS))
def test_round_trip_with_type_header(topic: str) -> None:
    message = SAMPLES[topic]
    value, mtype = codec.encode(message)
    assert mtype == topics.spec(topic).message.DESCRIPTOR.full_name.encode()
    decoded = codec.decode(topic, value, mtype)
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize("topic", sorted(topics.TOPICS))
def test_round_trip_without_header_reads_topic_type(topic: str) -> None:
    message = SAMPLES[topic]
    value, _ = codec.encode(message)
    assert codec.decode(topic, value, None) == message


@pytest.mark.parametrize("topic", sorted(topics.TOPICS))
def test_watermark_allowed_on_any_topic(topic: str) -> None:
    wm = common_pb2.Watermark(key="binance:BTCUSDT", event_time_ms=1_700_000_000_000,
                              producer="x")
    value, mtype = codec.encode(wm)
    assert mtype == b"meridian.v1.Watermark"
    decoded = codec.decode(topic, value, mtype)
    assert isinstance(decoded, common_pb2.Watermark)
    assert decoded == wm


def test_wrong_type_header_names_expected_type() -> None:
    value, mtype = codec.encode(SAMPLES[topics.FILL])
    with pytest.raises(MalformedMessage) as info:
        codec.decode(topics.CANDLE, value, mtype)
    assert "meridian.v1.Candle" in str(info.value)
    assert "meridian.v1.Fill" in str(info.value)
    assert info.value.reason == str(info.value)


def test_unknown_type_header() -> None:
    value, _ = codec.encode(SAMPLES[topics.CANDLE])
    with pytest.raises(MalformedMessage, match=r"meridian\.v1\.Nope"):
        codec.decode(topics.CANDLE, value, b"meridian.v1.Nope")


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08"])
def test_garbage_bytes_are_malformed(garbage: bytes) -> None:
    with pytest.raises(MalformedMessage):
        codec.decode(topics.CANDLE, garbage, b"meridian.v1.Candle")
    with pytest.raises(MalformedMessage):
        codec.decode(topics.CANDLE, garbage, None)


def test_tombstone_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="tombstone"):
        codec.decode(topics.CANDLE, None, b"meridian.v1.Candle")


def test_unknown_topic_raises_key_error() -> None:
    value, mtype = codec.encode(SAMPLES[topics.CANDLE])
    with pytest.raises(KeyError, match=r"nope\.v1"):
        codec.decode("nope.v1", value, mtype)


def _decode_candle(candle: candle_pb2.Candle) -> Message:
    value, mtype = codec.encode(candle)
    return codec.decode(topics.CANDLE, value, mtype)


def test_missing_meta_id_names_field() -> None:
    candle = _candle()
    candle.meta.id = ""
    with pytest.raises(MalformedMessage, match=r"meridian\.v1\.Candle\.meta\.id"):
        _decode_candle(candle)


@pytest.mark.parametrize("t", [0, -5])
def test_non_positive_event_time_names_field(t: int) -> None:
    candle = _candle()
    candle.meta.event_time_ms = t
    with pytest.raises(MalformedMessage, match=r"meridian\.v1\.Candle\.meta\.event_time_ms"):
        _decode_candle(candle)


def test_missing_meta_entirely_is_malformed() -> None:
    candle = _candle()
    candle.ClearField("meta")
    with pytest.raises(MalformedMessage, match=r"meta\.id"):
        _decode_candle(candle)


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", "-inf", "1,5", "1.2.3"])
def test_non_decimal_price_names_field(bad: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        _decode_candle(_candle(close=bad))
    assert "meridian.v1.Candle.close" in str(info.value)


def test_empty_required_decimal_names_field() -> None:
    with pytest.raises(MalformedMessage, match=r"meridian\.v1\.Candle\.volume is empty"):
        _decode_candle(_candle(volume=""))


def test_fill_price_validated() -> None:
    fill = fill_pb2.Fill()
    fill.CopyFrom(SAMPLES[topics.FILL])
    fill.price = "thirty thousand"
    value, mtype = codec.encode(fill)
    with pytest.raises(MalformedMessage, match=r"meridian\.v1\.Fill\.price"):
        codec.decode(topics.FILL, value, mtype)


def test_optional_decimal_may_be_empty_but_not_garbage() -> None:
    sig = signal_pb2.Signal()
    sig.CopyFrom(SAMPLES[topics.SIGNAL])
    sig.stop_loss = ""
    value, mtype = codec.encode(sig)
    assert codec.decode(topics.SIGNAL, value, mtype).stop_loss == ""  # type: ignore[attr-defined]
    sig.take_profit = "up"
    value, mtype = codec.encode(sig)
    with pytest.raises(MalformedMessage, match=r"meridian\.v1\.Signal\.take_profit"):
        codec.decode(topics.SIGNAL, value, mtype)


def test_watermark_validation() -> None:
    for wm, field in (
        (common_pb2.Watermark(key="", event_time_ms=5), "key"),
        (common_pb2.Watermark(key="k", event_time_ms=0), "event_time_ms"),
    ):
        value, mtype = codec.encode(wm)
        with pytest.raises(MalformedMessage, match=f"Watermark.{field}"):
            codec.decode(topics.SIGNAL, value, mtype)


def test_serialization_is_deterministic() -> None:
    a = _candle()
    b = candle_pb2.Candle()
    # Same content, fields set in another order.
    b.volume = a.volume
    b.close = a.close
    b.low = a.low
    b.high = a.high
    b.open = a.open
    b.close_time_ms = a.close_time_ms
    b.open_time_ms = a.open_time_ms
    b.timeframe = a.timeframe
    b.symbol = a.symbol
    b.exchange = a.exchange
    b.meta.CopyFrom(a.meta)
    assert codec.encode(a) == codec.encode(b)
    assert codec.encode(a) == codec.encode(_candle())
    for message in SAMPLES.values():
        assert codec.encode(message)[0] == codec.encode(message)[0]
