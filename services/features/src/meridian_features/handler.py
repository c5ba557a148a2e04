"""Features: candles in, one features.v1 message per closed candle out.

Indicator state is per symbol and updated in O(1) per candle. Gap rule for now: indicators carry
across a gap (the shared data has exchange outages of a few hours) and the gap is counted and
logged, never silent. A redelivered or out-of-order candle (open time not after the last one) is
skipped, so at-least-once delivery does not double-count a candle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from meridian.v1 import candle_pb2, common_pb2, features_pb2
from meridian_common import topics
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox
from meridian_common.indicators import Ema, Rsi
from meridian_common.marketdata import timeframe_ms
from meridian_features.settings import FeaturesSettings

log = logging.getLogger(__name__)

FEATURE_SET = "trend-basic"
NAMES = ("ema_fast", "ema_slow", "rsi")


@dataclass(slots=True)
class _SymbolState:
    ema_fast: Ema
    ema_slow: Ema
    rsi: Rsi
    last_open_ms: int = -1
    gaps: int = 0
    values: list[float] = field(default_factory=list)


class FeaturesHandler(Handler):
    name = "features"
    inputs = (topics.CANDLE,)
    outputs = (topics.FEATURES,)
    # Indicator state is a function of each symbol's candles: rebuilt from md.candle.v1 (kept
    # forever) up to the committed offset on start, so a restart continues exactly.
    rebuild_from_inputs = True

    def __init__(self, settings: FeaturesSettings) -> None:
        self.settings = settings
        self.state: dict[str, _SymbolState] = {}
        self.skipped = 0

    def _new_state(self) -> _SymbolState:
        s = self.settings
        return _SymbolState(Ema(s.ema_fast), Ema(s.ema_slow), Rsi(s.rsi_period))

    def handle(self, msg: Inbound, out: Outbox) -> None:
        candle: candle_pb2.Candle = msg.message  # type: ignore[assignment]
        if msg.is_watermark:
            return
        try:
            step = timeframe_ms(candle.timeframe)
        except ValueError as exc:
            raise InvalidMessage(f"candle {candle.meta.id}: {exc}") from None
        st = self.state.get(msg.key)
        if st is None:
            st = self.state[msg.key] = self._new_state()
        if candle.open_time_ms <= st.last_open_ms:
            self.skipped += 1
            return
        if st.last_open_ms >= 0:
            expected = st.last_open_ms + step
            if candle.open_time_ms != expected:
                st.gaps += 1
                log.info("candle gap: indicators carried across",
                         extra={"key": msg.key, "missing_from_ms": expected,
                                "resumed_at_ms": candle.open_time_ms})
        st.last_open_ms = candle.open_time_ms
        close = float(candle.close)
        fast = st.ema_fast.update(close)
        slow = st.ema_slow.update(close)
        rsi = st.rsi.update(close)
        ready = fast is not None and slow is not None and rsi is not None
        features = features_pb2.Features(
            meta=common_pb2.Meta(id="feat:" + candle.meta.id, cause_id=candle.meta.id,
                                 event_time_ms=candle.meta.event_time_ms, producer=self.name),
            exchange=candle.exchange,
            symbol=candle.symbol,
            timeframe=candle.timeframe,
            feature_set=FEATURE_SET,
            feature_set_version=self.settings.version,
            candle_open_time_ms=candle.open_time_ms,
            close=candle.close,
            ready=ready,
        )
        if ready:
            features.values.extend(
                features_pb2.FeatureValue(name=n, value=v)
                for n, v in zip(NAMES, (fast, slow, rsi), strict=True)
            )
        out.emit(topics.FEATURES, msg.key, features)
