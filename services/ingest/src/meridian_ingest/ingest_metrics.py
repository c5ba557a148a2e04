"""The ingest service's own series (docs/observability.md, ingest table), one object passed to
replay, live, backfill and repair.

Ingest is not a hosted Handler: its jobs call `candle`, `gap_detected`, `gap_repaired` and
`exchange_error` themselves. Without a registry the series live in a private one, so every code
path counts the same way whether or not a /metrics endpoint exposes them (tests read it back).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from meridian_common.marketdata import timeframe_ms
from meridian_common.metrics import Children

MODES = ("replay", "live", "backfill")
KINDS = ("retryable", "fatal")


class IngestMetrics:
    """Candles published per symbol and mode, the last one's close, gaps and exchange errors."""

    def __init__(self, registry: CollectorRegistry | None = None, *, timeframe: str | None = None,
                 symbols: Iterable[str] = (), modes: Iterable[str] = ()) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.candles = Counter("meridian_ingest_candles_total",
                               "Closed candles published, per symbol and mode (replay, live, "
                               "backfill: written to the candles table).", ["symbol", "mode"],
                               registry=self.registry)
        self.last_candle = Gauge("meridian_ingest_last_candle_seconds",
                                 "Close time (open + timeframe) of the newest closed candle "
                                 "published, unix seconds.", ["symbol", "mode"],
                                 registry=self.registry)
        self.timeframe = Gauge("meridian_ingest_timeframe_seconds",
                               "The candle timeframe, for staleness rules.",
                               registry=self.registry)
        self.gaps_detected = Counter("meridian_ingest_gaps_detected_total",
                                     "Runs of missing candles found (live resume, gaps/repair).",
                                     ["symbol"], registry=self.registry)
        self.gaps_repaired = Counter("meridian_ingest_gaps_repaired_total",
                                     "Missing candles recovered from the exchange.", ["symbol"],
                                     registry=self.registry)
        self.exchange_errors = Counter("meridian_ingest_exchange_errors_total",
                                       "Exchange calls that failed: retryable (retried or a "
                                       "stream reconnected) or fatal (not retryable, or retries "
                                       "exhausted: the job stops).", ["kind"],
                                       registry=self.registry)
        self._newest: dict[tuple[str, str], int] = {}
        self._candles = Children(self.candles)
        self._last_candle = Children(self.last_candle)
        for kind in KINDS:
            self.exchange_errors.labels(kind)
        if timeframe is not None:
            self.timeframe.set(timeframe_ms(timeframe) / 1000)
        for symbol in symbols:
            self.known(symbol, modes)

    def known(self, symbol: str, modes: Iterable[str]) -> None:
        """Start a configured symbol's counters at 0 (the last-candle gauge stays absent until a
        candle is published: a 0 there would read as 1970, infinitely stale)."""
        for mode in modes:
            self.candles.labels(symbol, mode)
        self.gaps_detected.labels(symbol)
        self.gaps_repaired.labels(symbol)

    def candle(self, symbol: str, mode: str, close_time_ms: int) -> None:
        """One closed candle published; the gauge only moves forward (a corrected older candle
        republished does not make the feed look stale)."""
        self._candles(symbol, mode).inc()
        key = (symbol, mode)
        if close_time_ms > self._newest.get(key, -1):
            self._newest[key] = close_time_ms
            self._last_candle(symbol, mode).set(close_time_ms / 1000)

    def gap_detected(self, symbol: str) -> None:
        self.gaps_detected.labels(symbol).inc()

    def gap_repaired(self, symbol: str, candles: int) -> None:
        if candles:
            self.gaps_repaired.labels(symbol).inc(candles)

    def exchange_error(self, kind: str) -> None:
        self.exchange_errors.labels(kind).inc()
