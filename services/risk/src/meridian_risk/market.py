"""What the gate knows of the market: each symbol's last close and its recent returns.

Fed by md.candle.v1 in event time (the handler's merge), so every figure here at time t is the
same in every run: the marks that value positions, the move the price-spike breaker measures,
and the return correlations the correlated-exposure budget groups symbols by.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np


@dataclass(slots=True)
class _Symbol:
    close: Decimal
    close_time_ms: int
    # close times and log returns of the last `window` candles (two deques: numpy reads each
    # in one C call)
    times: deque[int]
    returns: deque[float]


@dataclass(slots=True)
class Move:
    """A candle's close against the previous close of the same symbol."""

    key: str
    previous: Decimal
    close: Decimal
    minutes: float

    @property
    def pct_per_min(self) -> float:
        change = abs(float(self.close) / float(self.previous) - 1.0) * 100.0
        return change / self.minutes if self.minutes > 0 else math.inf


@dataclass(slots=True)
class Market:
    window: int = 168
    symbols: dict[str, _Symbol] = field(default_factory=dict)

    def candle(self, key: str, close_time_ms: int, close: Decimal) -> Move | None:
        """Take a closed candle; the move since the symbol's previous close, None for its
        first or for a candle not newer than the last (a correction is a new mark, no move)."""
        sym = self.symbols.get(key)
        if sym is None:
            self.symbols[key] = _Symbol(close, close_time_ms, deque(maxlen=self.window),
                                        deque(maxlen=self.window))
            return None
        if close_time_ms <= sym.close_time_ms:
            if close_time_ms == sym.close_time_ms:
                sym.close = close
            return None
        move = Move(key, sym.close, close, (close_time_ms - sym.close_time_ms) / 60_000)
        if sym.close > 0 and close > 0:
            sym.times.append(close_time_ms)
            sym.returns.append(math.log(float(close) / float(sym.close)))
        sym.close, sym.close_time_ms = close, close_time_ms
        return move

    def mark(self, key: str) -> Decimal | None:
        sym = self.symbols.get(key)
        return sym.close if sym else None

    def correlation(self, a: str, b: str, min_overlap: int) -> float | None:
        """Pearson correlation of the two symbols' returns at the close times both have (in
        the window); None with fewer than `min_overlap` common returns or no variance."""
        if a == b:
            return 1.0
        sa, sb = self.symbols.get(a), self.symbols.get(b)
        if sa is None or sb is None:
            return None
        if sa.times == sb.times:  # the usual case: candles at the same close times
            if len(sa.times) < max(min_overlap, 2):
                return None
            x, y = np.array(sa.returns), np.array(sb.returns)
        else:
            ta, tb = np.array(sa.times, dtype=np.int64), np.array(sb.times, dtype=np.int64)
            _, ia, ib = np.intersect1d(ta, tb, assume_unique=True, return_indices=True)
            if len(ia) < max(min_overlap, 2):
                return None
            x, y = np.array(sa.returns)[ia], np.array(sb.returns)[ib]
        x = x - x.mean()
        y = y - y.mean()
        sxx, syy = float(x @ x), float(y @ y)
        if sxx <= 0 or syy <= 0:
            return None
        return float(x @ y) / math.sqrt(sxx * syy)

