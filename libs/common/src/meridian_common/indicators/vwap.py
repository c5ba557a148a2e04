"""Session VWAP: volume-weighted average typical price since the start of the current session.

VWAP = sum(tp * volume) / sum(volume) over the session's bars so far, tp = (high + low + close)
/ 3. Sessions are fixed slices of UTC time: a bar belongs to session
(open_time_ms - session_offset_ms) // session_ms, so by default every UTC day (00:00 to 24:00)
is one session. The session comes from the bar's open time, not from counting bars, so a gap of
missing candles is handled without special cases: a gap inside a session just contributes
nothing, and the first bar after a gap that crosses a boundary starts a new session.

Warm-up: none in TA-Lib's sense (TA-Lib has no session VWAP): the first bar of each session
returns its own typical price. The value is undefined (0/0) while the session has traded no
volume, e.g. when it opens with zero-volume bars; both forms give None / NaN there.

Bars must arrive with strictly increasing open times (closed, final candles); the incremental
form raises ValueError otherwise, since it cannot take back what it has added.

Numerics: both forms accumulate tp * volume and volume one bar at a time in the same order,
restarting from 0 at each session (the batch form lays the sessions out as rows and runs
np.cumsum along them, which is a sequential accumulate), so they agree bit for bit. Sums restart
each session, so rounding does not build up over the series. O(1) per update.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DAY_MS = 86_400_000


def _is_int(value: object) -> bool:
    """Whole-millisecond times only: a float session length would make session numbers floats."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check(session_ms: int, session_offset_ms: int) -> None:
    if not _is_int(session_ms) or session_ms < 1:
        raise ValueError(f"Vwap.session_ms must be a positive int (ms), got {session_ms!r}")
    if not _is_int(session_offset_ms) or not 0 <= session_offset_ms < session_ms:
        raise ValueError(f"Vwap.session_offset_ms must be an int in [0, session_ms), "
                         f"got {session_offset_ms!r}")


@dataclass(slots=True)
class Vwap:
    session_ms: int = DAY_MS
    session_offset_ms: int = 0
    session: int | None = None  # session number of the last bar
    last_open_time_ms: int | None = None
    pv_sum: float = 0.0  # sum of tp * volume in the current session
    volume_sum: float = 0.0

    def __post_init__(self) -> None:
        _check(self.session_ms, self.session_offset_ms)

    def update(self, open_time_ms: int, high: float, low: float, close: float,
               volume: float) -> float | None:
        if self.last_open_time_ms is not None and open_time_ms <= self.last_open_time_ms:
            raise ValueError(f"Vwap.update: open_time_ms {open_time_ms} is not after the "
                             f"previous bar's {self.last_open_time_ms}")
        self.last_open_time_ms = open_time_ms
        session = (open_time_ms - self.session_offset_ms) // self.session_ms
        if session != self.session:
            self.session = session
            self.pv_sum = 0.0
            self.volume_sum = 0.0
        self.pv_sum += (high + low + close) / 3.0 * volume
        self.volume_sum += volume
        if self.volume_sum == 0.0:
            return None
        return self.pv_sum / self.volume_sum


def vwap_batch(open_time_ms: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike,
               close: npt.ArrayLike, volume: npt.ArrayLike, session_ms: int = DAY_MS,
               session_offset_ms: int = 0) -> npt.NDArray[np.float64]:
    """Session VWAP for whole arrays; NaN where the session has no volume yet."""
    _check(session_ms, session_offset_ms)
    t = np.asarray(open_time_ms, dtype=np.int64)
    h, lo, c, v = (np.asarray(a, dtype=np.float64) for a in (high, low, close, volume))
    if not t.shape == h.shape == lo.shape == c.shape == v.shape or t.ndim != 1:
        raise ValueError("open_time_ms, high, low, close and volume must be 1-D of equal length")
    if t.size == 0:
        return np.empty(0)
    if np.any(t[1:] <= t[:-1]):
        raise ValueError("open_time_ms must be strictly increasing")
    session = (t - session_offset_ms) // session_ms
    starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    row = np.cumsum(np.r_[True, session[1:] != session[:-1]]) - 1  # session row of each bar
    col = np.arange(t.size) - starts[row]  # position of each bar in its session
    width = int(col.max()) + 1
    pv = np.zeros((starts.size, width))
    vol = np.zeros((starts.size, width))
    pv[row, col] = (h + lo + c) / 3.0 * v
    vol[row, col] = v
    pv_sum = np.cumsum(pv, axis=1)[row, col]
    volume_sum = np.cumsum(vol, axis=1)[row, col]
    empty = volume_sum == 0.0
    return np.where(empty, np.nan, pv_sum / np.where(empty, 1.0, volume_sum))
