"""The features service's own series (docs/observability.md, features table).

Warm-up is its own counter so a dashboard can tell "no rows because indicators are still warming
up after a start or a new symbol" from "no rows because candles stopped arriving".
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from meridian_common.metrics import Children


class FeaturesMetrics:
    """Rows per symbol: ready ones, and those published not ready while indicators warm up."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter("meridian_features_rows_total",
                            "Feature rows emitted ready (every indicator has a value), per "
                            "symbol.", ["symbol"], registry=registry)
        self.warmup = Counter("meridian_features_warmup_rows_total",
                              "Candles taken while indicators were still warming up (their "
                              "row is published with ready=false), per symbol.", ["symbol"],
                              registry=registry)
        self._rows, self._warmup = Children(self.rows), Children(self.warmup)

    def known(self, symbol: str) -> None:
        """Start both counts of a symbol at 0 when it is first seen."""
        self.rows.labels(symbol)
        self.warmup.labels(symbol)

    def row(self, symbol: str, ready: bool) -> None:
        (self._rows if ready else self._warmup)(symbol).inc()
