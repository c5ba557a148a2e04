"""Signals handler: watermarks when nothing is decided, signals on crosses, ids from causes."""

from __future__ import annotations

import itertools

import pytest

from meridian.v1 import common_pb2, features_pb2, signal_pb2
from meridian_common import codec, topics
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_common.marketdata import CsvCandleSource, default_data_dir, make_candle
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)


def features(i: int, fast: float | None = None, slow: float | None = None,
             rsi: float = 50.0, close: str = "30000") -> features_pb2.Features:
    open_ms = T0 + i * HOUR
    f = features_pb2.Features(
        meta=common_pb2.Meta(id=f"feat:binance:BTCUSDT:1h:{open_ms}:r0",
                             cause_id=f"binance:BTCUSDT:1h:{open_ms}:r0",
                             event_time_ms=open_ms + HOUR, producer="features"),
        exchange="binance", symbol="BTCUSDT", timeframe="1h", feature_set="trend",
        feature_set_version="2.0.0", candle_open_time_ms=open_ms, close=close,
        ready=fast is not None)
    if fast is not None:
        ratio = fast / (slow or 1.0) - 1.0
        f.values.extend([features_pb2.FeatureValue(name="ema_ratio", value=ratio),
                         features_pb2.FeatureValue(name="rsi", value=rsi)])
    return f


def run(handler: SignalsHandler, msgs: list[object]) -> list[tuple[str, str, object]]:
    out = Outbox(handler.name)
    for i, m in enumerate(msgs):
        handler.handle(Inbound(topics.FEATURES, KEY, m, ("features.v1", 0, i)), out)  # type: ignore[arg-type]
    return out.items


def test_not_ready_features_give_a_watermark() -> None:
    f = features(0)
    items = run(SignalsHandler(SignalsSettings()), [f])
    assert len(items) == 1
    topic, key, msg = items[0]
    assert (topic, key) == (topics.SIGNAL, KEY)
    assert isinstance(msg, common_pb2.Watermark)
    assert msg.key == KEY
    assert msg.event_time_ms == f.meta.event_time_ms
    assert msg.producer == "signals"


def test_first_decisive_bar_gives_a_watermark() -> None:
    items = run(SignalsHandler(SignalsSettings()), [features(0, 101.0, 100.0)])
    assert isinstance(items[0][2], common_pb2.Watermark)


def test_upward_cross_gives_a_long_signal() -> None:
    below = features(0, 99.0, 100.0)
    cross = features(1, 100.5, 100.0, rsi=60.0, close="30123.45")
    items = run(SignalsHandler(SignalsSettings()), [below, cross])
    assert isinstance(items[0][2], common_pb2.Watermark)
    topic, key, sig = items[1]
    assert (topic, key) == (topics.SIGNAL, KEY)
    assert isinstance(sig, signal_pb2.Signal)
    assert sig.meta.id == "sig:" + cross.meta.id
    assert sig.meta.cause_id == cross.meta.id
    assert sig.meta.event_time_ms == cross.meta.event_time_ms
    assert sig.meta.producer == "signals"
    assert sig.direction == common_pb2.DIRECTION_LONG
    assert sig.reference_price == "30123.45"
    assert (sig.exchange, sig.symbol, sig.strategy) == ("binance", "BTCUSDT", "ema_cross")
    assert sig.strength == pytest.approx(0.5)
    assert sig.confidence == 1.0
    assert sig.reason
    codec.validate(sig)


def test_downward_cross_flat_or_short() -> None:
    msgs = [features(0, 101.0, 100.0), features(1, 99.0, 100.0)]
    flat = run(SignalsHandler(SignalsSettings()), msgs)[1][2]
    assert flat.direction == common_pb2.DIRECTION_FLAT  # type: ignore[attr-defined]
    short = run(SignalsHandler(SignalsSettings(allow_short=True)), msgs)[1][2]
    assert short.direction == common_pb2.DIRECTION_SHORT  # type: ignore[attr-defined]


def test_overbought_cross_gives_a_watermark() -> None:
    items = run(SignalsHandler(SignalsSettings(rsi_overbought=65)),
                [features(0, 99.0, 100.0), features(1, 101.0, 100.0, rsi=65.0)])
    assert isinstance(items[1][2], common_pb2.Watermark)
    assert items[1][2].event_time_ms == T0 + 2 * HOUR


def test_watermark_input_is_forwarded() -> None:
    wm = common_pb2.Watermark(key=KEY, event_time_ms=T0 + 7 * HOUR, producer="features")
    items = run(SignalsHandler(SignalsSettings()), [wm])
    assert len(items) == 1
    topic, key, msg = items[0]
    assert (topic, key) == (topics.SIGNAL, KEY)
    assert isinstance(msg, common_pb2.Watermark)
    assert msg.event_time_ms == T0 + 7 * HOUR
    assert msg.producer == "signals"


def test_ready_features_without_values_are_invalid() -> None:
    f = features(0)
    f.ready = True
    with pytest.raises(InvalidMessage, match="ema_ratio"):
        run(SignalsHandler(SignalsSettings()), [f])


def test_one_output_per_input_and_deterministic_ids_on_real_data() -> None:
    source = CsvCandleSource(default_data_dir(), "BTCUSDT", "1h")
    fh = FeaturesHandler(FeaturesSettings())
    out = Outbox("features")
    for i, raw in enumerate(source.rows()):
        if i == 600:
            break
        c = make_candle("binance", "BTCUSDT", "1h", raw, "ingest")
        fh.handle(Inbound(topics.CANDLE, KEY, c, ("md.candle.v1", 0, i)), out)
    feats = [m for _, _, m in out.items]
    a = run(SignalsHandler(SignalsSettings()), feats)
    b = run(SignalsHandler(SignalsSettings()), feats)
    assert len(a) == len(feats)
    assert [codec.encode(m) for _, _, m in a] == [codec.encode(m) for _, _, m in b]  # type: ignore[arg-type]
    signals = [m for _, _, m in a if isinstance(m, signal_pb2.Signal)]
    assert signals, "600 hours of BTC should contain an EMA cross"
    by_id = {f.meta.id: f for f in feats}  # type: ignore[attr-defined]
    for s in signals:
        cause = by_id[s.meta.cause_id]
        assert s.meta.id == "sig:" + cause.meta.id
        assert s.meta.event_time_ms == cause.meta.event_time_ms
    # a long is always followed by an exit (two flats in a row: an overbought long was skipped)
    dirs = [s.direction for s in signals]
    long_ = common_pb2.DIRECTION_LONG
    assert not any(x == y == long_ for x, y in itertools.pairwise(dirs))
    assert long_ in dirs
    assert common_pb2.DIRECTION_FLAT in dirs
