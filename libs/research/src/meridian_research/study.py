"""Optuna study manager: walk-forward, out-of-sample objective, persistent and resumable.

It knows nothing about the simulation engine: an `Evaluator` suggests the parameters and
returns one `WindowResult` per window, so the vectorbt engine (or a tiny test evaluator) plugs
in without this module importing it.

Objective (maximised), over the OUT-OF-SAMPLE part of the windows walked so far, in order:
- R = compounded total return: prod(1 + r_k) - 1, r_k = the window's total return;
- D = max drawdown: the larger of the worst drawdown inside any window and the drawdown of
  the compounded equity sampled at the window boundaries (starting at 1.0). The second term
  catches a slow bleed over several losing windows that no single window shows; drawdowns
  whose peak and trough lie in different windows are only seen at the boundaries, so D is a
  lower bound of the drawdown of the full out-of-sample curve (the evaluator returns summaries,
  not curves). D is floored at `drawdown_floor` (default 1 %): a window without trades has no
  drawdown, and R / 0 would make "barely trade" the best strategy;
- F = leverage ** leverage_penalty (default exponent 1: F = the trial's leverage, 1..10);
- objective = R / (D * F) when R >= 0, and (R / D) * F when R < 0. R / D is close to invariant
  under leverage (both scale with it), so F is what makes leverage cost something; applying it
  the same way to a loss would move a losing score TOWARDS zero, i.e. reward leverage on
  losers. The sign-aware form keeps "more leverage is never better at equal R / D".
The same value, over the windows walked so far, is reported after each window
(`trial.report(value, step=window.index)`) so the pruner compares trials window by window.

Outcomes of a trial, recorded in its user attributes (`outcome` plus details, and `windows`:
the per-window results evaluated so far, each with its window index):
- complete: state COMPLETE, value = the objective over all windows;
- liquidated in any window: state PRUNED, `liquidated=True`, `liquidated_window`. Not FAIL:
  Optuna's TPE ignores failed trials, so it would keep sampling leverage that liquidates;
  pruned trials it ranks after every complete trial when it splits the history into good and
  bad (then by how many windows they survived), so the liquidating region is learnt as bad.
  Not COMPLETE with a penalty value: a sentinel value would pollute statistics and plots, and
  could become "best" when every trial liquidates. A PRUNED trial is never `best()`;
- pruned by the pruner: state PRUNED, `pruned_window`;
- memory pressure (MemoryGuard, checked before every window): state FAIL, `stop_reason` (the
  figure and the limit), `stopped_before_window`. FAIL because memory is a property of the
  machine, not of the parameters, so TPE must not learn from it. The study then stops
  cleanly: no new trial starts (the pressure would hit it too), running ones finish or meet
  the guard themselves, `optimize()` returns normally with the reason, and a later run
  resumes from the SQLite file;
- any other exception from the evaluator (or a space without a valid `leverage`): state FAIL,
  `error` = its repr, and it propagates out of `optimize()`. A bug in the engine must be
  seen, not averaged over hundreds of failed trials; the file keeps every finished trial.

Storage: one SQLite file in WAL mode (readers, e.g. a dashboard or a second process, do not
block the writer; `n_jobs` threads take turns to write), busy timeout 30 s, synchronous=NORMAL
(safe with WAL; a power cut may lose the last trials, never corrupts the file). The study is
opened with load_if_exists, so the same name and file resume; the windows and objective
settings are stored with the study and a resume with different ones is refused, because the
trial values would no longer be comparable.

Reproducibility: TPESampler(seed) gives the same trials for the same seed with n_jobs=1
(a resumed study is seeded from the seed and its trial count, see `resume_seed`).
With n_jobs > 1 the trial order depends on thread timing (Optuna also reseeds each thread), so
only n_jobs=1 is reproducible. TPE's constant liar (on by default) keeps parallel threads or
processes from sampling the same point. The evaluator is called from `n_jobs` threads at once
and must be thread-safe (read-only data).
"""

from __future__ import annotations

import functools
import itertools
import math
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
import sqlalchemy
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.pruners import BasePruner, MedianPruner
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState

from meridian_research.memory import MemoryGuard, MemoryPressure
from meridian_research.walkforward import Window

