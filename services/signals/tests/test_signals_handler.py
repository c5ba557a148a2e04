"""Signals handler, rules only: watermarks when nothing is decided, trend-rule signals with
suggested stop-loss / take-profit prices, ids from causes, settings checked up front."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from meridian.v1 import common_pb2, control_pb2, features_pb2, signal_pb2
from meridian_common import codec, config, topics
from meridian_common.features.spec import TREND_V2
from meridian_common.handler import Inbound, InvalidMessage, Outbox
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)
LONG, SHORT, FLAT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT, common_pb2.DIRECTION_FLAT
BULL = {"ema_ratio": 0.01, "macd_hist_pct": 0.001, "rsi": 60.0, "h4_ema_ratio": 0.01}
BEAR = {"ema_ratio": -0.01, "macd_hist_pct": -0.001, "rsi": 40.0, "h4_ema_ratio": -0.01}


def features(i: int, inputs: dict[str, float] | None = None, close: str = "30000",
             atr_pct: float = 0.01) -> features_pb2.Features:
    """A features.v1 row of trend@2.0.0 (not ready without inputs)."""
    open_ms = T0 + i * HOUR
    f = features_pb2.Features(
        meta=common_pb2.Meta(id=f"feat:binance:BTCUSDT:1h:{open_ms}:r0",
                             cause_id=f"binance:BTCUSDT:1h:{open_ms}:r0",
                             event_time_ms=open_ms + HOUR, producer="features"),
        exchange="binance", symbol="BTCUSDT", timeframe="1h", feature_set=TREND_V2.name,
        feature_set_version=TREND_V2.version, candle_open_time_ms=open_ms, close=close,
        ready=inputs is not None)
    if inputs is not None:
        row = {c: 0.0 for c in TREND_V2.columns} | {c: math.nan for c in TREND_V2.context}
        row |= {"atr_pct": atr_pct, **inputs}
        f.values.extend(features_pb2.FeatureValue(name=c, value=row[c]) for c in TREND_V2.columns)
    return f


def handler(tmp_path: Path, **settings: object) -> SignalsHandler:
    """A started handler over an empty registry: rules only."""
    h = SignalsHandler(SignalsSettings(model_dir=str(tmp_path / "models"), **settings))  # type: ignore[arg-type]
    asyncio.run(h.start())
    return h


def run(h: SignalsHandler, msgs: list[object], topic: str = topics.FEATURES,
        ) -> list[tuple[str, str, object]]:
    out = Outbox(h.name)
    for i, m in enumerate(msgs):
        h.handle(Inbound(topic, KEY, m, (topic, 0, i)), out)  # type: ignore[arg-type]
    return out.items


def test_not_ready_features_give_a_watermark(tmp_path: Path) -> None:
    f = features(0)
    items = run(handler(tmp_path), [f])
    assert len(items) == 1
    topic, key, msg = items[0]
    assert (topic, key) == (topics.SIGNAL, KEY)
    assert isinstance(msg, common_pb2.Watermark)
    assert (msg.key, msg.event_time_ms, msg.producer) == (KEY, f.meta.event_time_ms, "signals")


def test_watermark_input_is_forwarded(tmp_path: Path) -> None:
    wm = common_pb2.Watermark(key=KEY, event_time_ms=T0 + 7 * HOUR, producer="features")
    items = run(handler(tmp_path), [wm])
    assert len(items) == 1
    topic, key, msg = items[0]
    assert (topic, key) == (topics.SIGNAL, KEY)
    assert isinstance(msg, common_pb2.Watermark)
    assert (msg.event_time_ms, msg.producer) == (T0 + 7 * HOUR, "signals")


def test_long_entry_with_suggested_prices_then_exit(tmp_path: Path) -> None:
    entry = features(0, BULL, close="30123.45")
    exit_ = features(1, BEAR, close="29000.10")
    h = handler(tmp_path)
    items = run(h, [entry, exit_])
    assert [(t, k) for t, k, _ in items] == [(topics.SIGNAL, KEY)] * 2
    sig = items[0][2]
    assert isinstance(sig, signal_pb2.Signal)
    assert sig.meta.id == "sig:" + entry.meta.id
    assert sig.meta.cause_id == entry.meta.id
    assert sig.meta.event_time_ms == entry.meta.event_time_ms
    assert sig.meta.producer == "signals"
    assert (sig.exchange, sig.symbol, sig.strategy) == ("binance", "BTCUSDT", "trend")
    assert sig.direction == LONG
    assert sig.strength == pytest.approx(1.0)
    assert (sig.confidence, sig.model_version) == (1.0, "")
    assert sig.reference_price == "30123.45"
    # 30123.45 x (1 - 0.015) = 29671.59825, x (1 + 0.03) = 31027.1535; the close's 2 decimals
    assert (sig.stop_loss, sig.take_profit) == ("29671.60", "31027.15")
    assert "score +1.00: long" in sig.reason
    assert sig.reason.endswith("; rules only (no model)")
    codec.validate(sig)
    flat = items[1][2]
    assert isinstance(flat, signal_pb2.Signal)
    assert flat.direction == FLAT
    assert (flat.stop_loss, flat.take_profit, flat.model_version) == ("", "", "")
    assert flat.confidence == 1.0
    assert "flat" in flat.reason
    codec.validate(flat)
    assert h.emitted == 2
    assert h.fallback_reasons == {"no_model": 1}  # the entry, decided without a model


def test_atr_barriers_and_short_mirrored(tmp_path: Path) -> None:
    h = handler(tmp_path, allow_short=True, use_atr=True, take_profit=2.0, stop_loss=1.0)
    items = run(h, [features(0, BULL, close="30000", atr_pct=0.01),
                    features(1, BEAR, close="30000.0", atr_pct=0.02)])
    long_, short = items[0][2], items[1][2]
    assert long_.direction == LONG  # type: ignore[attr-defined]
    assert (long_.stop_loss, long_.take_profit) == ("29700", "30600")  # type: ignore[attr-defined]
    # the rules reverse: the short closes the long and opens; ATR 600 -> SL above, TP below
    assert short.direction == SHORT  # type: ignore[attr-defined]
    assert (short.stop_loss, short.take_profit) == ("30600.0", "28800.0")  # type: ignore[attr-defined]


def test_vetoed_entry_and_undecided_rows_give_watermarks(tmp_path: Path) -> None:
    h = handler(tmp_path, rsi_overbought=60.0)
    items = run(h, [features(0, BULL), features(1, {**BULL, "rsi": 50.0, "macd_hist_pct": -0.001,
                                                   "h4_ema_ratio": -0.01}),
                    features(2, BEAR)])
    assert all(isinstance(m, common_pb2.Watermark) for _, _, m in items)
    assert [m.event_time_ms for _, _, m in items] == [T0 + k * HOUR for k in (1, 2, 3)]  # type: ignore[attr-defined]


def test_ready_features_without_rule_inputs_are_invalid(tmp_path: Path) -> None:
    f = features(0)
    f.ready = True
    with pytest.raises(InvalidMessage, match="ema_ratio"):
        run(handler(tmp_path), [f])


def test_control_messages_produce_nothing(tmp_path: Path) -> None:
    h = handler(tmp_path)
    msgs = [
        control_pb2.Control(meta=common_pb2.Meta(id="c1", event_time_ms=T0),
                            kill_switch=control_pb2.KillSwitch(engaged=True)),
        control_pb2.Control(meta=common_pb2.Meta(id="c2", event_time_ms=T0),
                            model_promotion=control_pb2.ModelPromotion(
                                model_name="another", model_version="another-1")),
        common_pb2.Watermark(key="kill_switch", event_time_ms=T0),
    ]
    assert run(h, msgs, topics.CONTROL) == []
    assert h.pending is None
    assert h.model is None


def test_settings_are_checked_up_front() -> None:
    assert SignalsSettings().strategy == "trend"
    assert SignalsSettings().threshold is None
    with pytest.raises(config.ConfigError, match="MERIDIAN_SIGNALS_STRATEGY"):
        config.load(SignalsSettings, {"MERIDIAN_SIGNALS_STRATEGY": "ema_cross"})
    with pytest.raises(config.ConfigError, match="MERIDIAN_SIGNALS_THRESHOLD"):
        config.load(SignalsSettings, {"MERIDIAN_SIGNALS_THRESHOLD": "1.5"})
    with pytest.raises(config.ConfigError, match="exit_score"):
        config.load(SignalsSettings, {"MERIDIAN_SIGNALS_EXIT_SCORE": "0.6"})
    with pytest.raises(config.ConfigError, match="stop_loss"):
        config.load(SignalsSettings, {"MERIDIAN_SIGNALS_STOP_LOSS": "1.5"})
    atr = config.load(SignalsSettings, {"MERIDIAN_SIGNALS_STOP_LOSS": "1.5",
                                        "MERIDIAN_SIGNALS_USE_ATR": "true",
                                        "MERIDIAN_SIGNALS_THRESHOLD": "0.6"})
    assert atr.barriers.stop_loss == 1.5
    assert atr.threshold == 0.6
    with pytest.raises(config.ConfigError, match="MERIDIAN_SIGNALS_MODEL_DIRR"):
        config.load(SignalsSettings, {"MERIDIAN_SIGNALS_MODEL_DIRR": "x"})


def test_one_output_per_input_and_deterministic_ids_on_real_data(
        tmp_path: Path, real_features: Callable[[int], list[features_pb2.Features]]) -> None:
    feats = real_features(600)
    assert len(feats) == 600
    a = run(handler(tmp_path), feats)
    b = run(handler(tmp_path), feats)
    assert len(a) == len(feats)
    assert [codec.encode(m) for _, _, m in a] == [codec.encode(m) for _, _, m in b]  # type: ignore[arg-type]
    signals = [m for _, _, m in a if isinstance(m, signal_pb2.Signal)]
    assert signals, "600 hours of BTC should contain a trend entry"
    by_id = {f.meta.id: f for f in feats}
    for s in signals:
        cause = by_id[s.meta.cause_id]
        assert s.meta.id == "sig:" + cause.meta.id
        assert s.meta.event_time_ms == cause.meta.event_time_ms
        assert s.reference_price == cause.close
        codec.validate(s)
        if s.direction == LONG:
            close = Decimal(cause.close)
            exponent = close.as_tuple().exponent
            half = Decimal(1).scaleb(exponent) / 2  # rounded to the close's decimals
            for price, factor in ((s.stop_loss, "0.985"), (s.take_profit, "1.03")):
                assert Decimal(price).as_tuple().exponent == exponent
                assert abs(Decimal(price) - close * Decimal(factor)) <= half
    # longs only by default, each closed before the next
    dirs = [s.direction for s in signals]
    assert set(dirs) == {LONG, FLAT}
    assert all(x != y for x, y in itertools.pairwise(dirs))
