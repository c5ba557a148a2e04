"""Parity: the vectorbt research engine and the replay backtest (the real services) take the same
trades for the primary strategy with the same parameters on the shared data.

Compared per trade, matched on (entry time, side): exit time, side, quantity and entry price
exactly. Exit prices of stops and targets differ by the rounding the signals service applies:
it prints them with the signal close's decimals (a close printed "2394.9" puts a target 3 %
away at 2323.1, the engine at 2323.053), so an exit price may differ by up to 5e-5 of the price
and the net PnL by that difference times the quantity (fees move with it). Every other
difference must have a known cause, listed here:
- `dropped reversal`: a stop closed the position on a candle whose close also reversed the rules
  (long -> short); the executor opens the new side at the next open, vectorbt drops a reversal
  signal on a candle where a stop filled (`Backtest.dropped_reversals` counts them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from meridian_cli import backtest
from meridian_cli.backtest_spec import make_spec
from meridian_research.data import load_wide
from meridian_research.portfolio import simulate
from meridian_research.signals import TrendFactory

pytestmark = pytest.mark.integration
PRICE_ROUNDING = 5e-5  # half a unit in the 5th significant digit: the close's decimals


@pytest.fixture
def database(pg_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERIDIAN_DATABASE_URL",
                       f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
    for name in ("MERIDIAN_TEST_KAFKA_BOOTSTRAP", "MERIDIAN_TEST_PG_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize(("symbol", "start", "end"), [
    ("BTCUSDT", "2021-01-01", "2021-07-01"),
    ("ETHUSDT", "2022-01-01", "2022-07-01"),
])
def test_vectorbt_and_replay_take_the_same_trades(tmp_path: Path, symbol: str, start: str,
                                                   end: str) -> None:
    config = tmp_path / "bt.toml"
    config.write_text("[signals]\nallow_short = true\n[risk]\norder_notional = 1000\n")
    spec = make_spec(symbol, start, end, str(config))
    _, paths = backtest.run(spec, kafka=False, pg_dir=tmp_path / "pg", reports=tmp_path,
                            mc_runs=10, mc_seed=0)
    replay = pd.DataFrame(json.loads(paths["trades.json"].read_text()))
    replay["entry_time"] = pd.to_datetime(replay["entry_ms"], unit="ms", utc=True)
    replay["exit_time"] = pd.to_datetime(replay["exit_ms"], unit="ms", utc=True)

    wide = load_wide((symbol,), start=start, end=end)
    result = simulate(wide, TrendFactory().run(wide, allow_short=True), notional=1000.0,
                      leverage=1.0, funding=False)
    engine = result.trades[result.trades["status"] == "closed"]

    both = replay.merge(engine, on=["entry_time", "side"], how="outer",
                        suffixes=("_replay", "_vbt"), indicator=True)
    matched = both[both["_merge"] == "both"]
    replay_only = both[both["_merge"] == "left_only"]
    vbt_only = both[both["_merge"] == "right_only"]
    listing = both[both["_merge"] != "both"][["entry_time", "side", "_merge"]].to_string()

    assert len(matched) > 50
    assert (matched["exit_time_replay"] == matched["exit_time_vbt"]).all()
    assert ((matched["quantity"] - matched["qty"]).abs() < 1e-12).all()
    assert (matched["entry_price_replay"] == matched["entry_price_vbt"]).all()
    exit_gap = (matched["exit_price_replay"] - matched["exit_price_vbt"]).abs()
    assert (exit_gap <= PRICE_ROUNDING * matched["exit_price_replay"]).all()
    pnl_gap = (matched["net_pnl"] - matched["pnl"]).abs()
    assert (pnl_gap <= matched["quantity"] * exit_gap * 1.01 + 1e-6).all()
    # every difference has its cause: reversals vectorbt dropped on a stop's candle
    assert vbt_only.empty, f"trades only vectorbt took:\n{listing}"
    assert len(replay_only) == result.dropped_reversals, f"unexplained:\n{listing}"
    assert result.unmatched_stops == 0