LEVERAGE = "leverage"
LEVERAGE_MIN, LEVERAGE_MAX = 1.0, 10.0
DEFAULT_DRAWDOWN_FLOOR = 0.01
SQLITE_TIMEOUT_S = 30
CONFIG_ATTR = "meridian_config"
OBJECTIVE_VERSION = 1  # bump when the objective's definition changes: old studies are refused


class SearchSpaceError(ValueError):
    """The evaluator's space breaks a rule of the manager (leverage must be searched in 1-10)."""


class StudyMismatch(ValueError):
    """An existing study was created with other windows or objective settings."""


@dataclass(frozen=True, slots=True)
class WindowResult:
    """The evaluator's summary of one out-of-sample window.

    total_return: final / initial equity - 1 of the window; max_drawdown: fraction below the
    running peak, in [0, 1] (as in meridian_common.performance); liquidated: a position hit its
    liquidation price in the window (its figures are then not used); trades: closed trades.
    """

    total_return: float
    max_drawdown: float
    liquidated: bool
    trades: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.total_return) and math.isfinite(self.max_drawdown)):
            raise ValueError(f"window result must be finite, got {self}")
        if not 0.0 <= self.max_drawdown <= 1.0:
            raise ValueError(f"max_drawdown must be in [0, 1], got {self.max_drawdown}")
        if self.total_return < -1.0 and not self.liquidated:
            raise ValueError(f"total_return {self.total_return} < -100 % without a liquidation")
        if self.trades < 0:
            raise ValueError(f"trades must be >= 0, got {self.trades}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowResult:
        return cls(float(data["total_return"]), float(data["max_drawdown"]),
                   bool(data["liquidated"]), int(data["trades"]))


class Evaluator(Protocol):
    """What the manager needs from a simulation engine."""

    def space(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest the parameters through `trial` (including `leverage` in [1, 10])."""
        ...

    def evaluate(self, params: Mapping[str, Any], window: Window) -> WindowResult:
        """Simulate `params` on the test part of `window` (the train part may be used to fit
        or warm up indicators; nothing after `window.test_end` may be read)."""
        ...


def oos_objective(results: Sequence[WindowResult], leverage: float, *,
                  leverage_penalty: float = 1.0,
                  drawdown_floor: float = DEFAULT_DRAWDOWN_FLOOR) -> float:
    """The study's objective over out-of-sample window results (see the module docstring)."""
    if not results:
        raise ValueError("the objective needs at least one window result")
    equity = peak = 1.0
    worst = 0.0
    for result in results:
        equity *= 1.0 + result.total_return
        peak = max(peak, equity)
        worst = max(worst, result.max_drawdown, 1.0 - equity / peak)
    ratio = (equity - 1.0) / max(worst, drawdown_floor)
    factor = leverage ** leverage_penalty
    return ratio / factor if ratio >= 0 else ratio * factor


def check_leverage(params: Mapping[str, Any],
                   distributions: Mapping[str, BaseDistribution]) -> float:
    """The trial's leverage; SearchSpaceError unless it is searched within [1, 10]."""
    if LEVERAGE not in params:
        raise SearchSpaceError(f"the evaluator's space must return {LEVERAGE!r} (searched in "
                               f"[1, 10]); it returned {sorted(params)}")
    distribution = distributions.get(LEVERAGE)
    if distribution is None:
        raise SearchSpaceError(f"{LEVERAGE!r} must be suggested through the trial "
                               "(trial.suggest_int/float) so that it is searched and stored")
    low, high = _bounds(distribution)
    if low < LEVERAGE_MIN or high > LEVERAGE_MAX:
        raise SearchSpaceError(f"{LEVERAGE!r} is searched over [{low:g}, {high:g}]; it must lie "
                               f"within [{LEVERAGE_MIN:g}, {LEVERAGE_MAX:g}]")
    value = params[LEVERAGE]
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            LEVERAGE_MIN <= value <= LEVERAGE_MAX):
        raise SearchSpaceError(f"{LEVERAGE!r} must be a number in [1, 10], got {value!r}")
    return float(value)


def _bounds(distribution: BaseDistribution) -> tuple[float, float]:
    if isinstance(distribution, FloatDistribution | IntDistribution):
        return float(distribution.low), float(distribution.high)
    if isinstance(distribution, CategoricalDistribution):
        choices = distribution.choices
        if all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
            return float(min(choices)), float(max(choices))  # type: ignore[type-var]
    raise SearchSpaceError(f"{LEVERAGE!r} must be numeric, got the distribution {distribution}")


def enable_wal(path: Path) -> None:
    """Put the SQLite file in WAL mode (persistent: it stays so for every later connection)."""
    with closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"SQLite kept journal_mode={mode} for {path}: WAL needs a local "
                           "filesystem (not NFS/SMB) and a writable directory")


