"""One self-contained HTML page per backtest: equity and drawdown chart, metrics, Monte Carlo.

Why it is built this way:
- plotly.js is embedded inline (one copy, ~4.8 MB) so the page opens offline and keeps working
  after the CDN or the Python package moves on;
- the page is byte-identical for identical inputs, so reports can be diffed, cached and
  checked into experiment stores: plotly's random div id is replaced by one derived from the
  title, nothing reads the clock, and numbers are rounded to 8 significant digits in the
  chart (more than a screen can show, fewer bytes than repr);
- times are shown in UTC, as the candles are stamped (strings "YYYY-MM-DD HH:MM:SS", since
  plotly.js ignores time zones and would otherwise render in the viewer's local time);
- metric values are formatted by key (the names of `BacktestMetrics.to_json()`): fractions as
  %, money with 2 decimals, bar times as UTC dates; unknown keys still show up, with a
  generic format, so a new metric is never silently dropped.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from numpy.typing import ArrayLike, NDArray
from plotly.subplots import make_subplots

from meridian_common.performance import drawdown_series

FRACTION_KEYS = frozenset({"total_return", "cagr", "max_drawdown", "win_rate", "exposure",
                           "probability_of_loss"})
MONEY_KEYS = frozenset({"initial_capital", "final_equity", "expectancy", "fees_paid",
                        "funding_paid"})
TIME_KEYS = frozenset({"start_ms", "end_ms"})
LABELS: dict[str, str] = {
    "initial_capital": "Initial capital",
    "final_equity": "Final equity",
    "total_return": "Total return",
    "cagr": "CAGR",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "calmar": "Calmar",
    "max_drawdown": "Max drawdown",
    "max_drawdown_duration_bars": "Longest drawdown (bars)",
    "max_drawdown_duration_days": "Longest drawdown (days)",
    "profit_factor": "Profit factor",
    "win_rate": "Win rate",
    "expectancy": "Expectancy per trade",
    "expectancy_r": "Expectancy (R = mean loss)",
    "sqn": "SQN",
    "exposure": "Exposure",
    "trades": "Trades",
    "fees_paid": "Fees paid",
    "funding_paid": "Funding paid",
    "bars": "Bars",
    "start_ms": "Start (UTC)",
    "end_ms": "End (UTC)",
}
CHART_HEIGHT_PX = 640
SIGNIFICANT_DIGITS = 8
PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2933; }
h1 { font-size: 1.4rem; margin: 0 0 1rem 0; }
.tables { display: flex; flex-wrap: wrap; gap: 2rem; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.9rem; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.4rem; }
th, td { padding: 0.2rem 0.8rem; border-bottom: 1px solid #e4e7eb; }
th { text-align: left; font-weight: 500; }
td { text-align: right; font-variant-numeric: tabular-nums; }
p.note { font-size: 0.8rem; color: #616e7c; max-width: 40rem; }
"""


# ---------------------------------------------------------------------------------------------
# Value formatting


