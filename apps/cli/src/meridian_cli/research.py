"""`meridian research`: the research loop on the shared library.

  meridian research sweep     a grid of hyperparameters (lists) over the symbols in one pass
  meridian research optimize  an Optuna walk-forward study (SQLite, resumable) of the trend rules
  meridian research funding-arb  funding-rate arbitrage walk-forward (meridian_cli.funding_arb)

Both use the vectorbt engine (`meridian_research`) on the shared data; a study's best trial goes
live with `meridian promote`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meridian_cli import funding_arb
from meridian_cli.scripts import REPO
from meridian_common.config import ConfigError


def _utc(value: str, flag: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag}: expected a UTC ISO date, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _days(value: int, flag: str) -> timedelta:
    if value < 1:
        raise ConfigError(f"{flag} must be >= 1 day, got {value}")
    return timedelta(days=value)


def _value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    raise ConfigError(f"--grid value {text!r} is not a number or true/false")


def parse_grid(items: list[str]) -> dict[str, Any]:
    """name=v1,v2,... pairs -> {name: [values]} (names checked by the factory)."""
    grid: dict[str, Any] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise ConfigError(f"--grid {item!r}: expected name=value[,value...]")
        parsed = [_value(v) for v in values.split(",")]
        grid[name.strip()] = parsed if len(parsed) > 1 else parsed[0]
    return grid


def _symbols(text: str | None) -> tuple[str, ...]:
    from meridian_research.data import DEFAULT_SYMBOLS

    names = tuple(s.strip().upper() for s in (text or "").split(",") if s.strip())
    return names or tuple(DEFAULT_SYMBOLS)


def cmd_sweep(ns: argparse.Namespace) -> int:
    from meridian_research.data import load_wide
    from meridian_research.grid import NAMES
    from meridian_research.portfolio import simulate
    from meridian_research.signals import TrendFactory

    grid = parse_grid(ns.grid or [])
    unknown = sorted(set(grid) - set(NAMES))
    if unknown:
        raise ConfigError(f"--grid: unknown hyperparameter(s) {', '.join(unknown)}; "
                          f"known: {', '.join(NAMES)}")
    wide = load_wide(_symbols(ns.symbols), start=ns.start, end=ns.end)
    started = time.perf_counter()
    signals = TrendFactory().run(wide, **grid)
    result = simulate(wide, signals, notional=None, fraction=ns.fraction,
                      leverage=ns.leverage, margin_mode=ns.margin_mode)
    seconds = time.perf_counter() - started
    combos = result.combos.sort_values("total_return", ascending=False)
    cells = int(sum(wide.present(s).sum() for s in wide.symbols)) * len(combos)
    print(f"{len(combos)} combination(s) x {len(wide.symbols)} symbol(s), "
          f"{len(signals.skipped)} refused; {seconds:.1f}s "
          f"({cells / seconds:,.0f} candles x combinations / s, numba compile included)")
    for params, reason in signals.skipped[:5]:
        print(f"  refused {params}: {reason}")
    shown = [c for c in ("total_return", "max_drawdown", "trades", "fees", "funding",
                         "liquidated") if c in combos.columns]
    print(combos[shown].head(ns.top).to_string())
    if ns.out:
        out = Path(ns.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        combos.to_csv(out)
        print(f"all combinations: {out}")
    return 0


def cmd_optimize(ns: argparse.Namespace) -> int:
    import optuna

    from meridian_research.data import load_wide
    from meridian_research.evaluator import TrendEvaluator
    from meridian_research.memory import MemoryGuard
    from meridian_research.study import StudyManager
    from meridian_research.walkforward import rolling_windows

    if ns.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {ns.trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line says it
    start, end = _utc(ns.start, "--from"), _utc(ns.end, "--to")
    windows = rolling_windows(start, end, train=_days(ns.train_days, "--train-days"),
                              test=_days(ns.test_days, "--test-days"))
    wide = load_wide(_symbols(ns.symbols), start=start, end=end)
    evaluator = TrendEvaluator(wide, fraction=ns.fraction, margin_mode=ns.margin_mode,
                               allow_short=not ns.long_only)
    storage = Path(ns.storage)
    storage.parent.mkdir(parents=True, exist_ok=True)
    manager = StudyManager(ns.study, storage, evaluator, windows, n_jobs=ns.jobs, seed=ns.seed,
                           memory=MemoryGuard(min_available_mb=ns.min_available_mb))
    print(f"study {ns.study} in {storage}: {len(windows)} walk-forward windows "
          f"({ns.train_days} d in-sample, {ns.test_days} d out-of-sample), "
          f"{', '.join(wide.symbols)}, {ns.trials} trial(s) on {ns.jobs} job(s)", file=sys.stderr)
    result = manager.optimize(ns.trials, timeout=ns.timeout,
                              progress=lambda p: print(p.line(), file=sys.stderr, flush=True))
    summary = result.summary.as_dict()
    print(f"\n{summary}")
    if result.stop_reason:
        print(f"stopped: {result.stop_reason}")
    best = manager.best()
    if best is None:
        print("no complete, never-liquidated trial yet")
        return 1
    print(f"best trial {best.number}: objective {best.value:.4f}; {best.params}")
    print(f"promote it: meridian promote --storage {storage} --study {ns.study}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("research", help="vectorbt sweeps and Optuna walk-forward studies")
    rsub = p.add_subparsers(dest="research_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--symbols", help="comma-separated (default: the four shared symbols)")
        q.add_argument("--fraction", type=float, default=0.1,
                       help="fraction of the capital per entry, times the leverage")
        q.add_argument("--margin-mode", choices=("isolated", "cross"), default="isolated")

    sweep = rsub.add_parser("sweep", help="a hyperparameter grid in one pass")
    common(sweep)
    sweep.add_argument("--from", dest="start", help="UTC ISO date (default: all data)")
    sweep.add_argument("--to", dest="end", help="UTC ISO date, exclusive")
    sweep.add_argument("--grid", action="append", metavar="NAME=V1,V2",
                       help="a hyperparameter and its values (repeat); e.g. "
                            "--grid rsi_window=14,21 --grid ema_slow=50,100,200")
    sweep.add_argument("--leverage", type=float, default=1.0)
    sweep.add_argument("--top", type=int, default=10, help="rows shown")
    sweep.add_argument("--out", help="CSV of every combination")
    sweep.set_defaults(func=cmd_sweep)

    opt = rsub.add_parser("optimize", help="Optuna walk-forward study of the trend rules")
    common(opt)
    opt.add_argument("--from", dest="start", default="2020-06-01")
    opt.add_argument("--to", dest="end", default="2024-01-01")
    opt.add_argument("--train-days", type=int, default=180)
    opt.add_argument("--test-days", type=int, default=90)
    opt.add_argument("--study", default="trend")
    opt.add_argument("--storage", default=str(REPO / ".local" / "studies" / "trend.db"))
    opt.add_argument("--trials", type=int, default=50)
    opt.add_argument("--jobs", type=int, default=1, help="parallel trials (threads)")
    opt.add_argument("--timeout", type=float, help="seconds")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--long-only", action="store_true", help="no short entries")
    opt.add_argument("--min-available-mb", type=int, default=512,
                     help="stop trials when less memory than this is available")
    opt.set_defaults(func=cmd_optimize)

    funding_arb.add_parser(rsub)