def journal_mode(path: str | Path) -> str:
    """The journal mode of the SQLite file, read back (e.g. 'wal')."""
    with closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # a no-op when already WAL; re-asserts it
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def open_storage(path: str | Path) -> optuna.storages.RDBStorage:
    """Optuna storage on a SQLite file in WAL mode (created with its directory if needed)."""
    file = Path(path).resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    enable_wal(file)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{file}", engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    sqlalchemy.event.listen(storage.engine, "connect", _on_connect)
    storage.engine.dispose()  # connections opened while creating the tables lack the pragmas
    return storage


@dataclass(frozen=True, slots=True)
class BestTrial:
    number: int
    value: float
    params: dict[str, Any]
    windows: dict[int, WindowResult]  # window index -> its out-of-sample result


@dataclass(frozen=True, slots=True)
class StudySummary:
    """Trial counts by outcome (disjoint) and the best complete, non-liquidated trial."""

    name: str
    trials: int
    complete: int
    pruned: int  # by the pruner
    liquidated: int
    memory_stopped: int
    failed: int  # other failures
    running: int  # running now, or left RUNNING by a crashed process
    waiting: int  # enqueued, not started
    best_value: float | None
    best_trial: int | None
    best_params: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Progress:
    """Sent to the progress callback after every finished trial of a run."""

    trial_number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None
    reason: str | None  # why it was pruned or failed
    best_value: float | None  # best so far over the whole study
    best_trial: int | None
    finished: int  # trials finished in this run
    n_trials: int  # trials asked for in this run

    def line(self) -> str:
        """One line for a terminal."""
        value = "" if self.value is None else f" {self.value:.4g}"
        reason = f" ({self.reason})" if self.reason else ""
        best = "none" if self.best_value is None else f"{self.best_value:.4g} (#{self.best_trial})"
        return (f"[{self.finished}/{self.n_trials}] trial {self.trial_number} {self.state}"
                f"{value}{reason} | best {best}")


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class OptimizeResult:
    trials_run: int
    stop_reason: str | None  # set when the memory guard stopped the run
    summary: StudySummary


