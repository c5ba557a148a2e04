"""Print the indicator parity table (worst differences per indicator) after the tests."""

from __future__ import annotations

import pytest

from meridian_common.testing import PARITY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not PARITY:
        return
    worst: dict[str, list[float | None]] = {}
    for r in PARITY:
        entry = worst.setdefault(r.indicator, [0.0, None, 0])  # type: ignore[list-item]
        entry[0] = max(entry[0] or 0.0, r.incremental_vs_batch)
        if r.vs_talib is not None:
            entry[1] = max(entry[1] or 0.0, r.vs_talib)
        entry[2] = (entry[2] or 0) + r.values  # type: ignore[operator]
    terminalreporter.section("indicator parity (worst relative difference after warm-up)")
    terminalreporter.write_line(f"{'indicator':<30}{'values':>10}{'incr vs batch':>16}"
                                f"{'vs TA-Lib':>14}")
    for name in sorted(worst):
        inc, talib, n = worst[name]
        shown = "n/a" if talib is None else f"{talib:.1e}"
        terminalreporter.write_line(f"{name:<30}{n:>10,}{inc:>16.1e}{shown:>14}")
