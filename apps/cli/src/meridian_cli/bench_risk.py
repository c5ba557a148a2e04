"""`meridian bench` risk figures: decisions per second and per-decision latency with every rule
layer on, for the primary rules' signals over the four shared series.

Baseline in the same run: encoding and decoding the decision message (what one hop of the
pipeline costs for it). The figures count only if two runs over the same signals make the same
decisions (fingerprint: approvals, rejections and the approved quantities).
"""

from __future__ import annotations

import time
from decimal import Decimal

import numpy as np

from meridian.v1 import common_pb2, signal_pb2
from meridian_common import codec, topics
from meridian_common.features import TREND_V2, aligned_returns, feature_matrix
from meridian_common.handler import Inbound, Outbox
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_common.strategy import TrendParams, trend_events
from meridian_risk.handler import RiskHandler
from meridian_risk.settings import RiskSettings

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")


def _signals() -> list[tuple[str, signal_pb2.Signal]]:
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
        for i, d, st in zip(idx.tolist(), directions.tolist(), strengths.tolist(), strict=True):
            close = Decimal(rows[i].close)
            distance = Decimal(str(round(2 * atr[i], 6)))  # 2 ATR, as a fraction of the close
            stop = close * (1 - distance if d == common_pb2.DIRECTION_LONG else 1 + distance)
            t_ms = int(t[i]) + 3_600_000
            out.append((t_ms, f"binance:{s}", signal_pb2.Signal(
                meta=common_pb2.Meta(id=f"sig:{s}:{t_ms}", event_time_ms=t_ms,
                                     producer="bench"),
                exchange="binance", symbol=s, strategy="trend", direction=d, strength=st,
                confidence=1.0, reference_price=rows[i].close,
                stop_loss=(str(stop.quantize(Decimal("0.00000001")))
                           if d != common_pb2.DIRECTION_FLAT else ""),
                reason="bench")))
    out.sort(key=lambda item: (item[0], item[1]))
    return [(key, sig) for _, key, sig in out]


def _run(signals: list[tuple[str, signal_pb2.Signal]]) -> tuple[np.ndarray, tuple, list]:
    settings = RiskSettings(leverage=Decimal(3), sizing="fixed_fraction",
                            max_open_positions=3, max_portfolio_notional=Decimal(30000))
    handler = RiskHandler(settings)
    latencies = np.empty(len(signals))
    decisions = []
    for n, (key, sig) in enumerate(signals):
        out = Outbox("risk")
        started = time.perf_counter()
        handler.handle(Inbound(topics.SIGNAL, key, sig), out)
        latencies[n] = time.perf_counter() - started
        decisions.extend(m for t, _, m in out.items if t == topics.RISK_DECISION)
    approved = [d for d in decisions if d.approved]
    fingerprint = (len(approved), len(decisions) - len(approved),
                   str(sum((Decimal(d.quantity) for d in approved), Decimal(0))))
    return latencies, fingerprint, decisions


def main() -> int:
    signals = _signals()
    latencies, fingerprint, decisions = _run(signals)
    _, again, _ = _run(signals)
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
    print(f"\nrisk gate, {rules} rules on, {len(signals):,} primary-rule signals over "
          f"{len(SYMBOLS)} symbols (3x leverage, fixed fraction); fingerprint (approved, "
          f"rejected, approved quantity) = {fingerprint}")
    print(f"decisions/s {1 / per:,.0f}; latency p50 {np.percentile(latencies, 50) * 1e6:.0f} us,"
          f" p99 {np.percentile(latencies, 99) * 1e6:.0f} us; one decision = "
          f"{per / hop:.1f}x encoding + decoding its message ({hop * 1e6:.0f} us)")
    return 0
