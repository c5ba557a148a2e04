"""The streaming form of a feature set: per-symbol state updated once per closed candle.

Rules (the batch form in `batch.py` follows the same ones, and a test proves the two equal):
- Horizons count candles, not hours: across an exchange gap, indicators and returns carry on
  from the last candle received (the gap is counted by the service, never silent).
- A value is NaN until every input it needs is warm.
- 4h confirmation: 1h candles are grouped into 4h buckets by open time. A bucket's 4h close is
  known when its last hour closes (or, if that hour is missing, when a later bucket's first
  candle arrives); only then do the 4h indicators move. No row ever sees an unfinished bucket.
- Context (funding, BTC's return) is given by the caller already aligned to this candle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from meridian_common.features.spec import TREND_V2, FeatureSet
from meridian_common.indicators import (
    Adx,
    Atr,
    Bbands,
    Cci,
    Donchian,
    Ema,
    Keltner,
    Macd,
    Mfi,
    RealizedVol,
    Roc,
    Rsi,
    Sma,
    Stoch,
    Vwap,
    ZScore,
)
from meridian_common.indicators.ring import push

NAN = math.nan


def _ratio(a: float | None, b: float | None) -> float:
    return NAN if a is None or b is None or b == 0.0 else a / b - 1.0


def _position(x: float, lower: float, upper: float) -> float:
    return NAN if upper == lower else (x - lower) / (upper - lower)


@dataclass(slots=True)
class H4State:
    """The 4h bucket being filled and the 4h indicators over completed buckets."""

    bucket_ms: int
    bucket: int | None = None
    close: float = NAN
    ema_fast: Ema = field(default_factory=lambda: Ema(TREND_V2.params["h4_ema"][0]))
    ema_slow: Ema = field(default_factory=lambda: Ema(TREND_V2.params["h4_ema"][1]))
    rsi: Rsi = field(default_factory=lambda: Rsi(TREND_V2.params["h4_rsi"]))
    last_fast: float | None = None
    last_slow: float | None = None
    last_rsi: float | None = None

    def complete(self) -> None:
        self.last_fast = self.ema_fast.update(self.close)
        self.last_slow = self.ema_slow.update(self.close)
        self.last_rsi = self.rsi.update(self.close)
        self.bucket = None

    def update(self, open_ms: int, close_ms: int, close: float) -> None:
        bucket = open_ms // self.bucket_ms
        if self.bucket is not None and bucket != self.bucket:
            self.complete()  # its last hour never came: complete it now
        self.bucket = bucket
        self.close = close
        if close_ms % self.bucket_ms == 0:  # this candle ends the bucket
            self.complete()


class FeatureState:
    """One symbol's state for TREND_V2 (the only set so far)."""

    def __init__(self, spec: FeatureSet = TREND_V2, timeframe_ms: int = 3_600_000) -> None:
        if spec is not TREND_V2:
            raise ValueError(f"no streaming form for feature set {spec.name}@{spec.version}")
        p = spec.params
        self.spec = spec
        self.tf = timeframe_ms
        self.ema_fast, self.ema_slow = Ema(p["ema_fast"]), Ema(p["ema_slow"])
        self.rsi = Rsi(p["rsi"])
        self.macd = Macd(*p["macd"])
        self.adx = Adx(p["adx"])
        self.roc = Roc(p["roc"])
        self.cci = Cci(p["cci"])
        self.atr = Atr(p["atr"])
        self.bbands = Bbands(p["bbands"][0], p["bbands"][1], p["bbands"][1])
        self.stoch = Stoch(*p["stoch"])
        self.donchian = Donchian(p["donchian"])
        self.keltner = Keltner(*p["keltner"])
        self.zscore = ZScore(p["zscore"])
        self.rvol = RealizedVol(p["rvol"])
        self.mfi = Mfi(p["mfi"])
        self.vwap = Vwap()
        self.volume_sma = Sma(p["vol_ratio"])
        self.horizons: tuple[int, ...] = tuple(p["returns"])
        self.closes: list[float] = []
        self.closes_slot = 0
        self.h4 = H4State(p["bucket_ms"])

    def _returns(self, close: float) -> list[float]:
        size = max(self.horizons) + 1
        self.closes_slot, _ = push(self.closes, self.closes_slot, size, close)
        ordered = self.closes[self.closes_slot:] + self.closes[:self.closes_slot]
        out = []
        for k in self.horizons:
            out.append(math.log(close / ordered[-1 - k]) if len(ordered) > k else NAN)
        return out

    def update(self, open_ms: int, high: float, low: float, close: float, volume: float, *,
               funding_last: float = NAN, btc_ret_1: float = NAN) -> list[float]:
        """The feature row for this closed candle, in the spec's column order."""
        fast, slow = self.ema_fast.update(close), self.ema_slow.update(close)
        rsi = self.rsi.update(close)
        macd = self.macd.update(close)
        adx = self.adx.update(high, low, close)
        roc = self.roc.update(close)
        cci = self.cci.update(high, low, close)
        atr = self.atr.update(high, low, close)
        bb = self.bbands.update(close)
        st = self.stoch.update(high, low, close)
        dc = self.donchian.update(high, low)
        kc = self.keltner.update(high, low, close)
        z = self.zscore.update(close)
        rv = self.rvol.update(close)
        mfi = self.mfi.update(high, low, close, volume)
        vwap = self.vwap.update(open_ms, high, low, close, volume)
        vol_sma = self.volume_sma.update(volume)
        returns = self._returns(close)
        self.h4.update(open_ms, open_ms + self.tf, close)
        moment = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
        return [
            _ratio(fast, slow),
            NAN if rsi is None else rsi,
            NAN if macd is None else macd.hist / close,
            NAN if adx is None or adx.adx is None else adx.adx,
            NAN if adx is None else adx.plus_di - adx.minus_di,
            NAN if roc is None else roc,
            NAN if cci is None else cci,
            NAN if atr is None else atr / close,
            NAN if bb is None else (bb.upper - bb.lower) / bb.middle,
            NAN if st is None else st.k,
            NAN if st is None else st.d,
            NAN if dc is None else _position(close, dc.lower, dc.upper),
            NAN if kc is None else _position(close, kc.lower, kc.upper),
            NAN if z is None else z,
            NAN if rv is None else rv,
            NAN if mfi is None else mfi,
            _ratio(close, vwap),
            volume / vol_sma if vol_sma else NAN,
            *returns,
            float(moment.hour),
            float(moment.weekday()),
            _ratio(self.h4.last_fast, self.h4.last_slow),
            NAN if self.h4.last_rsi is None else self.h4.last_rsi,
            funding_last,
            btc_ret_1,
        ]
