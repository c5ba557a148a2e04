"""Model card: what a reviewer needs before promoting a version, as JSON and as one HTML page.

The page is self-contained (inline CSS and SVG, no scripts, no external requests) so it can be
opened from an artefact store or attached to a review without a server, and every piece of
text is escaped because names, metrics keys and symbols come from configuration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from meridian_ml.registry import ModelManifest, to_jsonable

WIDTH, HEIGHT = 820, 320
LEFT, RIGHT, TOP, BOTTOM = 80, 20, 20, 50
MAX_POINTS = 2000  # per curve; more only bloats the page beyond the pixels available
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

_STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
          "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "th{background:#f3f3f3}td.k{text-align:left}svg{border:1px solid #ddd}"
          ".axis{stroke:#555}.lab{font-size:12px;fill:#333}")

Point = tuple[int, float]


def model_card(manifest: ModelManifest, folds: list[dict[str, Any]],
               curves: dict[str, list[tuple[int, float]]]) -> tuple[dict[str, Any], str]:
    """(card JSON, card HTML) for `manifest` with per-fold metrics and equity curves, each a
    list of (time ms, equity) points, e.g. {"primary": ..., "meta-filtered": ...}."""
    card = to_jsonable({
        "manifest": manifest.to_dict(),
        "folds": folds,
        "curves": {name: [[int(t), v] for t, v in points] for name, points in curves.items()},
    })
    title = f"Model card: {manifest.version}"
    html = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<h2>Equity curves</h2>",
        _svg(curves),
        "<h2>Walk-forward folds</h2>",
        _folds_table(folds),
        "<h2>Manifest</h2>",
        _manifest_table(manifest),
        "</body></html>",
    ])
    return card, html


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(to_jsonable(value), sort_keys=True)
    return str(value)


def _folds_table(folds: Sequence[Mapping[str, Any]]) -> str:
    if not folds:
        return "<p>No folds.</p>"
    keys: list[str] = []
    for fold in folds:
        keys.extend(k for k in fold if k not in keys)
    head = "".join(f"<th>{escape(str(k))}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_fmt(fold.get(k, '')))}</td>" for k in keys) + "</tr>"
        for fold in folds)
    return f'<table class="folds"><tr>{head}</tr>{body}</table>'


def _manifest_table(manifest: ModelManifest) -> str:
    rows = "".join(f'<tr><td class="k">{escape(k)}</td><td class="k">{escape(_fmt(v))}</td></tr>'
                   for k, v in manifest.to_dict().items())
    return f'<table class="manifest">{rows}</table>'


def _decimate(points: Sequence[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most ~`limit` points keeping each bucket's low and high, so drawdowns stay visible."""
    if len(points) <= limit:
        return list(points)
    size = -(-len(points) * 2 // limit)
    out: list[Point] = []
    for start in range(0, len(points), size):
        bucket = points[start:start + size]
        lo = min(range(len(bucket)), key=lambda i: bucket[i][1])
        hi = max(range(len(bucket)), key=lambda i: bucket[i][1])
        out.extend(bucket[i] for i in sorted({lo, hi}))
    return out


def _date(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _svg(curves: Mapping[str, Sequence[Point]]) -> str:
    """One polyline per curve on shared axes (time across, equity up), with a legend."""
    clean = {name: _decimate([(int(t), float(v)) for t, v in points if math.isfinite(v)])
             for name, points in curves.items()}
    every = [p for points in clean.values() for p in points]
    t0, t1 = (min(p[0] for p in every), max(p[0] for p in every)) if every else (0, 1)
    v0, v1 = (min(p[1] for p in every), max(p[1] for p in every)) if every else (0.0, 1.0)
    t1, v1 = (t1 if t1 > t0 else t0 + 1), (v1 if v1 > v0 else v0 + 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(p: Point) -> str:
        x = LEFT + (p[0] - t0) / (t1 - t0) * plot_w
        y = TOP + (1.0 - (p[1] - v0) / (v1 - v0)) * plot_h
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="equity curves">',
             f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" '
             f'y2="{TOP + plot_h}"/>',
             f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
             f'<text class="lab" x="{LEFT}" y="{HEIGHT - 28}">{escape(_date(t0))}</text>',
             f'<text class="lab" x="{LEFT + plot_w}" y="{HEIGHT - 28}" text-anchor="end">'
             f"{escape(_date(t1))}</text>",
             f'<text class="lab" x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" '
             'text-anchor="middle">time (UTC)</text>',
             f'<text class="lab" x="{LEFT - 6}" y="{TOP + 10}" text-anchor="end">{v1:.4g}</text>',
             f'<text class="lab" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">'
             f"{v0:.4g}</text>",
             f'<text class="lab" transform="translate(16,{TOP + plot_h / 2}) rotate(-90)" '
             'text-anchor="middle">equity</text>']
    for i, (name, points) in enumerate(clean.items()):
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" '
                     f'data-curve="{escape(name)}" points="{" ".join(map(xy, points))}">'
                     f"<title>{escape(name)}</title></polyline>")
        parts.append(f'<text class="lab" x="{LEFT + 10}" y="{TOP + 14 + 16 * i}" '
                     f'style="fill:{colour}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
