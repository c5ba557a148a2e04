"""The shared CSV candle files (`SYMBOL-TIMEFRAME.csv.gz`, header
timestamp,open,high,low,close,volume with the open time in epoch ms UTC)."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from meridian_common.marketdata.candles import RawCandle, timeframe_ms

_HEADER = ["timestamp", "open", "high", "low", "close", "volume"]


def default_data_dir() -> Path:
    """The repository's sibling shared/data directory (MERIDIAN_INGEST_DATA_DIR overrides it)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (parent / "libs").is_dir() and candidate.is_dir():
            return candidate
    return Path("../shared/data")


@dataclass(frozen=True, slots=True)
class CsvCandleSource:
    data_dir: Path
    symbol: str
    timeframe: str = "1h"

    @property
    def path(self) -> Path:
        return self.data_dir / f"{self.symbol}-{self.timeframe}.csv.gz"

    def rows(self, start_ms: int | None = None, end_ms: int | None = None) -> Iterator[RawCandle]:
        """Candles with start_ms <= open time < end_ms, ascending; validates order and grid."""
        if not self.path.is_file():
            available = sorted(p.name for p in self.data_dir.glob("*.csv.gz"))
            raise FileNotFoundError(
                f"no candle file {self.path} for {self.symbol} {self.timeframe}; "
                f"available in {self.data_dir}: {available}")
        step = timeframe_ms(self.timeframe)
        with gzip.open(self.path, "rt", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header != _HEADER:
                raise ValueError(f"{self.path}: header {header} is not {_HEADER}")
            previous = None
            for line_no, row in enumerate(reader, start=2):
                if len(row) != 6:
                    raise ValueError(f"{self.path}:{line_no}: expected 6 fields, got {len(row)}")
                ts = int(row[0])
                if ts % step or (previous is not None and ts <= previous):
                    raise ValueError(f"{self.path}:{line_no}: timestamp {ts} out of order or "
                                     f"off the {self.timeframe} grid")
                previous = ts
                if start_ms is not None and ts < start_ms:
                    continue
                if end_ms is not None and ts >= end_ms:
                    break
                yield RawCandle(ts, row[1], row[2], row[3], row[4], row[5])


_FUNDING_HEADER = ["timestamp", "funding_rate"]


@dataclass(frozen=True, slots=True)
class CsvFundingSource:
    """The shared funding files (`SYMBOL-funding-8h.csv.gz`, header timestamp,funding_rate with
    the settlement time in epoch ms UTC and the per-interval rate as a decimal string)."""

    data_dir: Path
    symbol: str

    @property
    def path(self) -> Path:
        return self.data_dir / f"{self.symbol}-funding-8h.csv.gz"

    def exists(self) -> bool:
        return self.path.is_file()

    def rows(self, start_ms: int | None = None,
             end_ms: int | None = None) -> Iterator[tuple[int, str]]:
        """(settlement ms, rate) with start_ms <= time <= end_ms, ascending; validates order."""
        with gzip.open(self.path, "rt", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header != _FUNDING_HEADER:
                raise ValueError(f"{self.path}: header {header} is not {_FUNDING_HEADER}")
            previous = None
            for line_no, row in enumerate(reader, start=2):
                ts = int(row[0])
                if previous is not None and ts <= previous:
                    raise ValueError(f"{self.path}:{line_no}: timestamp {ts} out of order")
                previous = ts
                if (start_ms is None or ts >= start_ms) and (end_ms is None or ts <= end_ms):
                    yield ts, row[1]