@dataclass
class _Run:
    """State of one `optimize()` call, shared by its worker threads under `lock`."""

    n_trials: int
    progress: ProgressCallback | None
    best_value: float | None
    best_trial: int | None
    finished: int = 0
    stop_reason: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class StudyManager:
    """A persistent walk-forward Optuna study over an Evaluator (see the module docstring)."""

    def __init__(self, name: str, storage_path: str | Path, evaluator: Evaluator,
                 windows: Sequence[Window], *, n_jobs: int = 1, seed: int = 0,
                 pruner: BasePruner | None = None, leverage_penalty: float = 1.0,
                 drawdown_floor: float = DEFAULT_DRAWDOWN_FLOOR,
                 memory: MemoryGuard | None = None) -> None:
        """`pruner` defaults to MedianPruner(n_startup_trials=5, n_warmup_steps=2): one or two
        months out of sample are too noisy to condemn a parameter set. `memory` defaults to
        MemoryGuard() (stop when less than 512 MB is available)."""
        if not name:
            raise ValueError("name must not be empty")
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
        if not (math.isfinite(leverage_penalty) and leverage_penalty >= 0):
            raise ValueError(f"leverage_penalty must be a finite number >= 0, got "
                             f"{leverage_penalty}")
        if not 0 < drawdown_floor <= 1:
            raise ValueError(f"drawdown_floor must be in (0, 1], got {drawdown_floor}")
        self.name = name
        self.storage_path = Path(storage_path)
        self.n_jobs = n_jobs
        self.leverage_penalty = leverage_penalty
        self.drawdown_floor = drawdown_floor
        self._evaluator = evaluator
        self._windows = _checked_windows(windows)
        self._memory = memory if memory is not None else MemoryGuard()
        self.storage = open_storage(self.storage_path)
        self.study = optuna.create_study(
            study_name=name, storage=self.storage,
            pruner=pruner or MedianPruner(n_startup_trials=5, n_warmup_steps=2),
            direction="maximize", load_if_exists=True)
        self._check_or_store_config()
        self.study.sampler = TPESampler(seed=resume_seed(seed, len(self.study.trials)))

    @property
    def windows(self) -> tuple[Window, ...]:
        return self._windows

    def optimize(self, n_trials: int, timeout: float | None = None,
                 progress: ProgressCallback | None = None) -> OptimizeResult:
        """Run up to `n_trials` more trials (or until `timeout` seconds, or a memory stop).

        `progress` is called after each trial, one call at a time (under a lock) but from the
        worker thread that ran the trial.
        """
        if n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {n_trials}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
        best = self.best()
        run = _Run(n_trials, progress, best.value if best else None, best.number if best else None)
        self.study.optimize(self._objective, n_trials=n_trials, timeout=timeout,
                            n_jobs=self.n_jobs, catch=(MemoryPressure,),
                            callbacks=[functools.partial(_after_trial, run)])
        return OptimizeResult(run.finished, run.stop_reason, self.summary())

    def enqueue(self, params: Mapping[str, Any]) -> None:
        """Evaluate these parameters next (e.g. the configuration trading live as a baseline)."""
        self.study.enqueue_trial(dict(params), skip_if_exists=True)

    def best(self) -> BestTrial | None:
        """The best COMPLETE, non-liquidated trial (ties: the earliest), None if there is none."""
        trials = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if not t.user_attrs.get("liquidated", False)
                  and t.value is not None and math.isfinite(t.value)]
        if not trials:
            return None
        top = max(trials, key=lambda t: (t.value, -t.number))
        return BestTrial(top.number, float(top.value), dict(top.params), window_results(top))

    def summary(self) -> StudySummary:
        counts = dict.fromkeys(("complete", "pruned", "liquidated", "memory_stopped", "failed",
                                "running", "waiting"), 0)
        trials = self.study.get_trials(deepcopy=False)
        for trial in trials:
            counts[_category(trial)] += 1
        best = self.best()
        return StudySummary(
            name=self.name, trials=len(trials), **counts,
            best_value=best.value if best else None, best_trial=best.number if best else None,
            best_params=best.params if best else None)

    def _objective(self, trial: optuna.Trial) -> float:
        evaluated: list[tuple[int, WindowResult]] = []
        attrs: dict[str, Any] = {"outcome": "error", "liquidated": False}
        try:
            params = self._evaluator.space(trial)
            leverage = check_leverage(params, trial.distributions)
            value = self._walk(trial, params, leverage, evaluated, attrs)
            attrs["outcome"] = "complete"
            return value
        except (optuna.TrialPruned, MemoryPressure):
            raise
        except Exception as exc:  # kept with the trial for a post-mortem from the file
            attrs["error"] = repr(exc)[:500]
            raise
        finally:
            attrs["windows"] = [{"index": i, **r.to_dict()} for i, r in evaluated]
            for key, item in attrs.items():
                trial.set_user_attr(key, item)

    def _walk(self, trial: optuna.Trial, params: Mapping[str, Any], leverage: float,
              evaluated: list[tuple[int, WindowResult]], attrs: dict[str, Any]) -> float:
        """Evaluate the windows in order, reporting the running objective; fills `evaluated`
        and `attrs` as it goes so that a stopped trial keeps what it learnt."""
        value = math.nan
        for window in self._windows:
            try:
                self._memory.check()
            except MemoryPressure as exc:
                attrs.update(outcome="memory", stop_reason=str(exc), memory_figure=exc.figure,
                             stopped_before_window=window.index)
                raise
            result = self._evaluator.evaluate(params, window)
            if not isinstance(result, WindowResult):
                raise TypeError(f"evaluate() must return a WindowResult, got {type(result)}")
            evaluated.append((window.index, result))
            if result.liquidated:
                attrs.update(outcome="liquidated", liquidated=True,
                             liquidated_window=window.index)
                raise optuna.TrialPruned(f"liquidated in window {window.index} "
                                         f"at leverage {leverage:g}")
            value = oos_objective([r for _, r in evaluated], leverage,
                                  leverage_penalty=self.leverage_penalty,
                                  drawdown_floor=self.drawdown_floor)
            trial.report(value, step=window.index)
            if trial.should_prune():
                attrs.update(outcome="pruned", pruned_window=window.index)
                raise optuna.TrialPruned(f"pruned after window {window.index}: "
                                         f"objective {value:.4g}")
        return value

    def _config(self) -> dict[str, Any]:
        return {"objective_version": OBJECTIVE_VERSION,
                "leverage_penalty": self.leverage_penalty,
                "drawdown_floor": self.drawdown_floor,
                "windows": [w.to_dict() for w in self._windows]}

    def _check_or_store_config(self) -> None:
        """Store the settings with a new study; refuse to resume one made with others."""
        if self.study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise StudyMismatch(f"study {self.name!r} in {self.storage_path} is not maximised")
        config = self._config()
        stored = self.study.user_attrs.get(CONFIG_ATTR)
        if stored is None:
            self.study.set_user_attr(CONFIG_ATTR, config)
            return
        differ = sorted(k for k in config.keys() | stored.keys() if config.get(k) != stored.get(k))
        if differ:
            raise StudyMismatch(
                f"study {self.name!r} in {self.storage_path} was created with different "
                f"{', '.join(differ)}; its trial values are not comparable with these settings: "
                "use a new study name (or file)")


