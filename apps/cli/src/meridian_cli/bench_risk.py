"""`meridian bench` risk figures: decisions per second and per-decision latency with every rule
layer on, for the primary rules' signals over the four shared series, with every candle going
through the gate too (marks, equity, breakers), in event time.

Baseline in the same run: encoding and decoding the decision message (what one hop of the
pipeline costs for it). The figures count only if two runs over the same signals make the same
decisions (fingerprint: approvals, rejections and the approved quantities).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import numpy as np

from meridian.v1 import candle_pb2, common_pb2, signal_pb2
from meridian_common import codec, topics
from meridian_common.features import TREND_V2, aligned_returns, feature_matrix
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_common.strategy import TrendParams, trend_events
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")


Event = tuple[str, str, candle_pb2.Candle | signal_pb2.Signal | common_pb2.Watermark]


def _events() -> list[Event]:
    """Candles and primary-rule signals of the four series, in the gate's own order (time,
    candles before signals, key): each signal is decided as soon as it is handled."""
    data = {}
    for s in SYMBOLS:
        rows = list(CsvCandleSource(default_data_dir(), s, "1h").rows())
        data[s] = (np.array([r.open_time_ms for r in rows], dtype=np.int64), rows)
    btc_t, btc_rows = data["BTCUSDT"]
    btc_c = np.array([float(r.close) for r in btc_rows])
    out = []
    for s, (t, rows) in data.items():
        cols = [np.array([float(getattr(r, f)) for r in rows]) for f in ("high", "low", "close",
                                                                          "volume")]
        matrix = feature_matrix(t, *cols, btc_ret_1=aligned_returns(t, btc_t, btc_c))
        idx, directions, strengths = trend_events(matrix, TREND_V2, TrendParams(allow_short=True))
        atr = matrix[:, TREND_V2.index("atr_pct")]
        for r in rows:
            t_close = r.open_time_ms + 3_600_000
            out.append((t_close, 0, f"binance:{s}", candle_pb2.Candle(
                meta=common_pb2.Meta(id=f"c:{s}:{t_close}", event_time_ms=t_close,
                                     producer="bench"),
                exchange="binance", symbol=s, timeframe="1h", open_time_ms=r.open_time_ms,
                close_time_ms=t_close, open=r.open, high=r.high, low=r.low, close=r.close,
                volume=r.volume)))
        for i, d, st in zip(idx.tolist(), directions.tolist(), strengths.tolist(), strict=True):
            close = Decimal(rows[i].close)
            distance = Decimal(str(round(2 * atr[i], 6)))  # 2 ATR, as a fraction of the close
            stop = close * (1 - distance if d == common_pb2.DIRECTION_LONG else 1 + distance)
            t_ms = int(t[i]) + 3_600_000
            out.append((t_ms, 1, f"binance:{s}", signal_pb2.Signal(
                meta=common_pb2.Meta(id=f"sig:{s}:{t_ms}", event_time_ms=t_ms,
                                     producer="bench"),
                exchange="binance", symbol=s, strategy="trend", direction=d, strength=st,
                confidence=1.0, reference_price=rows[i].close,
                stop_loss=(str(stop.quantize(Decimal("0.00000001")))
                           if d != common_pb2.DIRECTION_FLAT else ""),
                reason="bench")))
    # every candle without a signal gets the signal Watermark the signals service publishes
    signalled = {(t, key) for t, rank, key, _ in out if rank == 1}
    out += [(t, 1, key, common_pb2.Watermark(key=key, event_time_ms=t, producer="bench"))
            for t, rank, key, _ in list(out) if rank == 0 and (t, key) not in signalled]
    out.sort(key=lambda item: (item[0], item[1], item[2]))
    return [(topics.CANDLE if rank == 0 else topics.SIGNAL, key, m) for _, rank, key, m in out]


def _run(events: list[Event]) -> tuple[np.ndarray, float, tuple, list]:
    """(per-signal latencies, seconds spent on candles, fingerprint, decisions)."""
    # Breakers on (daily loss at its 5% default pauses entries several times) but the drawdown
    # one wide enough that the gate never closes all and stops: a stopped gate decides fast.
    settings = RiskSettings(leverage=Decimal(3), sizing="fixed_fraction",
                            max_open_positions=3, max_portfolio_notional=Decimal(30000),
                            max_drawdown=Decimal("0.5"))
    handler = RiskHandler(settings)
    latencies = []
    candle_s = 0.0
    breakers = 0
    decisions = []
    for topic, key, message in events:
        out = Outbox("risk")
        started = time.perf_counter()
        handler.handle(Inbound(topic, key, message), out)
        spent = time.perf_counter() - started
        if topic == topics.SIGNAL and not isinstance(message, common_pb2.Watermark):
            latencies.append(spent)
        else:
            candle_s += spent
        decisions.extend(m for t, _, m in out.items if t == topics.RISK_DECISION)
        breakers += sum(1 for t, _, _ in out.items if t == topics.CONTROL)
    approved = [d for d in decisions if d.approved]
    fingerprint = (len(approved), len(decisions) - len(approved),
                   str(sum((Decimal(d.quantity) for d in approved), Decimal(0))), breakers)
    return np.array(latencies), candle_s, fingerprint, decisions


def main() -> int:
    # the breakers' pauses are logged as warnings; the figures are what this prints
    logging.getLogger("meridian_risk").setLevel(logging.ERROR)
    events = _events()
    latencies, candle_s, fingerprint, decisions = _run(events)
    _, _, again, _ = _run(events)
    if again != fingerprint:
        print(f"RISK FINGERPRINT MISMATCH: {fingerprint} vs {again}; figures do not count")
        return 1
    started = time.perf_counter()
    for d in decisions:
        value, mtype = codec.encode(d)
        codec.decode(topics.RISK_DECISION, value, mtype)
    hop = (time.perf_counter() - started) / len(decisions)
    rules = len(decisions[0].rules)
    per = latencies.mean()
    candles = sum(1 for topic, _, _ in events if topic == topics.CANDLE)
    print(f"\nrisk gate, {rules} rules on, {len(latencies):,} primary-rule signals and "
          f"{candles:,} candles over {len(SYMBOLS)} symbols (3x leverage, fixed fraction); "
          f"fingerprint (approved, rejected, approved quantity, breaker changes) = "
          f"{fingerprint}")
    print(f"candles (marks, equity, breakers) and signal watermarks through the gate "
          f"{candles / candle_s:,.0f}/s")
    print(f"decisions/s {1 / per:,.0f}; latency p50 {np.percentile(latencies, 50) * 1e6:.0f} us,"
          f" p99 {np.percentile(latencies, 99) * 1e6:.0f} us; one decision = "
          f"{per / hop:.1f}x encoding + decoding its message ({hop * 1e6:.0f} us)")
    return 0
