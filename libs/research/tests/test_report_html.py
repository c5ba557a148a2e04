"""The HTML report: complete, offline, deterministic, and its drawdown pane is below zero."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from meridian_common.performance import TradeRecord, backtest_metrics, monte_carlo
from meridian_research.report_html import (
    chart_div_id,
    equity_report_html,
    format_metric,
    write_report,
)

HOUR = 3_600_000
START = 1_704_067_200_000 - 6 * HOUR  # 2023-12-31 18:00 UTC
TIMES = [START + k * HOUR for k in range(8)]
EQUITY = [10_000.0, 10_250.0, 9_800.0, 9_900.0, 10_400.0, 10_100.0, 10_600.0, 10_550.0]
TRADES = [
    TradeRecord("BTCUSDT", 1, TIMES[0], TIMES[2], 0.1, 42_000.0, 40_000.0, -200.0, 4.0, 0.0),
    TradeRecord("BTCUSDT", -1, TIMES[3], TIMES[6], 0.1, 40_000.0, 33_000.0, 700.0, 4.0, 1.0),
]
TITLE = "BTC trend <1h> & friends"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _metrics() -> dict[str, float | int | None]:
    return backtest_metrics(TIMES, EQUITY, TRADES, initial_capital=10_000.0).to_json()


def _page(**overrides: Any) -> str:
    kwargs: dict[str, Any] = {
        "title": TITLE,
        "metrics": _metrics(),
        "monte_carlo": monte_carlo([t.net_pnl for t in TRADES], 10_000.0, runs=50).to_json(),
        "trades": [{"entry_ms": t.entry_ms, "exit_ms": t.exit_ms, "direction": t.direction,
                    "symbol": t.symbol, "net_pnl": t.net_pnl} for t in TRADES],
    }
    kwargs.update(overrides)
    return equity_report_html(TIMES, EQUITY, **kwargs)


def _traces(page: str) -> list[dict[str, Any]]:
    """The data array passed to Plotly.newPlot(id, data, layout, config)."""
    call = page.index("Plotly.newPlot(")
    start = page.index("[", page.index(f'"{chart_div_id(TITLE)}"', call))
    data, _ = json.JSONDecoder().raw_decode(page, start)
    return data


@pytest.fixture(scope="module")
def page() -> str:
    return _page()


def test_page_is_deterministic(page: str) -> None:
    assert page == _page()
    assert chart_div_id(TITLE) in page


def test_page_parses_with_div_and_tables(page: str) -> None:
    parser = _Collector()
    parser.feed(page)
    parser.close()
    ids = {attrs.get("id") for _, attrs in parser.tags}
    assert {chart_div_id(TITLE), "metrics", "monte-carlo"} <= ids
    assert [tag for tag, _ in parser.tags].count("table") == 2
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")


def test_title_is_escaped_and_present(page: str) -> None:
    assert "<title>BTC trend &lt;1h&gt; &amp; friends</title>" in page
    assert "<h1>BTC trend &lt;1h&gt; &amp; friends</h1>" in page


def test_every_metric_is_shown_formatted(page: str) -> None:
    metrics = _metrics()
    for key, value in metrics.items():
        assert f"<td>{format_metric(key, value)}</td>" in page, key
    # spot checks of the formats: money, percent, UTC date
    assert "<td>10,550.00</td>" in page  # final equity
    assert "<td>5.50%</td>" in page  # total return 10,550 / 10,000 - 1
    assert "<td>2023-12-31 18:00 UTC</td>" in page  # start_ms


def test_monte_carlo_section(page: str) -> None:
    assert "Monte Carlo" in page
    assert "bootstrap, 50 runs, seed 0" in page
    assert "Monte Carlo" not in _page(monte_carlo=None)


def test_drawdown_pane_is_below_zero_and_x_is_utc(page: str) -> None:
    traces = {trace["name"]: trace for trace in _traces(page)}
    drawdown = traces["Drawdown"]
    assert drawdown["fill"] == "tozeroy"
    assert all(v <= 0 for v in drawdown["y"])
    # peak 10,250 -> 9,800: -4.39 %
    assert min(drawdown["y"]) == pytest.approx(-100 * 450 / 10_250, rel=1e-6)
    assert drawdown["x"][0] == "2023-12-31 18:00:00"
    assert drawdown["x"][-1] == "2024-01-01 01:00:00"
    assert traces["Equity"]["y"] == EQUITY
    assert traces["Entries"]["marker"]["symbol"] == ["triangle-up", "triangle-down"]
    assert traces["Exits"]["y"] == [9_800.0, 10_600.0]  # equity at the exit bars


def test_single_copy_of_plotly_js(page: str) -> None:
    assert page.count("plotly.js v") == 1
    assert "<script src=" not in page  # nothing loaded from the network
    assert 'src="http' not in page
    assert len(page) < 6_000_000


def test_no_trades_no_markers() -> None:
    page = _page(trades=None)
    names = [trace["name"] for trace in _traces(page)]
    assert names == ["Equity", "Drawdown"]


def test_trades_json_style_side() -> None:
    trades = [{"entry_ms": TIMES[1], "exit_ms": TIMES[2], "side": "short"},
              {"entry_ms": TIMES[3], "exit_ms": TIMES[4], "side": "long"}]
    traces = {trace["name"]: trace for trace in _traces(_page(trades=trades))}
    assert traces["Entries"]["marker"]["symbol"] == ["triangle-down", "triangle-up"]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="equal length"):
        equity_report_html(TIMES[:3], EQUITY, title="x", metrics={})
    with pytest.raises(ValueError, match=r"trades\[0\]"):
        _page(trades=[{"entry_ms": TIMES[0]}])


def test_format_metric() -> None:
    assert format_metric("profit_factor", None) == "n/a"
    assert format_metric("win_rate", 0.4) == "40.00%"
    assert format_metric("fees_paid", 1234.5) == "1,234.50"
    assert format_metric("bars", 31897) == "31,897"
    assert format_metric("sharpe", 1.23456) == "1.23"
    assert format_metric("end_ms", 1_704_063_600_000) == "2023-12-31 23:00 UTC"


def test_write_report_is_atomic_and_creates_dirs(tmp_path: Path, page: str) -> None:
    target = tmp_path / "runs" / "2024" / "report.html"
    assert write_report(target, page) == target
    assert target.read_text(encoding="utf-8") == page
    write_report(target, "<html></html>")  # replaces the old file
    assert target.read_text(encoding="utf-8") == "<html></html>"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]