def utc_text(ms: int, *, seconds: bool = True) -> str:
    moment = datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def format_metric(key: str, value: object) -> str:
    """Display text for one metric; None means undefined (e.g. profit factor without losses)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if key in TIME_KEYS:
        return f"{utc_text(int(value), seconds=False)} UTC"  # type: ignore[call-overload]
    if key in FRACTION_KEYS:
        return f"{float(value):,.2%}"  # type: ignore[arg-type]
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if key == "max_drawdown_duration_days":
        return f"{float(value):,.1f}"  # type: ignore[arg-type]
    return f"{float(value):,.2f}"  # type: ignore[arg-type]


def metric_label(key: str) -> str:
    return LABELS.get(key, key.replace("_", " ").capitalize())


# ---------------------------------------------------------------------------------------------
# Figure


def _rounded(values: NDArray[np.float64]) -> list[float]:
    return [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in values]


def _utc_axis(times: NDArray[np.int64]) -> list[str]:
    stamps = np.datetime_as_string(times.astype("datetime64[ms]"), unit="s")
    return [str(s).replace("T", " ") for s in stamps]


def _curve(times_ms: ArrayLike, equity: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    times = np.asarray(times_ms, dtype=np.int64)
    values = np.asarray(equity, dtype=np.float64)
    if times.ndim != 1 or values.ndim != 1 or len(times) != len(values):
        raise ValueError(f"times_ms and equity must be 1-D of equal length, got "
                         f"{times.shape} and {values.shape}")
    if len(values) == 0:
        raise ValueError("equity must have at least one bar")
    if not np.all(np.isfinite(values)):
        raise ValueError("equity must contain only finite numbers")
    return times, values


def _side(trade: Mapping[str, Any]) -> str:
    """Accepts TradeRecord-style `direction` (+1/-1) or trades.json-style `side`."""
    if "direction" in trade:
        return "long" if int(trade["direction"]) >= 0 else "short"
    return "short" if str(trade.get("side", "long")).lower() == "short" else "long"


def _trade_markers(
    times: NDArray[np.int64], values: NDArray[np.float64], trades: Sequence[Mapping[str, Any]]
) -> list[go.Scatter]:
    """Entry/exit points drawn on the equity line at the bar at or before each time."""
    entries: dict[str, list[Any]] = {"x": [], "y": [], "text": [], "symbol": []}
    exits: dict[str, list[Any]] = {"x": [], "y": [], "text": []}
    for i, trade in enumerate(trades):
        if "entry_ms" not in trade or "exit_ms" not in trade:
            raise ValueError(f"trades[{i}] needs entry_ms and exit_ms")
        side = _side(trade)
        label = f"{trade.get('symbol', '')} {side}".strip()
        pnl = trade.get("net_pnl")
        for point, key in ((entries, "entry_ms"), (exits, "exit_ms")):
            bar = max(int(np.searchsorted(times, int(trade[key]), side="right")) - 1, 0)
            point["x"].append(utc_text(int(trade[key])))
            point["y"].append(_rounded(values[bar : bar + 1])[0])
        entries["text"].append(f"{label} entry")
        entries["symbol"].append("triangle-up" if side == "long" else "triangle-down")
        exits["text"].append(f"{label} exit" + ("" if pnl is None else f", net {pnl:,.2f}"))
    return [
        go.Scatter(x=entries["x"], y=entries["y"], text=entries["text"], name="Entries",
                   mode="markers", hoverinfo="text+x",
                   marker={"symbol": entries["symbol"], "size": 9, "color": "#2f9e44"}),
        go.Scatter(x=exits["x"], y=exits["y"], text=exits["text"], name="Exits",
                   mode="markers", hoverinfo="text+x",
                   marker={"symbol": "x", "size": 8, "color": "#c92a2a"}),
    ]


def equity_figure(
    times_ms: ArrayLike, equity: ArrayLike, trades: Sequence[Mapping[str, Any]] | None = None
) -> go.Figure:
    """Equity on top, drawdown in % below (<= 0, filled), one shared UTC time axis."""
    times, values = _curve(times_ms, equity)
    x = _utc_axis(times)
    drawdown_pct = _rounded(-100.0 * drawdown_series(values)) or [0.0]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                           row_heights=[0.7, 0.3])
    figure.add_trace(go.Scatter(x=x, y=_rounded(values), name="Equity", mode="lines",
                                line={"color": "#1c7ed6", "width": 1.5}), row=1, col=1)
    if trades:
        for marker_trace in _trade_markers(times, values, trades):
            figure.add_trace(marker_trace, row=1, col=1)
    figure.add_trace(go.Scatter(x=x, y=drawdown_pct, name="Drawdown", mode="lines",
                                fill="tozeroy", line={"color": "#e03131", "width": 1}),
                     row=2, col=1)
    figure.update_layout(template="plotly_white", height=CHART_HEIGHT_PX,
                         hovermode="x unified", margin={"l": 60, "r": 20, "t": 30, "b": 40},
                         legend={"orientation": "h", "y": 1.04, "x": 0})
    figure.update_yaxes(title_text="equity", row=1, col=1)
    figure.update_yaxes(title_text="drawdown", ticksuffix="%", row=2, col=1)
    figure.update_xaxes(title_text="time (UTC)", row=2, col=1)
    return figure


def chart_div_id(title: str) -> str:
    """Stable id instead of plotly's uuid4, so equal inputs give equal bytes."""
    return "equity-" + hashlib.sha256(title.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Tables and page


def metrics_table(metrics: Mapping[str, object]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(metric_label(key))}</th>'
        f"<td>{escape(format_metric(key, value))}</td></tr>"
        for key, value in metrics.items()
    )
    return f'<table class="metrics" id="metrics"><caption>Metrics</caption>{rows}</table>'


def _percent(value: object) -> str:
    return format_metric("total_return", value)


def monte_carlo_table(result: Mapping[str, Any]) -> str:
    """Quantiles as columns; the note says which method, because shuffle fixes the return."""
    labels = list(result.get("final_return", {}))
    head = "".join(f'<th scope="col">{escape(str(label))}</th>' for label in labels)
    body = ""
    for key, name in (("final_return", "Final return"), ("max_drawdown", "Max drawdown")):
        cells = "".join(f"<td>{escape(_percent(result[key].get(label)))}</td>"
                        for label in labels)
        body += f'<tr><th scope="row">{name}</th>{cells}</tr>'
    note = (f"{escape(str(result.get('method', 'n/a')))}, "
            f"{escape(format_metric('runs', result.get('runs')))} runs, "
            f"seed {escape(str(result.get('seed', 'n/a')))}; probability of loss "
            f"{escape(_percent(result.get('probability_of_loss')))}")
    return (f'<div><table class="monte-carlo" id="monte-carlo"><caption>Monte Carlo'
            f"</caption><tr><th></th>{head}</tr>{body}</table>"
            f'<p class="note">{note}</p></div>')


def equity_report_html(
    times_ms: ArrayLike,
    equity: ArrayLike,
    *,
    title: str,
    metrics: Mapping[str, object],
    monte_carlo: Mapping[str, Any] | None = None,
    trades: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Complete HTML page; `metrics`/`monte_carlo` are the `to_json()` dicts of
    meridian_common.performance, `trades` dicts need entry_ms and exit_ms (direction +1/-1 or
    side "long"/"short", symbol and net_pnl are shown when present)."""
    figure = equity_figure(times_ms, equity, trades)
    chart = pio.to_html(figure, include_plotlyjs=True, full_html=False,
                        div_id=chart_div_id(title), config={"displaylogo": False})
    tables = metrics_table(metrics) + ("" if monte_carlo is None
                                       else monte_carlo_table(monte_carlo))
    safe_title = escape(title)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{safe_title}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{safe_title}</h1>\n<div class=\"chart\">{chart}</div>\n"
        f"<section class=\"tables\">{tables}</section>\n</body>\n</html>\n"
    )


def write_report(path: str | os.PathLike[str], html: str) -> Path:
    """Write via a temp file and rename, so a reader never sees half a report."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(html)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(0o644)  # mkstemp creates 0600; a report is meant to be shared
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
