"""Event-time merge of many keyed streams: the order a consumer that joins them must act in.

A service whose decision for one key depends on the state of other keys (the risk gate's
portfolio limits) must not act in arrival order: over Kafka, partitions interleave differently
from one run to the next. It buffers each record and releases it only once every stream it
knows has reached the record's event time, in (event time, rank, key, arrival) order. So the
same inputs give the same order, whatever the interleaving, and ties are broken by key.

A stream is a (topic, key) pair. Its progress is the event time of its latest record or
Watermark, which the producers promise never to go back on. Two assumptions, both true of the
producers in this repo, make the order exact: a stream carries at most one record per event
time (one signal or watermark per features row, one candle per open), and a stream's first
record arrives before the merge has released past its event time. A stream with several
records per event time (a bot's orders on one candle, one candle's fills) says so per record,
`hold(..., reached=t - 1)`, and closes each time with a Watermark at t. A record that breaks the
second (a stream that appears late, a candle correction) is released at once and counted as
late: it cannot be put back in order, and holding it would stall nothing but itself.

A stream that stops (an ingest that died) holds every other stream back: that is the price of
determinism. `grace_ms` lets a live deployment proceed without it after a bound on wall-clock
waiting; proceeding is counted and logged, never silent.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Mapping
from typing import Generic, TypeVar

from meridian_common.handler import Position

T = TypeVar("T")
Stream = tuple[str, str]  # (topic, key)


class EventTimeMerge(Generic[T]):
    def __init__(self, grace_s: float = 0.0) -> None:
        self.grace_s = grace_s
        self._progress: dict[Stream, int] = {}
        # (event time, rank, key, arrival seq, item, position): compared as tuples (in C), and
        # the unique arrival seq means an item is never compared.
        self._held: list[tuple[int, int, str, int, T, Position]] = []
        self._seq = itertools.count()
        # Event time of the last record released (-1: none yet): a record older than it can no
        # longer be put in order.
        self.released_to = -1
        self.late = 0
        self.forced = 0  # releases made by the grace period without every stream
        self._waiting_since: float | None = None

    # -- input -------------------------------------------------------------------------------

    def advance(self, stream: Stream, event_time_ms: int) -> None:
        """A record or Watermark of `stream` at `event_time_ms` has arrived."""
        reached = self._progress.get(stream)
        if reached is None or event_time_ms > reached:
            self._progress[stream] = event_time_ms

    def hold(self, stream: Stream, event_time_ms: int, rank: int, item: T,
             position: Position = ("", 0, -1), *, reached: int | None = None) -> bool:
        """Take a record (and its stream's progress); False when it is late, i.e. behind what
        was already released: the caller handles it at once.

        reached: the stream's progress the record proves (default: its event time). A stream
        that carries several records per event time (a bot's orders on one candle, the fills
        of one candle) passes `event_time_ms - 1` and closes each time with a Watermark, so
        its first record at t cannot release t before the others have arrived."""
        self.advance(stream, event_time_ms if reached is None else reached)
        if event_time_ms < self.released_to:
            self.late += 1
            return False
        if not self._held:
            self._waiting_since = time.monotonic()
        heapq.heappush(self._held, (event_time_ms, rank, stream[1], next(self._seq), item,
                                    position))
        return True

    # -- output ------------------------------------------------------------------------------

    @property
    def frontier(self) -> int:
        """The event time every known stream has reached (-1 before the first)."""
        return min(self._progress.values(), default=-1)

    def release(self) -> list[T]:
        """Held records every stream has caught up with, in (time, rank, key, arrival) order."""
        upto = self.frontier
        if (self.grace_s > 0 and self._held and self._held[0][0] > upto
                and self._waiting_since is not None
                and time.monotonic() - self._waiting_since >= self.grace_s):
            upto = self._held[0][0]
            self.forced += 1
        out: list[T] = []
        last = self.released_to
        held = self._held
        while held and held[0][0] <= upto:
            last, _, _, _, item, _ = heapq.heappop(held)
            out.append(item)
        if out:
            # Only released records move it: streams' progress alone (e.g. one symbol's start
            # Watermark read before another symbol's older candles) makes nothing late.
            self.released_to = max(self.released_to, last)
            self._waiting_since = time.monotonic() if self._held else None
        return out

    def lagging(self) -> list[tuple[Stream, int]]:
        """Streams behind the oldest held record: what the merge is waiting for."""
        if not self._held:
            return []
        t = self._held[0][0]
        return sorted((s, p) for s, p in self._progress.items() if p < t)

    @property
    def held(self) -> int:
        return len(self._held)

    def waited_s(self) -> float:
        """Wall-clock seconds the oldest held record has waited (0 when none)."""
        if self._waiting_since is None or not self._held:
            return 0.0
        return time.monotonic() - self._waiting_since

    def retained(self) -> Mapping[tuple[str, int], int]:
        """Lowest offset held, per physical (topic, partition): the host commits below it."""
        low: dict[tuple[str, int], int] = {}
        for h in self._held:
            topic, partition, offset = h[5]
            tp = (topic, partition)
            if offset >= 0 and (tp not in low or offset < low[tp]):
                low[tp] = offset
        return low

    def progress(self) -> dict[Stream, int]:
        return dict(self._progress)

    def knows(self, stream: Stream) -> bool:
        return stream in self._progress
