"""StudyManager on real optuna, a real SQLite file and a small real evaluator on BTCUSDT 1h.

The evaluator below is deliberately tiny and self-contained (the vectorbt engine is built
elsewhere): it holds a position in the chosen direction while the close is on that side of its
EMA, with leverage and an isolated-margin liquidation check on the bar's adverse extreme.
On 2021-2022 prices this is enough to liquidate leverage 10, to make shorts clearly bad in the
first (bull) windows, and to give TPE a real landscape to search.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.pruners import MedianPruner, NopPruner
from optuna.trial import TrialState

from meridian_common.marketdata.csvfiles import CsvCandleSource, default_data_dir
from meridian_research.memory import MemoryGuard, MemoryReading
from meridian_research.study import (
    Evaluator,
    Progress,
    SearchSpaceError,
    StudyManager,
    StudyMismatch,
    WindowResult,
    check_leverage,
    journal_mode,
    oos_objective,
    window_results,
)
from meridian_research.walkforward import Window, rolling_windows

MMR = 0.005  # maintenance margin rate (Binance/Bybit BTC first tier)
FEE = 0.0005  # taker fee per side, fraction of notional
UTC_2021 = pd.Timestamp("2021-01-01", tz="UTC")
WINDOWS = rolling_windows(UTC_2021, pd.Timestamp("2022-07-01", tz="UTC"),
                          train=pd.Timedelta(days=30), test=pd.Timedelta(days=90))
NO_MEMORY_LIMIT = MemoryGuard(max_rss_mb=None, min_available_mb=None)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Candles:
    ts: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray


@pytest.fixture(scope="module")
def candles() -> Candles:
    frame = pd.read_csv(CsvCandleSource(default_data_dir(), "BTCUSDT", "1h").path)
    return Candles(frame["timestamp"].to_numpy(np.int64), frame["high"].to_numpy(float),
                   frame["low"].to_numpy(float), frame["close"].to_numpy(float))


class EmaTrend:
    """Long (or short) while close is above (below) EMA(span), else flat.

    One fixed-quantity trade per run of the signal, entered and left at the close; equity in a
    trade = E_entry * (1 + L * s * (price / entry - 1)) with s = +1 long / -1 short. Liquidated
    when the bar's low (long) reaches entry * (1 - 1/L + mmr) or its high (short) reaches
    entry * (1 + 1/L - mmr). The EMA is warmed up on the window's train part.
    """

    def __init__(self, candles: Candles, sides: tuple[str, ...] = ("long", "short"),
                 max_leverage: int = 10) -> None:
        self.candles = candles
        self.sides = sides
        self.max_leverage = max_leverage
        self.threads: set[int] = set()

    def space(self, trial: optuna.Trial) -> dict[str, Any]:
        return {"leverage": trial.suggest_int("leverage", 1, self.max_leverage),
                "span": trial.suggest_int("span", 12, 240),
                "side": trial.suggest_categorical("side", list(self.sides))}

    def evaluate(self, params: Mapping[str, Any], window: Window) -> WindowResult:
        self.threads.add(threading.get_ident())
        c = self.candles
        lo, a, b = np.searchsorted(c.ts, [window.train_start, window.test_start,
                                          window.test_end])
        ema = pd.Series(c.close[lo:b]).ewm(span=int(params["span"]), adjust=False).mean()
        side = 1 if params["side"] == "long" else -1
        want = (side * (c.close[a:b] - ema.to_numpy()[a - lo:]) > 0).tolist()
        return _simulate(float(params["leverage"]), side, want, c.high[a:b].tolist(),
                         c.low[a:b].tolist(), c.close[a:b].tolist())


def _simulate(lev: float, side: int, want: list[bool], high: list[float], low: list[float],
              close: list[float]) -> WindowResult:
    equity = peak = 1.0
    mdd, trades, in_trade = 0.0, 0, False
    entry = e0 = liq = 0.0
    last = len(close) - 1
    for i, price in enumerate(close):
        if in_trade:
            adverse = low[i] if side > 0 else high[i]
            if side * (adverse - liq) <= 0:
                equity = e0 * (1 + lev * side * (liq / entry - 1))
                return WindowResult(equity - 1, max(mdd, 1 - equity / peak), True, trades + 1)
            mdd = max(mdd, 1 - e0 * (1 + lev * side * (adverse / entry - 1)) / peak)
            equity = e0 * (1 + lev * side * (price / entry - 1))
            peak = max(peak, equity)
        if in_trade and (not want[i] or i == last):
            equity -= FEE * lev * e0 * price / entry
            in_trade, trades = False, trades + 1
        elif not in_trade and want[i] and i < last:
            entry, e0 = price, equity * (1 - FEE * lev)
            equity, liq, in_trade = e0, entry * (1 - side / lev + side * MMR), True
        mdd = max(mdd, 1 - equity / peak)
    return WindowResult(equity - 1, min(1.0, mdd), False, trades)


def manager(path: Path, evaluator: Evaluator, **kwargs: Any) -> StudyManager:
    kwargs.setdefault("memory", NO_MEMORY_LIMIT)
    return StudyManager("ema", path, evaluator, WINDOWS, **kwargs)


# --- objective -----------------------------------------------------------------------------


def r(total: float, dd: float, trades: int = 3) -> WindowResult:
    return WindowResult(total, dd, False, trades)


def test_objective_is_return_over_drawdown_times_leverage() -> None:
    assert oos_objective([r(0.2, 0.1)], 2) == pytest.approx(1.0)
    # compounded: 1.1 * 1.1 - 1 = 0.21 over the worst window drawdown 0.05
    assert oos_objective([r(0.1, 0.05), r(0.1, 0.03)], 1) == pytest.approx(0.21 / 0.05)
    assert oos_objective([r(0.2, 0.1)], 4, leverage_penalty=0.5) == pytest.approx(1.0)
    assert oos_objective([r(0.2, 0.1)], 4, leverage_penalty=0.0) == pytest.approx(2.0)


def test_objective_sees_a_slow_bleed_across_windows() -> None:
    # each window only 10 % down, the compounded curve 27.1 % down
    results = [r(-0.1, 0.1)] * 3
    assert oos_objective(results, 1) == pytest.approx(-0.271 / 0.271)


def test_objective_floors_the_drawdown() -> None:
    assert oos_objective([r(0.005, 0.0, trades=0)], 1) == pytest.approx(0.5)  # 0.005 / 0.01
    assert oos_objective([r(0.0, 0.0, trades=0)], 1) == 0.0
    assert oos_objective([r(0.005, 0.0)], 1, drawdown_floor=0.05) == pytest.approx(0.1)


def test_more_leverage_is_never_better_at_equal_return_over_drawdown() -> None:
    for results in ([r(0.3, 0.2)], [r(-0.3, 0.4)]):
        values = [oos_objective(results, lev) for lev in range(1, 11)]
        assert values == sorted(values, reverse=True)
        assert len(set(values)) == 10


def test_window_result_rejects_impossible_figures() -> None:
    with pytest.raises(ValueError, match="max_drawdown"):
        WindowResult(0.1, 1.5, False, 1)
    with pytest.raises(ValueError, match="-100 %"):
        WindowResult(-1.2, 1.0, False, 1)
    with pytest.raises(ValueError, match="finite"):
        WindowResult(math.nan, 0.1, False, 1)
    with pytest.raises(ValueError, match="trades"):
        WindowResult(0.1, 0.1, False, -1)
    with pytest.raises(ValueError, match="at least one"):
        oos_objective([], 1)


# --- search space --------------------------------------------------------------------------


def _trial_with(space: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    study = optuna.create_study()
    trial = study.ask()
    params = space(trial)
    return params, trial.distributions


def test_leverage_must_be_searched_within_1_to_10() -> None:
    params, dists = _trial_with(lambda t: {"leverage": t.suggest_float("leverage", 1, 10)})
    assert 1 <= check_leverage(params, dists) <= 10
    params, dists = _trial_with(lambda t: {"leverage": t.suggest_categorical("leverage", [1, 5])})
    assert check_leverage(params, dists) in (1.0, 5.0)
    params, dists = _trial_with(lambda t: {"span": t.suggest_int("span", 1, 5)})
    with pytest.raises(SearchSpaceError, match="must return 'leverage'"):
        check_leverage(params, dists)
    params, dists = _trial_with(lambda t: {"leverage": t.suggest_int("leverage", 1, 20)})
    with pytest.raises(SearchSpaceError, match=r"\[1, 20\]"):
        check_leverage(params, dists)
    params, dists = _trial_with(lambda t: {"leverage": 3})
    with pytest.raises(SearchSpaceError, match="suggested through the trial"):
        check_leverage(params, dists)
    params, dists = _trial_with(lambda t: {"leverage": t.suggest_categorical("leverage", ["x"])})
    with pytest.raises(SearchSpaceError, match="numeric"):
        check_leverage(params, dists)


def test_a_bad_space_stops_the_study_loudly(tmp_path: Path, candles: Candles) -> None:
    study = manager(tmp_path / "s.db", EmaTrend(candles, max_leverage=20))
    with pytest.raises(SearchSpaceError):
        study.optimize(3)
    (trial,) = study.study.trials
    assert trial.state == TrialState.FAIL
    assert "must lie within [1, 10]" in trial.user_attrs["error"]


class Broken(EmaTrend):
    def evaluate(self, params: Mapping[str, Any], window: Window) -> WindowResult:
        if window.index == 2:
            raise ZeroDivisionError("engine bug")
        return super().evaluate(params, window)


def test_an_evaluator_error_fails_the_trial_and_propagates(tmp_path: Path,
                                                           candles: Candles) -> None:
    study = manager(tmp_path / "broken.db", Broken(candles))
    with pytest.raises(ZeroDivisionError, match="engine bug"):
        study.optimize(3)
    (trial,) = study.study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"] == "ZeroDivisionError('engine bug')"
    assert sorted(window_results(trial)) == [0, 1]
    summary = study.summary()
    assert (summary.failed, summary.memory_stopped, summary.best_value) == (1, 0, None)


# --- storage -------------------------------------------------------------------------------


def test_storage_is_sqlite_in_wal_mode(tmp_path: Path, candles: Candles) -> None:
    path = tmp_path / "studies" / "wal.db"
    study = manager(path, EmaTrend(candles))
    study.optimize(2)
    assert journal_mode(path) == "wal"
    assert Path(f"{path}-wal").exists()  # the write-ahead log itself, while connections live
    with study.storage.engine.connect() as conn:  # optuna's own connections
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 2


def test_a_study_resumes_from_its_file(tmp_path: Path, candles: Candles) -> None:
    path = tmp_path / "resume.db"
    first = manager(path, EmaTrend(candles)).optimize(4)
    assert (first.trials_run, first.summary.trials) == (4, 4)
    again = manager(path, EmaTrend(candles))
    second = again.optimize(3)
    assert (second.trials_run, second.summary.trials) == (3, 7)
    trials = again.study.trials
    assert [t.number for t in trials] == list(range(7))
    # resumed with a derived seed: the random start-up draws are not replayed
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 7


def test_resuming_with_other_windows_or_settings_is_refused(tmp_path: Path,
                                                            candles: Candles) -> None:
    path = tmp_path / "mismatch.db"
    manager(path, EmaTrend(candles)).optimize(1)
    with pytest.raises(StudyMismatch, match="windows"):
        StudyManager("ema", path, EmaTrend(candles), WINDOWS[:-1], memory=NO_MEMORY_LIMIT)
    with pytest.raises(StudyMismatch, match="leverage_penalty"):
        manager(path, EmaTrend(candles), leverage_penalty=2.0)
    manager(path, EmaTrend(candles), seed=7)  # the seed and pruner do not change the values


# --- parallel trials -----------------------------------------------------------------------


def test_two_jobs_run_in_two_threads_and_store_every_trial(tmp_path: Path,
                                                           candles: Candles) -> None:
    evaluator = EmaTrend(candles)
    seen: list[Progress] = []
    study = manager(tmp_path / "jobs.db", evaluator, n_jobs=2)
    result = study.optimize(8, progress=seen.append)
    assert len(evaluator.threads) == 2
    summary = result.summary
    assert summary.trials == 8
    assert summary.running == summary.waiting == 0
    assert (summary.complete + summary.pruned + summary.liquidated) == 8
    assert sorted(p.trial_number for p in seen) == list(range(8))
    assert [p.finished for p in seen] == list(range(1, 9))


# --- liquidation, pruning, best ------------------------------------------------------------


def test_liquidated_trials_are_counted_and_never_best(tmp_path: Path, candles: Candles) -> None:
    study = manager(tmp_path / "liq.db", EmaTrend(candles, sides=("long",)),
                    pruner=NopPruner())
    for span in (12, 48):  # leverage 10 is liquidated in the May 2021 crash (window 1)
        study.enqueue({"leverage": 10, "span": span, "side": "long"})
    result = study.optimize(15)
    summary = result.summary
    assert summary.liquidated >= 2
    liquidated = [t for t in study.study.trials if t.user_attrs.get("liquidated")]
    assert len(liquidated) == summary.liquidated
    for trial in liquidated:
        assert trial.state == TrialState.PRUNED
        index = trial.user_attrs["liquidated_window"]
        assert window_results(trial)[index].liquidated  # the window it happened in
        assert max(window_results(trial)) == index  # and no window walked after it
    assert study.study.trials[0].user_attrs["liquidated_window"] == 1
    best = study.best()
    assert best is not None
    assert best.number not in {t.number for t in liquidated}
    assert not any(w.liquidated for w in best.windows.values())
    assert sorted(best.windows) == [w.index for w in WINDOWS]
    assert best.value == pytest.approx(oos_objective(list(best.windows.values()),
                                                     best.params["leverage"]))
    assert summary.best_trial == best.number
    assert best.value == max(t.value for t in study.study.trials if t.value is not None)


def test_when_every_trial_liquidates_there_is_no_best(tmp_path: Path, candles: Candles) -> None:
    study = manager(tmp_path / "all-liq.db", EmaTrend(candles, sides=("long",)))
    for span in (12, 48):
        study.enqueue({"leverage": 10, "span": span, "side": "long"})
    result = study.optimize(2)
    assert result.summary.liquidated == 2
    assert study.best() is None
    assert result.summary.best_value is None


def test_the_pruner_stops_a_clearly_bad_region_early(tmp_path: Path, candles: Candles) -> None:
    study = manager(tmp_path / "prune.db", EmaTrend(candles),
                    pruner=MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    for span in (24, 96, 240):  # long at 1x in the 2021 bull market: complete
        study.enqueue({"leverage": 1, "span": span, "side": "long"})
    for span in (12, 36, 240):  # short at 1x: loses 23-33 % in the first window
        study.enqueue({"leverage": 1, "span": span, "side": "short"})
    result = study.optimize(6)
    trials = study.study.trials
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE] * 3
    for trial in trials[3:]:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["outcome"] == "pruned"
        assert trial.user_attrs["pruned_window"] == 0
        assert not trial.user_attrs["liquidated"]
        assert len(trial.user_attrs["windows"]) == 1
    assert (result.summary.pruned, result.summary.liquidated) == (3, 0)


# --- memory --------------------------------------------------------------------------------


class Readings:
    """Fake memory readings: fine for the first `ok_calls` readings, over the limit after."""

    def __init__(self, ok_calls: int) -> None:
        self.ok_calls = ok_calls
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> MemoryReading:
        with self.lock:
            self.calls += 1
            over = self.calls > self.ok_calls
        return MemoryReading(rss_mb=3000.0 if over else 500.0, available_mb=8000.0)


def test_memory_pressure_stops_the_trial_and_the_study(tmp_path: Path, candles: Candles) -> None:
    guard = MemoryGuard(max_rss_mb=2000, reader=Readings(ok_calls=3))  # 3 windows, then over
    study = manager(tmp_path / "mem.db", EmaTrend(candles), memory=guard)
    seen: list[Progress] = []
    result = study.optimize(5, progress=seen.append)
    assert result.trials_run == 1  # the study stopped: no new trial started
    assert result.stop_reason == "process RSS 3,000 MB exceeds max_rss_mb 2,000 MB"
    (trial,) = study.study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["outcome"] == "memory"
    assert trial.user_attrs["stop_reason"] == result.stop_reason
    assert trial.user_attrs["memory_figure"] == "rss_mb"
    assert trial.user_attrs["stopped_before_window"] == 3
    assert sorted(window_results(trial)) == [0, 1, 2]  # the windows done before the stop
    assert (result.summary.memory_stopped, result.summary.failed) == (1, 0)
    assert seen[0].state == "FAIL"
    assert seen[0].reason == result.stop_reason


def test_memory_pressure_with_two_jobs_stops_cleanly(tmp_path: Path, candles: Candles) -> None:
    # 2 good readings shared by both threads: no trial can finish its 5 windows
    guard = MemoryGuard(max_rss_mb=2000, reader=Readings(ok_calls=2))
    study = manager(tmp_path / "mem2.db", EmaTrend(candles), memory=guard, n_jobs=2)
    result = study.optimize(10)
    assert result.stop_reason is not None
    summary = result.summary
    assert 1 <= summary.memory_stopped == summary.trials <= 2  # only the trials in flight
    assert summary.running == 0
    assert all(t.user_attrs["outcome"] == "memory" for t in study.study.trials)


# --- reproducibility -----------------------------------------------------------------------


def test_the_same_seed_gives_the_same_search_with_one_job(tmp_path: Path,
                                                          candles: Candles) -> None:
    runs = []
    for name in ("a.db", "b.db"):
        study = manager(tmp_path / name, EmaTrend(candles), seed=11)
        study.optimize(12)  # TPE starts after 10 random trials: 2 trials go through TPE
        best = study.best()
        assert best is not None
        runs.append((best.params, best.value, [t.params for t in study.study.trials]))
    assert runs[0] == runs[1]
    other = manager(tmp_path / "c.db", EmaTrend(candles), seed=12)
    other.optimize(12)
    assert [t.params for t in other.study.trials] != runs[0][2]


def test_progress_reports_the_best_so_far(tmp_path: Path, candles: Candles) -> None:
    seen: list[Progress] = []
    study = manager(tmp_path / "progress.db", EmaTrend(candles))
    study.optimize(8, progress=seen.append)
    bests = [p.best_value for p in seen if p.best_value is not None]
    assert bests == sorted(bests)
    best = study.best()
    assert best is not None
    assert (seen[-1].best_value, seen[-1].best_trial) == (best.value, best.number)
    assert seen[-1].line().startswith("[8/8] trial 7 ")
    # a second run starts from the stored best
    more: list[Progress] = []
    study.optimize(1, progress=more.append)
    assert more[0].best_value is not None
    assert more[0].best_value >= best.value


def test_arguments_are_checked(tmp_path: Path, candles: Candles) -> None:
    with pytest.raises(ValueError, match="n_jobs"):
        manager(tmp_path / "x.db", EmaTrend(candles), n_jobs=0)
    with pytest.raises(ValueError, match="leverage_penalty"):
        manager(tmp_path / "x.db", EmaTrend(candles), leverage_penalty=-1)
    with pytest.raises(ValueError, match="drawdown_floor"):
        manager(tmp_path / "x.db", EmaTrend(candles), drawdown_floor=0)
    with pytest.raises(ValueError, match="empty"):
        StudyManager("ema", tmp_path / "x.db", EmaTrend(candles), [])
    with pytest.raises(ValueError, match="increase"):
        StudyManager("ema", tmp_path / "x.db", EmaTrend(candles), [WINDOWS[1], WINDOWS[0]])
    overlapping = Window(1, WINDOWS[0].train_start + 1, WINDOWS[0].train_end + 1,
                         WINDOWS[0].test_start + 1, WINDOWS[0].test_end + 1)
    with pytest.raises(ValueError, match="overlap"):
        StudyManager("ema", tmp_path / "x.db", EmaTrend(candles), [WINDOWS[0], overlapping])
    study = manager(tmp_path / "x.db", EmaTrend(candles))
    with pytest.raises(ValueError, match="n_trials"):
        study.optimize(0)
    with pytest.raises(ValueError, match="timeout"):
        study.optimize(1, timeout=0)
