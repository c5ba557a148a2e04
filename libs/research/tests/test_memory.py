"""MemoryGuard: limits crossed by injected readings (nothing is allocated), the real psutil
reading, and the container (cgroup) figure from a fake cgroup tree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian_research.memory import (
    MB,
    MemoryGuard,
    MemoryPressure,
    MemoryReading,
    cgroup_available_bytes,
    read_memory,
)


def fixed(rss_mb: float, available_mb: float = 10_000.0) -> MemoryReading:
    return MemoryReading(rss_mb=rss_mb, available_mb=available_mb)


def sequence(*readings: MemoryReading) -> Iterator[MemoryReading]:
    yield from readings


def test_rss_over_the_limit_raises_naming_the_figure_and_the_limit() -> None:
    guard = MemoryGuard(max_rss_mb=2048, reader=lambda: fixed(2500.4))
    with pytest.raises(MemoryPressure) as info:
        guard.check()
    assert str(info.value) == "process RSS 2,500 MB exceeds max_rss_mb 2,048 MB"
    assert (info.value.figure, info.value.value_mb, info.value.limit_mb) == ("rss_mb", 2500.4,
                                                                              2048)


def test_too_little_available_memory_raises() -> None:
    guard = MemoryGuard(min_available_mb=1024, reader=lambda: fixed(100, available_mb=700))
    with pytest.raises(MemoryPressure, match="available memory 700 MB is below "
                                             "min_available_mb 1,024 MB") as info:
        guard.check()
    assert info.value.figure == "available_mb"


def test_within_the_limits_check_returns_the_reading() -> None:
    guard = MemoryGuard(max_rss_mb=2048, min_available_mb=512, reader=lambda: fixed(2048, 512))
    assert guard.check() == fixed(2048, 512)  # the limits themselves are allowed
    assert MemoryGuard(None, None, reader=lambda: fixed(10**9, 0)).check().rss_mb == 10**9


def test_garbage_is_collected_before_declaring_pressure() -> None:
    readings = sequence(fixed(3000), fixed(1500))
    guard = MemoryGuard(max_rss_mb=2000, reader=lambda: next(readings))
    assert guard.check() == fixed(1500)
    strict = sequence(fixed(3000), fixed(1500))
    with pytest.raises(MemoryPressure):
        MemoryGuard(max_rss_mb=2000, reader=lambda: next(strict), collect_first=False).check()


def test_the_real_reading_and_a_limit_relative_to_the_current_rss() -> None:
    reading = read_memory()
    assert 10 < reading.rss_mb < 100_000
    assert reading.available_mb > 0
    guard = MemoryGuard.with_headroom(1024, min_available_mb=None)
    assert guard.max_rss_mb == pytest.approx(reading.rss_mb + 1024, abs=200)
    guard.check()  # this process did not grow by a GB meanwhile
    readings = sequence(fixed(500), fixed(650), fixed(650))  # now, then after "work"
    grown = MemoryGuard.with_headroom(100, min_available_mb=None, reader=lambda: next(readings))
    with pytest.raises(MemoryPressure, match="RSS 650 MB exceeds max_rss_mb 600 MB"):
        grown.check()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_rss_mb must be > 0"):
        MemoryGuard(max_rss_mb=0)
    with pytest.raises(ValueError, match="min_available_mb must be > 0"):
        MemoryGuard(min_available_mb=-5)
    with pytest.raises(ValueError, match="extra_rss_mb"):
        MemoryGuard.with_headroom(0)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v2_limit_minus_working_set(tmp_path: Path) -> None:
    root = write(tmp_path, {"memory.max": f"{4096 * MB}\n", "memory.current": f"{3000 * MB}\n",
                            "memory.stat": f"anon 1\ninactive_file {500 * MB}\nactive_file 9\n"})
    assert cgroup_available_bytes(root) == (4096 - 2500) * MB
    reading = read_memory(root)
    assert reading.available_mb <= 4096 - 2500


def test_cgroup_v1_and_unlimited_groups(tmp_path: Path) -> None:
    v1 = write(tmp_path / "v1", {"memory/memory.limit_in_bytes": str(2048 * MB),
                                 "memory/memory.usage_in_bytes": str(1024 * MB),
                                 "memory/memory.stat": f"total_inactive_file {24 * MB}\n"})
    assert cgroup_available_bytes(v1) == (2048 - 1000) * MB
    v2_max = write(tmp_path / "v2max", {"memory.max": "max\n", "memory.current": "123\n"})
    assert cgroup_available_bytes(v2_max) is None
    v1_huge = write(tmp_path / "v1huge", {"memory/memory.limit_in_bytes": "9223372036854771712",
                                          "memory/memory.usage_in_bytes": "1"})
    assert cgroup_available_bytes(v1_huge) is None
    assert cgroup_available_bytes(tmp_path / "nothing") is None
