"""The funding-rate arbitrage pair through the real services: `meridian backtest` replays BTCUSDT
1h from 2022-02-28 20:00 UTC as the spot market (binance:BTCUSDT) and as its perpetual
(binance-linear:BTCUSDT, marked at the same stored candles: the data holds no perpetual
prices) with the stored funding settlements, through the bots host, the risk gate, the paper
executor and the ledger, in-process and over Kafka.

Checked by hand (candle opens/closes and settlements quoted from ../shared/data):
- settlements 02-28 00:00, 08:00, 16:00 come before the first candle: warm-up, no trade;
- 03-01 00:00 rate 0.0001 >= entry 0.0001: the pair enters on the candle 00:00-01:00 (close
  43560.0): 10000 / 43560.0 = 0.22956... -> 0.22956 on lot 0.00001, spot buy + perp sell at
  the 01:00 open 43560.01;
- funding on the short 0.22956 (the ledger's rule: position held through the candle closing
  at t, marked at its close): 08:00 rate 0.0001 at 43492.96, 16:00 rate 0.00004369 at
  43643.69 (held: 0.00004369 >= exit 0.00003), 03-02 00:00 rate -0.00000507 at 44421.2;
- that last rate < exit 0.00003: both legs close reduce-only at the 01:00 open 44280.0.
The same window through the research backtest (`meridian_research.funding_arb`, no basis
cost, the same fees) gives the same quantity, prices and funding: one set of rules.

The gate's limits hold: with max_asset_notional 10000 the perpetual leg (decided first, its key
sorts first) passes and the spot leg would take BTC to ~20000: refused
(portfolio.asset_exposure); the bot unwinds the filled leg at the next open and no BTC
exposure ever exceeds the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg

from meridian_cli import backtest
from meridian_cli.backtest_spec import BacktestSpec, make_spec
from meridian_common.fees import FeeSchedule
from meridian_common.fills import PaperFillModel
from meridian_common.strategy.funding_arb import FundingArbParams
from meridian_research.funding_arb import Costs, load_symbol, run_backtest

Db = Callable[[BacktestSpec], str]
H = 3_600_000
START, END = "2022-02-28T20:00:00", "2022-03-02T04:00:00"  # 32 candles per market
BUY, SELL = 1, 2
SPOT, PERP = "binance", "binance-linear"
Q, Q2 = Decimal("0.22956"), Decimal("0.22992")


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


ENTRY, EXIT = _ms("2022-03-01T01:00:00"), _ms("2022-03-02T01:00:00")

BOTS = """
[[bots]]
bot_id = "arb1"
kind = "funding-arb"
exchange = "binance"
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.00001"
min_notional = "5"
capital = "100000"
entry_rate = "0.0001"
exit_rate = "0.00003"
notional = "10000"
exposure_cap = "20000"
"""




def _spec(tmp: Path, *, max_asset: str) -> BacktestSpec:
    (tmp / "bots.toml").write_text(BOTS)
    (tmp / "bt.toml").write_text(f"""
