"""The PromQL the repository ships, as data: every dashboard panel query, every alert rule, and the
metric names docs/observability.md documents.

Shared by test_dashboards.py (static checks) and test_prometheus_real.py (each query against a
real Prometheus). No PromQL parser is available offline, so this is a small tokenizer that knows
just enough PromQL to find metric names and to split an alert expression at its top-level
comparisons and set operators: `a > 5 and b > 0` is the two series queries `a` and `b`, which
must return data for the alert to be able to fire at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "observability.md"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROMETHEUS = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
DATASOURCE_UID = "meridian-prometheus"

# Series Prometheus makes itself for every target, not exposed by any service.
BUILTIN_SERIES = frozenset({"up"})

_KEYWORDS = frozenset({
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile",
})
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.$:])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:])(?!\s*\()")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True, order=True)
class Query:
    """One expression and where it comes from (for failure messages)."""

    where: str
    expr: str


# -- documented names ---------------------------------------------------------------------------

def documented_metrics(text: str | None = None) -> set[str]:
    """Metric names in docs/observability.md: the first column of its tables, and the signals
    paragraph's back-quoted names; a histogram also stands for its _bucket/_sum/_count series."""
    text = DOC.read_text() if text is None else text
    names: dict[str, str] = {}
    for match in re.finditer(r"^\|\s*`(meridian_[a-z0-9_]+)`\s*\|\s*(\w+)", text, re.M):
        names[match.group(1)] = match.group(2)
    for match in re.finditer(r"`(meridian_[a-z0-9_]+)(?:\{[^}`]*\})?`(\s*\((\w+)\))?", text):
        names.setdefault(match.group(1), match.group(3) or "")
    out = set(names)
    for name, kind in names.items():
        if kind == "histogram":
            out.update(name + suffix for suffix in _HISTOGRAM_SUFFIXES)
    return out


# -- PromQL -------------------------------------------------------------------------------------

def _strip_literals(expr: str) -> str:
    """Drop string literals, label matchers and range/subquery brackets (never metric names)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)
    return re.sub(r"\[[^\[\]]*\]", " ", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords and label names excluded)."""
    bare = _CLAUSE.sub(" ", _strip_literals(expr))
    return {m for m in _IDENT.findall(bare) if m.lower() not in _KEYWORDS}


_COMPARISON = re.compile(r"==|!=|>=|<=|>|<")
_SET_OPERATOR = re.compile(r"(?<![\w])(and|or|unless)(?![\w])")
_MODIFIER = re.compile(r"^\s*(?:bool\b\s*)?(?:(?:on|ignoring|group_left|group_right)\s*"
                       r"\([^()]*\)\s*)*")


def _top_level_operators(expr: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each comparison or set operator outside parentheses, braces, brackets
    and strings."""
    depth, i, quote = 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            quote = "" if ch == quote and expr[i - 1] != "\\" else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            found = _COMPARISON.match(expr, i) or _SET_OPERATOR.match(expr, i)
            if found:
                yield found.start(), found.end()
                i = found.end()
                continue
        i += 1


def series_queries(expr: str) -> list[str]:
    """The operands of an alert expression's top-level comparisons and set operators that select
    series (thresholds such as `5000` dropped): what must return data for the rule to work."""
    parts, last = [], 0
    for start, end in _top_level_operators(expr):
        parts.append(expr[last:start])
        last = end
    parts.append(expr[last:])
    out = []
    for part in parts:
        part = _MODIFIER.sub("", part, count=1).strip()
        if part and metric_names(part):
            out.append(part)
    return out


def substitute(expr: str, rate_interval: str = "5m") -> str:
    """A dashboard expression as Prometheus can run it: Grafana's variables replaced (template
    variables by the match-everything regex their "All" value stands for)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}",
                                                                    rate_interval)
    return re.sub(r"\$\{?(service|symbol)\}?", ".+", expr)


# -- the files ----------------------------------------------------------------------------------

def dashboards() -> dict[Path, dict[str, Any]]:
    return {path: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[Query]:
    """Every panel target's expression and every variable's query (the series of a
    `label_values(series, label)`)."""
    out = []
    for path, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                out.append(Query(f"{path.name}: {panel['title']!r} {target['refId']}",
                                 target["expr"]))
        for var in board.get("templating", {}).get("list", []):
            query = var.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            inner = re.fullmatch(r"\s*label_values\((.+),\s*\w+\)\s*", text)
            if var.get("type") == "query" and inner:
                out.append(Query(f"{path.name}: variable {var['name']}", inner.group(1)))
    return out


def rule_files() -> list[Path]:
    """The rule files prometheus.yml loads (its rule_files globs, relative to it)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    out: list[Path] = []
    for pattern in config.get("rule_files") or []:
        out.extend(sorted(PROMETHEUS.glob(pattern)))
    return out


def rule_groups() -> dict[str, list[dict[str, Any]]]:
    """Rule group name -> its rules, over every loaded rule file."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            groups[group["name"]] = group["rules"]
    return groups


def rule_queries() -> list[Query]:
    """Each alert's series queries (comparisons removed)."""
    out = []
    for group, rules in rule_groups().items():
        for rule in rules:
            name = rule.get("alert") or rule.get("record")
            for part in series_queries(rule["expr"]):
                out.append(Query(f"rule {group}/{name}", " ".join(part.split())))
    return out