def resume_seed(seed: int, existing_trials: int) -> int:
    """The sampler's seed: `seed` for a new study; for a resumed one a seed derived from
    (seed, number of trials already stored). Re-using `seed` on resume would replay the same
    random start-up draws, i.e. re-run trials the file already holds; the derived seed is still
    deterministic, so the same file continued with the same seed gives the same trials."""
    if existing_trials == 0:
        return seed
    return int(np.random.SeedSequence([seed, existing_trials]).generate_state(1)[0])


def window_results(trial: FrozenTrial) -> dict[int, WindowResult]:
    """Per-window results stored with a trial (window index -> result)."""
    return {int(d["index"]): WindowResult.from_dict(d) for d in trial.user_attrs.get("windows", [])}


def _checked_windows(windows: Sequence[Window]) -> tuple[Window, ...]:
    """Windows in walking order: indices are the pruner's steps and must increase, and test
    parts must not overlap because their returns are compounded."""
    checked = tuple(windows)
    if not checked:
        raise ValueError("windows must not be empty")
    for prev, cur in itertools.pairwise(checked):
        if cur.index <= prev.index:
            raise ValueError(f"window indices must increase: {prev.index} then {cur.index}")
        if cur.test_start < prev.test_end:
            raise ValueError(f"test parts of windows {prev.index} and {cur.index} overlap")
    return checked


def _category(trial: FrozenTrial) -> str:
    state, outcome = trial.state, trial.user_attrs.get("outcome")
    if state == TrialState.COMPLETE:
        return "complete"
    if state == TrialState.PRUNED:
        return "liquidated" if trial.user_attrs.get("liquidated", False) else "pruned"
    if state == TrialState.FAIL:
        return "memory_stopped" if outcome == "memory" else "failed"
    return "running" if state == TrialState.RUNNING else "waiting"


def _reason(trial: FrozenTrial) -> str | None:
    attrs = trial.user_attrs
    outcome = attrs.get("outcome")
    if outcome == "liquidated":
        return f"liquidated in window {attrs.get('liquidated_window')}"
    if outcome == "pruned":
        return f"pruned after window {attrs.get('pruned_window')}"
    if outcome == "memory":
        return str(attrs.get("stop_reason"))
    return None if trial.state == TrialState.COMPLETE else outcome


def _after_trial(run: _Run, study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback: track the best, stop on memory pressure, report progress."""
    with run.lock:
        run.finished += 1
        value = trial.value if trial.state == TrialState.COMPLETE else None
        if (value is not None and not trial.user_attrs.get("liquidated", False)
                and (run.best_value is None or value > run.best_value)):
            run.best_value, run.best_trial = value, trial.number
        if trial.user_attrs.get("outcome") == "memory":
            run.stop_reason = run.stop_reason or str(trial.user_attrs.get("stop_reason"))
            study.stop()
        if run.progress is not None:
            run.progress(Progress(trial.number, trial.state.name, value, _reason(trial),
                                  run.best_value, run.best_trial, run.finished, run.n_trials))
