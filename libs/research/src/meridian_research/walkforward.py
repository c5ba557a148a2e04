"""Rolling walk-forward windows: a fixed-length in-sample (train) part, then an out-of-sample
(test) part, rolled forward in time.

Why rolling and not expanding: every window then trains on the same amount of history, so the
windows are comparable and old regimes fall out of the fit.

Conventions (shared with the candle files and `meridian_ml.splits`):
- times are UTC epoch milliseconds; the inputs may also be timezone-aware datetimes
  (`pandas.Timestamp` included) and the lengths `timedelta`s (`pandas.Timedelta` included);
- every interval is half-open, [start, end): a candle whose OPEN time equals `test_start`
  belongs to the test part, one at `train_end` does not belong to the train part;
- window k: train = [start + k*step, + train), an optional purge gap, then
  test = [train_end + purge, + test). `step` defaults to `test`, so the test parts tile the
  span edge to edge without overlap; their compounded returns are then one continuous
  out-of-sample history, which is what the study's objective relies on. A `step` larger than
  `test` leaves gaps between test parts (allowed, e.g. to sample a long span cheaply); a smaller
  one would count some out-of-sample bars twice and is refused.
- `purge` drops the bars right before each test part from its train part, for rules whose
  signals look a few bars ahead (labels) or are serially correlated with the test start.

Train parts of later windows overlap earlier TEST parts: that is the point of rolling (the
past is refitted); within one window the train part always ends before its test part starts.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 24 * MS_PER_HOUR

Instant = int | datetime
Length = int | timedelta


@dataclass(frozen=True, slots=True)
class Window:
    """One walk-forward window; times in UTC epoch ms, intervals half-open [start, end)."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"window index must be >= 0, got {self.index}")
        if not self.train_start < self.train_end <= self.test_start < self.test_end:
            raise ValueError(
                f"window {self.index}: need train_start < train_end <= test_start < test_end, "
                f"got {self.train_start}, {self.train_end}, {self.test_start}, {self.test_end}")

    @property
    def purge(self) -> int:
        """The gap (ms) between the end of the train part and the start of the test part."""
        return self.test_start - self.train_end

    def label(self) -> str:
        """Short human form of the out-of-sample part, for reports and progress lines."""
        return (f"#{self.index} OOS {_iso(self.test_start)}..{_iso(self.test_end)}")

    def to_dict(self) -> dict[str, int]:
        """Plain JSON-able form, stored with a study so a resumed study can check its windows."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        return cls(**{k: int(data[k]) for k in
                      ("index", "train_start", "train_end", "test_start", "test_end")})


def rolling_windows(start: Instant, end: Instant, *, train: Length, test: Length,
                    step: Length | None = None, purge: Length = 0) -> list[Window]:
    """All rolling windows whose test part ends at or before `end` (exclusive bound).

    The first train part starts at `start`; windows are added every `step` while they fit.
    Raises ValueError naming the offending argument, and when not even one window fits (the
    span is shorter than train + purge + test): an empty walk-forward is never what a caller
    meant, and silently optimising over nothing would look like a result.
    """
    start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
    train_ms = _positive(train, "train")
    test_ms = _positive(test, "test")
    step_ms = test_ms if step is None else _positive(step, "step")
    purge_ms = _length_ms(purge, "purge")
    if purge_ms < 0:
        raise ValueError(f"purge must be >= 0, got {_fmt_length(purge_ms)}")
    if step_ms < test_ms:
        raise ValueError(f"step ({_fmt_length(step_ms)}) must be >= test ({_fmt_length(test_ms)})"
                         ": out-of-sample parts would overlap and count the same bars twice")
    if end_ms <= start_ms:
        raise ValueError(f"end ({_iso(end_ms)}) must be after start ({_iso(start_ms)})")
    needed = train_ms + purge_ms + test_ms
    span = end_ms - start_ms
    if span < needed:
        raise ValueError(
            f"no walk-forward window fits: the span {_iso(start_ms)}..{_iso(end_ms)} "
            f"({_fmt_length(span)}) is shorter than train + purge + test ({_fmt_length(needed)})")
    count = (span - needed) // step_ms + 1
    windows = []
    for k in range(count):
        train_start = start_ms + k * step_ms
        train_end = train_start + train_ms
        test_start = train_end + purge_ms
        windows.append(Window(k, train_start, train_end, test_start, test_start + test_ms))
    return windows


def to_ms(value: Instant, name: str) -> int:
    """UTC epoch ms from epoch ms or an aware datetime; naive datetimes are refused because
    guessing their zone silently shifts every window by hours."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be epoch ms or a datetime, got a bool")
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} is a naive datetime ({value}); pass a timezone-aware "
                             "(UTC) time or epoch milliseconds")
        delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
        return delta // timedelta(milliseconds=1)
    if isinstance(value, numbers.Integral):  # numpy integers too (a timestamp column's item)
        return int(value)
    raise TypeError(f"{name} must be epoch ms (int) or a datetime, got {type(value).__name__}")


def _length_ms(value: Length, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be ms or a timedelta, got a bool")
    if isinstance(value, timedelta):
        return value // timedelta(milliseconds=1)
    if isinstance(value, numbers.Integral):
        return int(value)
    raise TypeError(f"{name} must be ms (int) or a timedelta, got {type(value).__name__}")


def _positive(value: Length, name: str) -> int:
    ms = _length_ms(value, name)
    if ms <= 0:
        raise ValueError(f"{name} must be > 0, got {_fmt_length(ms)}")
    return ms


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def _fmt_length(ms: int) -> str:
    """'30 d', '36 h' or '1500 ms': readable in error messages without losing the exact value."""
    if ms and ms % MS_PER_DAY == 0:
        return f"{ms // MS_PER_DAY} d"
    if ms and ms % MS_PER_HOUR == 0:
        return f"{ms // MS_PER_HOUR} h"
    return f"{ms} ms"
