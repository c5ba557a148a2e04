"""The fake exchange's notion of "now".

Everything time-dependent in the fake (which candles exist yet, which one is still forming, when
a WebSocket pushes the close of a candle, which funding settlements have happened, what
`/v5/market/time` answers) reads this one clock, so a test can replay 2021 at 3600x speed, or
pause time and step it by hand to get exactly the same messages on every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class FakeClock:
    """Exchange time in epoch milliseconds: `start_ms + elapsed_real_time * speed`.

    Real elapsed time comes from a monotonic clock, so wall-clock jumps on the host never move
    the fake. `pause()` freezes the fake time (and `set`/`advance` still work while paused),
    which is what deterministic tests want; `resume()` continues from the frozen value.
    """

    def __init__(self, start_ms: int, speed: float = 1.0, *, paused: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed < 0:
            raise ValueError(f"clock speed must be >= 0, got {speed}")
        self._monotonic = monotonic
        self._speed = float(speed)
        self._anchor_ms = float(start_ms)
        self._anchor_real = monotonic()
        self._paused = paused

    # -- reading -------------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The current fake time, in whole epoch milliseconds."""
        return int(self._now_exact())

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    # -- controls ------------------------------------------------------------------------------

    def set(self, ms: int) -> None:
        """Jump to `ms` (may go backwards; WebSocket pushes then resume from the new time)."""
        self._anchor_ms = float(ms)
        self._anchor_real = self._monotonic()

    def advance(self, ms: int) -> None:
        """Move forward by `ms` fake milliseconds, at once."""
        if ms < 0:
            raise ValueError(f"advance() takes a non-negative duration, got {ms}")
        self.set(int(self._now_exact()) + ms)

    def pause(self) -> None:
        """Freeze fake time at its current value."""
        if not self._paused:
            self._rebase()
            self._paused = True

    def resume(self) -> None:
        """Let fake time run again from where it was frozen."""
        if self._paused:
            self._anchor_real = self._monotonic()
            self._paused = False

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on, without a jump in fake time."""
        if speed < 0:
            raise ValueError(f"clock speed must be >= 0, got {speed}")
        self._rebase()
        self._speed = float(speed)

    # -- internals -----------------------------------------------------------------------------

    def _now_exact(self) -> float:
        if self._paused:
            return self._anchor_ms
        return self._anchor_ms + (self._monotonic() - self._anchor_real) * 1000.0 * self._speed

    def _rebase(self) -> None:
        self._anchor_ms = self._now_exact()
        self._anchor_real = self._monotonic()

    def __repr__(self) -> str:
        state = "paused" if self._paused else f"speed={self._speed:g}"
        return f"FakeClock(now_ms={self.now_ms()}, {state})"