[ingest]
replay_perpetuals = ["BTCUSDT"]
[bots]
config = "bots.toml"
[risk]
signals = false
intents = true
require_stop_loss = false
initial_capital = "100000"
min_order_notional = "5"
max_position_notional = "12000"
max_asset_notional = "{max_asset}"
max_correlated_notional = "25000"
[execution]
maker_fee = "0.0002"
taker_fee = "0.0005"
slippage_bps = "0"
[ledger]
funding = true
initial_capital = "100000"
""")
    return make_spec("BTCUSDT", START, END, str(tmp / "bt.toml"))




Fill = tuple[int, str, str, int, Decimal, Decimal, Decimal]


def _fills(db: str) -> list[Fill]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "select (extract(epoch from ts) * 1000)::bigint, exchange, client_order_id, side, "
            "quantity, price, fee from fills order by ts, client_order_id").fetchall()
    return [(int(t), e, c, s, Decimal(q).normalize(), Decimal(p).normalize(),
             Decimal(f).normalize()) for t, e, c, s, q, p, f in rows]


def _n(*values: str | int) -> tuple[Decimal, ...]:
    return tuple(Decimal(v).normalize() for v in values)


def _research_trade() -> object:
    fees = PaperFillModel(FeeSchedule(Decimal("0.0002"), Decimal("0.0005")), Decimal(0))
    start, end = _ms(START), _ms(END)
    result = run_backtest([load_symbol("BTCUSDT", start - 10 * 24 * H, end)],
                          FundingArbParams(entry_rate=0.0001, exit_rate=0.00003),
                          start, end, capital=Decimal(100_000),
                          costs=Costs(spot=fees, perp=fees, basis_bps=Decimal(0),
                                      basis_rate_multiple=Decimal(0)))
    assert len(result.trades) == 1
    return result.trades[0]


def test_the_pair_enters_earns_the_funding_and_exits_as_checked_by_hand(
        backtest_db: Db, tmp_path: Path) -> None:
    spec = _spec(tmp_path, max_asset="25000")
    assert spec.strategy == "bots"
    reports = {}
    # entry 0.22956 x 43560.01 = 9999.6358956 (fee 0.0005: 4.9998179478);
    # exit  0.22956 x 44280.00 = 10164.9168   (fee 5.0824584)
    expected = [
        (ENTRY, PERP, "arb1-p-2", SELL, *_n(Q, "43560.01", "4.99981795")),
        (ENTRY, SPOT, "arb1-s-1", BUY, *_n(Q, "43560.01", "4.99981795")),
        (EXIT, PERP, "arb1-p-4", BUY, *_n(Q, "44280", "5.0824584")),
        (EXIT, SPOT, "arb1-s-3", SELL, *_n(Q, "44280", "5.0824584")),
    ]
    for name, kafka in (("embedded", False), ("kafka", True)):
        _report, paths = backtest.run(spec, kafka=kafka, pg_dir=tmp_path / "pg",
                                     reports=tmp_path / name, mc_runs=50, mc_seed=7)
        reports[name] = paths["report.json"].read_bytes(), paths["trades.json"].read_bytes()
        assert _fills(backtest_db(spec)) == expected, name
    assert reports["kafka"] == reports["embedded"]
    # funding on the short 0.22956: -0.22956 x mark x rate, each cash-quantized (1e-8)
    # 08:00  43492.96 x 0.0001       -> -0.99842439 (received)
    # 16:00  43643.69 x 0.00004369   -> -0.43772336
    # 00:00  44421.2  x -0.00000507  -> +0.05170047 (paid: the rate turned negative)
    funding = Decimal("-0.99842439") + Decimal("-0.43772336") + Decimal("0.05170047")
    with psycopg.connect(backtest_db(spec)) as conn:
        positions = conn.execute(
            "select exchange, quantity, realized_pnl, fees_paid, funding_paid from positions "
            "order by exchange").fetchall()
        decisions = conn.execute(
            "select client_order_id, approved, reduce_only from risk_decisions "
            "order by ts, client_order_id").fetchall()
    assert [(e, q, r, f, p) for e, q, r, f, p in positions] == [
        # 0.22956 x (44280 - 43560.01) = 165.2809044 on each leg, opposite signs
        (SPOT, 0, Decimal("165.2809044"), Decimal("10.08227635"), 0),
        (PERP, 0, Decimal("-165.2809044"), Decimal("10.08227635"), funding),
    ]
    assert decisions == [("arb1-p-2", True, False), ("arb1-s-1", True, False),
                         ("arb1-p-4", True, True), ("arb1-s-3", True, True)]
    report = json.loads(reports["embedded"][0])
    # the price legs cancel: what is left is the funding less four fees
    assert Decimal(report["final_equity"]) == Decimal(100_000) - funding - 2 * Decimal(
        "10.08227635")
    # the research backtest of the same rules on the same window trades the same pair
    trade = _research_trade()
    assert (trade.entry_ms, trade.exit_ms, trade.quantity) == (ENTRY, EXIT, Q)  # type: ignore[attr-defined]
    assert (trade.spot_entry, trade.perp_exit) == (Decimal("43560.01"), Decimal("44280"))  # type: ignore[attr-defined]
    assert trade.funding == -funding  # type: ignore[attr-defined]
    assert trade.fees == 2 * Decimal("10.08227635")  # type: ignore[attr-defined]


def test_the_gates_asset_limit_holds_and_a_refused_leg_is_unwound(
        backtest_db: Db, tmp_path: Path) -> None:
    spec = _spec(tmp_path, max_asset="10000")
    backtest.run(spec, kafka=False, pg_dir=tmp_path / "pg", reports=tmp_path / "r",
                 mc_runs=50, mc_seed=7)
    fills = _fills(backtest_db(spec))
    with psycopg.connect(backtest_db(spec)) as conn:
        refused = conn.execute(
            "select client_order_id, failed_rules from risk_decisions where not approved "
            "order by ts, client_order_id").fetchall()
    # 03-01 00:00 and 08:00 both ask for the pair; each time the perp leg passes (9999.64 of
    # BTC) and the spot leg is refused, so the perp short is bought back at the next open.
    # The second pair is sized on the 08:00-09:00 close: 10000 / 43492.24 -> 0.22992
    assert refused == [("arb1-s-1", ["portfolio.asset_exposure"]),
                       ("arb1-s-4", ["portfolio.asset_exposure"])]
    assert [(t, e, c, s, q, p) for t, e, c, s, q, p, _ in fills] == [
        (ENTRY, PERP, "arb1-p-2", SELL, Q, Decimal("43560.01")),
        (ENTRY + H, PERP, "arb1-p-3", BUY, Q, Decimal("43259.89")),
        (_ms("2022-03-01T09:00:00"), PERP, "arb1-p-5", SELL, Q2, Decimal("43492.24")),
        (_ms("2022-03-01T10:00:00"), PERP, "arb1-p-6", BUY, Q2, Decimal("43258.33")),
    ]
    held = {SPOT: Decimal(0), PERP: Decimal(0)}
    for _, exchange, _, side, qty, price, _ in fills:
        held[exchange] += qty if side == BUY else -qty
        assert sum(abs(q) for q in held.values()) * price <= 10_000
    assert held == {SPOT: 0, PERP: 0}
