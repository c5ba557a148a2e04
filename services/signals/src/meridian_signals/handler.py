"""Signals: features in, EMA-cross signals out (rules only; the meta-model comes later).

signal.v1 is sparse, so for every features message that yields no signal a Watermark for the
key is published instead: downstream services can then act in event time.
"""

from __future__ import annotations

from meridian.v1 import common_pb2, features_pb2, signal_pb2
from meridian_common import topics
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox
from meridian_common.strategy import EmaCross, EmaCrossParams
from meridian_signals.settings import SignalsSettings

_REQUIRED = ("ema_ratio", "rsi")  # columns of the feature set the rule reads


class SignalsHandler(Handler):
    name = "signals"
    inputs = (topics.FEATURES,)
    outputs = (topics.SIGNAL,)

    def __init__(self, settings: SignalsSettings) -> None:
        self.settings = settings
        self.params = EmaCrossParams(rsi_overbought=settings.rsi_overbought,
                                     allow_short=settings.allow_short)
        self.rules: dict[str, EmaCross] = {}
        self.emitted = 0

    def handle(self, msg: Inbound, out: Outbox) -> None:
        if msg.is_watermark:
            out.watermark(topics.SIGNAL, msg.key, msg.event_time_ms)
            return
        features: features_pb2.Features = msg.message  # type: ignore[assignment]
        vote = None
        if features.ready:
            values = {v.name: v.value for v in features.values}
            missing = [n for n in _REQUIRED if n not in values]
            if missing:
                raise InvalidMessage(f"features {features.meta.id} lacks {missing}")
            rule = self.rules.get(msg.key)
            if rule is None:
                rule = self.rules[msg.key] = EmaCross(self.params)
            vote = rule.update(values["ema_ratio"], values["rsi"])
        if vote is None:
            out.watermark(topics.SIGNAL, msg.key, features.meta.event_time_ms)
            return
        self.emitted += 1
        out.emit(topics.SIGNAL, msg.key, signal_pb2.Signal(
            meta=common_pb2.Meta(id="sig:" + features.meta.id, cause_id=features.meta.id,
                                 event_time_ms=features.meta.event_time_ms, producer=self.name),
            exchange=features.exchange,
            symbol=features.symbol,
            strategy=self.settings.strategy,
            direction=vote.direction,  # type: ignore[arg-type]
            strength=vote.strength,
            confidence=1.0,
            reference_price=features.close,
            reason=vote.reason,
        ))
