"""Memory guard for long optimisation runs: stop a trial BEFORE the machine runs out of memory.

Why: a study runs for hours, and a vectorbt evaluation over many windows and parameter
combinations can grow fast; when the kernel's OOM killer (or a container's memory limit) ends
the process, the trial in flight is left RUNNING in the SQLite file and nothing says why.
Checking between windows turns that into an ordinary, recorded stop.

Two limits, either or both:
- `max_rss_mb`: resident set size of THIS process. RSS is per process, so with `n_jobs`
  threads every running trial shares one budget: set it for the whole study, not per trial.
  Whichever trial checks first after the limit is crossed is stopped; the others stop at their
  own next check if the pressure is still there.
- `min_available_mb`: memory still available to the process: the host's available memory
  (psutil), or, inside a container with a memory limit (cgroup v2 or v1), the limit minus the
  container's working set if that is smaller. Containers matter because there the OOM killer
  acts at the cgroup limit while the host may look mostly free.

Testable without exhausting memory: the reading function is injected (`reader=`), and
`MemoryGuard.with_headroom` sets the RSS limit relative to the current RSS.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

MB = 1024 * 1024
DEFAULT_MIN_AVAILABLE_MB = 512.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge page-aligned number


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """One measurement, in MB (2**20 bytes)."""

    rss_mb: float
    available_mb: float


Reader = Callable[[], MemoryReading]


class MemoryPressure(RuntimeError):
    """A memory limit was crossed; names the figure, its value and the limit."""

    def __init__(self, figure: str, value_mb: float, limit_mb: float, message: str) -> None:
        super().__init__(message)
        self.figure = figure
        self.value_mb = value_mb
        self.limit_mb = limit_mb


def read_memory(cgroup_root: Path = CGROUP_ROOT) -> MemoryReading:
    """This process's RSS and the memory available to it (the tighter of host and cgroup)."""
    rss = psutil.Process().memory_info().rss
    available = psutil.virtual_memory().available
    cgroup = cgroup_available_bytes(cgroup_root)
    if cgroup is not None:
        available = min(available, cgroup)
    return MemoryReading(rss_mb=rss / MB, available_mb=available / MB)


def cgroup_available_bytes(root: Path = CGROUP_ROOT) -> int | None:
    """Limit minus working set of the container's memory cgroup, None without a limit.

    Working set = usage minus inactive file cache (what `docker stats` and the kubelet use):
    the cache is reclaimable, and counting it would stop trials on a machine that only read a
    lot of candle files.
    """
    layouts = (  # (limit, usage, stat key of inactive file pages): cgroup v2, then v1
        (root / "memory.max", root / "memory.current", "inactive_file"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes",
         "total_inactive_file"),
    )
    for limit_path, usage_path, inactive_key in layouts:
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is None or usage is None or limit >= _UNLIMITED:
            continue
        inactive = _stat_value(limit_path.parent / "memory.stat", inactive_key)
        return max(0, limit - max(0, usage - inactive))
    return None


def _read_int(path: Path) -> int | None:
    """An integer file of the cgroup tree; None when absent, unreadable or "max" (no limit)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, key: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


class MemoryGuard:
    """Raises MemoryPressure from `check()` when a limit is crossed.

    Before raising, it runs the garbage collector once and reads again (`collect_first`):
    cyclic garbage left by the previous window is not a reason to stop a study.
    """

    def __init__(self, max_rss_mb: float | None = None,
                 min_available_mb: float | None = DEFAULT_MIN_AVAILABLE_MB, *,
                 reader: Reader = read_memory, collect_first: bool = True) -> None:
        for name, value in (("max_rss_mb", max_rss_mb), ("min_available_mb", min_available_mb)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        self.max_rss_mb = max_rss_mb
        self.min_available_mb = min_available_mb
        self._reader = reader
        self._collect_first = collect_first

    @classmethod
    def with_headroom(cls, extra_rss_mb: float, *, reader: Reader = read_memory,
                      min_available_mb: float | None = DEFAULT_MIN_AVAILABLE_MB) -> MemoryGuard:
        """RSS limit = the current RSS + `extra_rss_mb`: a budget for the work about to start,
        whatever the process (data already loaded, numba caches) holds now."""
        if not extra_rss_mb > 0:
            raise ValueError(f"extra_rss_mb must be > 0, got {extra_rss_mb}")
        return cls(reader().rss_mb + extra_rss_mb, min_available_mb, reader=reader)

    def check(self) -> MemoryReading:
        """The current reading if within the limits; raises MemoryPressure otherwise."""
        reading = self._reader()
        breach = self._breach(reading)
        if breach is not None and self._collect_first:
            gc.collect()
            reading = self._reader()
            breach = self._breach(reading)
        if breach is not None:
            raise breach
        return reading

    def _breach(self, reading: MemoryReading) -> MemoryPressure | None:
        if self.max_rss_mb is not None and reading.rss_mb > self.max_rss_mb:
            return MemoryPressure(
                "rss_mb", reading.rss_mb, self.max_rss_mb,
                f"process RSS {reading.rss_mb:,.0f} MB exceeds max_rss_mb "
                f"{self.max_rss_mb:,.0f} MB")
        if self.min_available_mb is not None and reading.available_mb < self.min_available_mb:
            return MemoryPressure(
                "available_mb", reading.available_mb, self.min_available_mb,
                f"available memory {reading.available_mb:,.0f} MB is below min_available_mb "
                f"{self.min_available_mb:,.0f} MB")
        return None

    def __repr__(self) -> str:
        return (f"MemoryGuard(max_rss_mb={self.max_rss_mb}, "
                f"min_available_mb={self.min_available_mb})")
