"""Grid and DCA bots through the real services: `meridian backtest` with a bots file replays
BTCUSDT 1h from 2021-07-09 16:00 UTC through the bots host, the risk gate, the paper executor
and the ledger (in-process, and over Kafka for the grid), and the ledger's fills are the ones
checked by hand in libs/common/tests/test_grid_bot.py and test_dca_bot.py (candle rows quoted
there); with a tight position limit the gate refuses the orders that could take the position
over it, and no fill ever does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg

from meridian_cli import backtest
from meridian_cli.backtest_spec import BacktestSpec, make_spec

Db = Callable[[BacktestSpec], str]
H = 3_600_000
T0 = 1_625_846_400_000  # 2021-07-09 16:00 UTC
START, END = "2021-07-09T16:00:00", "2021-07-11T16:00:00"  # 48 candles
BUY, SELL = 1, 2
Q = Decimal("0.01")

GRID = """
[[bots]]
bot_id = "g1"
kind = "grid"
exchange = "binance"
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.00001"
min_notional = "5"
lower = "33000"
upper = "34200"
levels = 4
quantity = "0.01"
initial_buy = true
"""

DCA = """
[[bots]]
bot_id = "d1"
kind = "dca"
exchange = "binance"
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.00001"
base_quote = "1000"
safety_quote = "1000"
deviation = "0.005"
take_profit = "0.01"
max_safety_orders = 2
step_scale = "2"
volume_scale = "2"
max_cycles = 2
"""




def _spec(tmp: Path, bots: str, *, max_position: str = "5000") -> BacktestSpec:
    (tmp / "bots.toml").write_text(bots)
    (tmp / "bt.toml").write_text(f"""
[bots]
config = "bots.toml"
[risk]
signals = false
intents = true
require_stop_loss = false
min_order_notional = "5"
max_position_notional = "{max_position}"
[execution]
maker_fee = "0.0005"
taker_fee = "0.001"
slippage_bps = "0"
""")
    return make_spec("BTCUSDT", START, END, str(tmp / "bt.toml"))




def _fills(db: str) -> list[tuple[int, str, int, Decimal, Decimal,
                                                           Decimal]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "select (extract(epoch from ts) * 1000)::bigint, client_order_id, side, quantity, "
            "price, fee from fills order by ts, fill_id").fetchall()
    return [(int(t), c, s, Decimal(q).normalize(), Decimal(p).normalize(),
             Decimal(f).normalize()) for t, c, s, q, p, f in rows]


def _n(*values: str | int) -> tuple[Decimal, ...]:
    return tuple(Decimal(v).normalize() for v in values)


def test_grid_bot_fills_are_the_hand_checked_ones_in_process_and_over_kafka(
        backtest_db: Db, tmp_path: Path) -> None:
    spec = _spec(tmp_path, GRID)
    assert spec.strategy == "bots"
    reports = {}
    for name, kafka in (("embedded", False), ("kafka", True)):
        _report, paths = backtest.run(spec, kafka=kafka, pg_dir=tmp_path / "pg",
                                     reports=tmp_path / name, mc_runs=50, mc_seed=7)
        reports[name] = paths["report.json"].read_bytes(), paths["trades.json"].read_bytes()
        fills = _fills(backtest_db(spec))
        maker_33400, maker_33800 = "0.167", "0.169"
        assert fills == [
            (T0 + 1 * H, "g1-init-1", BUY, *_n(Q, "33527.24", "0.3352724")),
            (T0 + 2 * H, "g1-1-2", BUY, *_n(Q, 33400, maker_33400)),
            (T0 + 5 * H, "g1-2-5", SELL, *_n(Q, 33800, maker_33800)),
            (T0 + 8 * H, "g1-3-4", SELL, *_n(Q, 34200, "0.171")),
            (T0 + 9 * H, "g1-2-7", BUY, *_n(Q, 33800, maker_33800)),
            (T0 + 25 * H, "g1-1-6", BUY, *_n(Q, 33400, maker_33400)),
            (T0 + 32 * H, "g1-2-9", SELL, *_n(Q, 33800, maker_33800)),
            (T0 + 35 * H, "g1-1-10", BUY, *_n(Q, 33400, maker_33400)),
            (T0 + 41 * H, "g1-2-11", SELL, *_n(Q, 33800, maker_33800)),
        ], name
    assert reports["kafka"] == reports["embedded"]
    metrics = json.loads(reports["embedded"][0])["metrics"]
    # cash -320.9556724 + 0.01 BTC at c47's close 33948.68 = 18.5311276 of PnL (test_grid_bot)
    assert Decimal(str(metrics["final_equity"])) == Decimal("10018.5311276")


def test_dca_bot_two_cycles_are_the_hand_checked_ones(backtest_db: Db, tmp_path: Path) -> None:
    spec = _spec(tmp_path, DCA)
    backtest.run(spec, kafka=False, pg_dir=tmp_path / "pg", reports=tmp_path / "r",
                 mc_runs=50, mc_seed=7)
    assert _fills(backtest_db(spec)) == [
        (T0 + H, "d1-1-b", BUY, *_n("0.02982", "33527.24", "0.9997823")),
        (T0 + 2 * H, "d1-1-s1", BUY, *_n("0.02997", "33359.60", "0.49989361")),
        (T0 + 5 * H, "d1-1-tp2", SELL, *_n("0.05979", "33777.65", "1.00978285")),
        (T0 + 6 * H, "d1-2-b", BUY, *_n("0.02952", "33870.57", "0.99985923")),
        (T0 + 8 * H, "d1-2-tp1", SELL, *_n("0.02952", "34209.28", "0.50492897")),
    ]
    with psycopg.connect(backtest_db(spec)) as conn:
        # the take-profit 1 of cycle 1 was replaced after the safety fill: canceled, never
        # filled; the executor's event says who canceled it
        cancels = conn.execute(
            "select count(*) from risk_decisions where decision_id like 'dec:intent:%:cancel'"
        ).fetchone()
    assert cancels is not None
    assert cancels[0] >= 2  # tp1 of cycle 1, and safety 2 after the take-profit


def test_the_gates_position_limit_holds_whatever_the_grid_asks(backtest_db: Db,
                                                                tmp_path: Path) -> None:
    """max_position_notional 700: the start inventory (0.01 at ~33527) and the 33400 buy
    (worst case 0.02 x 33400 = 668) pass; the 33000 buy (0.03 x 33000 = 990) is refused by
    position.max_notional, so the position never holds more than 0.02 BTC."""
    spec = _spec(tmp_path, GRID, max_position="700")
    backtest.run(spec, kafka=False, pg_dir=tmp_path / "pg", reports=tmp_path / "r",
                 mc_runs=50, mc_seed=7)
    fills = _fills(backtest_db(spec))
    position, highest = Decimal(0), Decimal(0)
    for _, _, side, qty, price, _ in fills:
        position += qty if side == BUY else -qty
        highest = max(highest, position)
        assert position * price <= 700
    assert highest == Decimal("0.02")
    with psycopg.connect(backtest_db(spec)) as conn:
        refused = conn.execute(
            "select client_order_id, failed_rules from risk_decisions where not approved "
            "order by ts, decision_id").fetchall()
    assert refused
    assert {tuple(rules) for _, rules in refused} == {("position.max_notional",)}
    assert "g1-0-3" in {coid for coid, _ in refused}  # the 33000 buy placed at the start
    assert not {coid for coid, _ in refused} & {c for _, c, *_ in fills}
