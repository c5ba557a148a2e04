"""The shared market-data files, loaded once into sorted in-memory arrays.

The fake answers thousands of range queries per second, so each (symbol, timeframe) series is
read from its CSV once (and cached per process, so many servers in one test session share it)
and range queries are two `bisect` calls. Rows are kept exactly as the files have them (decimal
strings); gaps in the files stay gaps, which is how the exchange itself serves maintenance
windows.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from meridian_common.marketdata import CsvCandleSource, CsvFundingSource, RawCandle, timeframe_ms


def _decimals(value: str) -> int:
    _, dot, frac = value.partition(".")
    return len(frac) if dot else 0


@dataclass(frozen=True)
class CandleSeries:
    """One symbol/timeframe: open times ascending, the rows, and the precision the data uses.

    `price_dp`/`volume_dp` are the most decimals any row uses; partial (forming) candles are
    rounded to them so they look like the exchange's own numbers.
    """

    symbol: str
    timeframe: str
    tf_ms: int
    times: list[int]
    rows: list[RawCandle]
    price_dp: int
    volume_dp: int

    def index_of(self, open_time_ms: int) -> int | None:
        i = bisect_left(self.times, open_time_ms)
        if i < len(self.times) and self.times[i] == open_time_ms:
            return i
        return None

    def get(self, open_time_ms: int) -> RawCandle | None:
        i = self.index_of(open_time_ms)
        return None if i is None else self.rows[i]

    def between(self, start_ms: int, end_ms: int) -> list[RawCandle]:
        """Rows with start_ms <= open time <= end_ms (both inclusive)."""
        return self.rows[bisect_left(self.times, start_ms):bisect_right(self.times, end_ms)]


class FundingRow(NamedTuple):
    time_ms: int
    rate: str


@dataclass(frozen=True)
class FundingSeries:
    symbol: str
    times: list[int]
    rows: list[FundingRow]

    def between(self, start_ms: int, end_ms: int) -> list[FundingRow]:
        return self.rows[bisect_left(self.times, start_ms):bisect_right(self.times, end_ms)]


@lru_cache(maxsize=64)
def load_candles(data_dir: Path, symbol: str, timeframe: str) -> CandleSeries | None:
    """The series from `SYMBOL-TIMEFRAME.csv.gz`, or None when there is no such file."""
    source = CsvCandleSource(data_dir, symbol, timeframe)
    if not source.path.is_file():
        return None
    rows = list(source.rows())
    price_dp = max((max(_decimals(r.open), _decimals(r.high), _decimals(r.low),
                        _decimals(r.close)) for r in rows), default=2)
    volume_dp = max((_decimals(r.volume) for r in rows), default=3)
    return CandleSeries(symbol, timeframe, timeframe_ms(timeframe), [r.open_time_ms for r in rows],
                        rows, price_dp, volume_dp)


@lru_cache(maxsize=64)
def load_funding(data_dir: Path, symbol: str) -> FundingSeries | None:
    """The settlements from `SYMBOL-funding-8h.csv.gz`, or None when there is no such file."""
    source = CsvFundingSource(data_dir, symbol)
    if not source.exists():
        return None
    rows: list[FundingRow] = []
    for ts, rate in source.rows():
        Decimal(rate)  # validates the number; the string itself is served
        rows.append(FundingRow(ts, rate))
    return FundingSeries(symbol, [r.time_ms for r in rows], rows)


@dataclass
class MarketData:
    """Every series the server was configured with, keyed by symbol and timeframe."""

    data_dir: Path
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    candles: dict[tuple[str, str], CandleSeries] = field(default_factory=dict)
    funding: dict[str, FundingSeries] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path, symbols: tuple[str, ...],
             timeframes: tuple[str, ...]) -> MarketData:
        """Load all files; a symbol with no candle file for any configured timeframe is an error
        (a typo would otherwise give a market that silently never trades)."""
        data = cls(data_dir, symbols, timeframes)
        for symbol in symbols:
            for tf in timeframes:
                series = load_candles(data_dir, symbol, tf)
                if series is not None:
                    data.candles[(symbol, tf)] = series
            if not any((symbol, tf) in data.candles for tf in timeframes):
                available = sorted(p.name for p in data_dir.glob("*.csv.gz"))
                raise FileNotFoundError(
                    f"no candle file for {symbol} in any of {list(timeframes)} under {data_dir}; "
                    f"available: {available}")
            funding = load_funding(data_dir, symbol)
            if funding is not None:
                data.funding[symbol] = funding
        return data

    def series(self, symbol: str, timeframe: str) -> CandleSeries | None:
        return self.candles.get((symbol, timeframe))
