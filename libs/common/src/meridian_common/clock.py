"""Clocks. Services read time from a Clock so that a replay is deterministic.

In replay and in every handler, "now" is the event time of the message being handled
(`EventClock`), never the wall clock: the same input range then gives the same outputs whatever
the machine's speed. Only live edges (staleness checks, exchange clock sync) use `WallClock`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    """Real time, for live edges only."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class EventClock:
    """Time as far as the handled events have advanced it; never moves backwards."""

    __slots__ = ("_now",)

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def advance(self, event_time_ms: int) -> int:
        if event_time_ms > self._now:
            self._now = event_time_ms
        return self._now

    def now_ms(self) -> int:
        return self._now
