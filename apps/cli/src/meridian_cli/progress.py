"""Progress on stderr for long runs: a live line on a terminal, else a line every few seconds."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    def __init__(self, label: str, every_s: float = 2.0) -> None:
        self.label = label
        self.every_s = every_s
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int | None, seconds: float) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self._last < (0.2 if self.tty else self.every_s):
            return
        self._last = now
        rate = done / seconds if seconds > 0 else 0.0
        if total:
            eta = (total - done) / rate if rate > 0 else 0.0
            text = (f"{self.label}: {done:,}/{total:,} candles ({done / total:.0%}), "
                    f"{rate:,.0f}/s, eta {eta:,.0f}s")
        else:
            text = f"{self.label}: {done:,} candles, {rate:,.0f}/s"
        if self.tty:
            sys.stderr.write("\r" + text.ljust(78) + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
