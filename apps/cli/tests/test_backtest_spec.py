"""The backtest's inputs are checked before anything runs, and fingerprint what computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian_cli.backtest_spec import INGEST_KEYS, env_for, make_spec, read_config
from meridian_cli.main import count_candles
from meridian_cli.settings import PipelineSettings
from meridian_common.config import ConfigError


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bt.toml"
    path.write_text(text)
    return str(path)


def test_config_tables_become_overrides_and_env(tmp_path: Path) -> None:
    path = _config(tmp_path, "[signals]\nentry_score = 0.6\nallow_short = true\n"
                             "[risk]\nleverage = 2\n")
    spec = make_spec("btcusdt, ETHUSDT", "2021-01-01", "2021-02-01", path)
    assert spec.symbols == ("BTCUSDT", "ETHUSDT")
    settings = spec.settings(common={"bus": "inprocess"})
    assert settings.signals.entry_score == 0.6
    assert settings.signals.allow_short is True
    assert str(settings.risk.leverage) == "2"
    assert settings.ingest.start == "2021-01-01"
    env = env_for(spec)
    assert env["MERIDIAN_SIGNALS_ENTRY_SCORE"] == "0.6"
    assert env["MERIDIAN_SIGNALS_ALLOW_SHORT"] == "true"
    assert env["MERIDIAN_RISK_LEVERAGE"] == "2"
    assert env["MERIDIAN_INGEST_SYMBOLS"] == "BTCUSDT,ETHUSDT"


def test_unknown_table_and_key_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown table \[common\]"):
        read_config(Path(_config(tmp_path, "[common]\nbus = 'kafka'\n")))
    with pytest.raises(ConfigError, match=r"\[signals\] has unknown key\(s\) entry_scor\b"):
        read_config(Path(_config(tmp_path, "[signals]\nentry_scor = 0.6\n")))


def test_bad_values_fail_before_the_run(tmp_path: Path) -> None:
    path = _config(tmp_path, "[signals]\nentry_score = 7\n")
    with pytest.raises(ConfigError, match="ENTRY_SCORE"):
        make_spec("BTCUSDT", "2021-01-01", "2021-02-01", path)
    with pytest.raises(ConfigError, match="not valid TOML"):
        make_spec("BTCUSDT", "2021-01-01", "2021-02-01", _config(tmp_path, "[signals\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        make_spec("BTCUSDT", "2021-01-01", "2021-02-01", str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(("start", "end", "message"), [
    ("2021-02-01", "2021-01-01", "must be before"),
    ("yesterday", "2021-01-01", "--from: expected a UTC ISO date"),
    ("2021-01-01", "2021-02-01T00:00:00+02:00", "--to: give the time in UTC"),
])
def test_bad_ranges(start: str, end: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_spec("BTCUSDT", start, end, None)


def test_run_id_follows_what_computes_not_where(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    base = make_spec("BTCUSDT", "2021-01-01", "2021-02-01", None)
    assert base.run_id() == make_spec("BTCUSDT", "2021-01-01", "2021-02-01", None).run_id()
    assert base.run_id().startswith("trend-")
    monkeypatch.setenv("MERIDIAN_KAFKA_BOOTSTRAP", "elsewhere:9092")  # where, not what
    monkeypatch.setenv("MERIDIAN_LOG_LEVEL", "DEBUG")
    assert make_spec("BTCUSDT", "2021-01-01", "2021-02-01", None).run_id() == base.run_id()
    changed = make_spec("BTCUSDT", "2021-01-01", "2021-02-01",
                        _config(tmp_path, "[risk]\norder_notional = 500\n"))
    assert changed.run_id() != base.run_id()
    monkeypatch.setenv("MERIDIAN_RISK_ORDER_NOTIONAL", "500")  # the environment computes too
    assert make_spec("BTCUSDT", "2021-01-01", "2021-02-01", None).run_id() == changed.run_id()
    assert make_spec("BTCUSDT", "2021-01-01", "2021-03-01", None).run_id() != changed.run_id()


def test_a_backtest_without_the_reference_symbol_turns_the_join_off(tmp_path: Path) -> None:
    spec = make_spec("ETHUSDT", "2022-01-01", "2022-02-01", None)
    assert spec.settings().features.cross_asset is False
    assert make_spec("BTCUSDT,ETHUSDT", "2022-01-01", "2022-02-01", None) \
        .settings().features.cross_asset is True
    asked = _config(tmp_path, "[features]\ncross_asset = true\n")
    with pytest.raises(ConfigError, match="needs the reference symbol BTCUSDT"):
        make_spec("ETHUSDT", "2022-01-01", "2022-02-01", asked)


ARB_BOTS = """
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
"""
BOTS_ON = """
[bots]
config = "bots.toml"
[risk]
signals = false
intents = true
require_stop_loss = false
"""


def _arb_config(tmp_path: Path, extra: str) -> str:
    (tmp_path / "bots.toml").write_text(ARB_BOTS)
    return _config(tmp_path, BOTS_ON + extra)


def test_ingest_table_reaches_the_settings_and_env(tmp_path: Path) -> None:
    path = _config(tmp_path, '[ingest]\nreplay_perpetuals = ["BTCUSDT"]\nfunding = false\n')
    assert read_config(Path(path)) == {"ingest": {"replay_perpetuals": ["BTCUSDT"],
                                                  "funding": False}}
    spec = make_spec("BTCUSDT,ETHUSDT", "2022-01-01", "2022-02-01", path)
    ingest = spec.settings().ingest
    assert ingest.replay_perpetuals == ("BTCUSDT",)
    assert ingest.funding is False
    # the command line still owns the symbols and the range
    assert ingest.symbols == ("BTCUSDT", "ETHUSDT")
    assert (ingest.start, ingest.end, ingest.source) == ("2022-01-01", "2022-02-01", "csv")
    env = env_for(spec)
    assert env["MERIDIAN_INGEST_REPLAY_PERPETUALS"] == "BTCUSDT"
    assert env["MERIDIAN_INGEST_FUNDING"] == "false"
    assert env["MERIDIAN_INGEST_SYMBOLS"] == "BTCUSDT,ETHUSDT"


def test_ingest_perpetuals_change_the_run_id(tmp_path: Path) -> None:
    base = make_spec("BTCUSDT", "2022-01-01", "2022-02-01", None)
    perps = make_spec("BTCUSDT", "2022-01-01", "2022-02-01",
                      _config(tmp_path, '[ingest]\nreplay_perpetuals = ["BTCUSDT"]\n'))
    assert perps.run_id() != base.run_id()


@pytest.mark.parametrize("key", ["symbols", "start", "source", "mode", "market_type"])
def test_ingest_keys_other_than_the_replays_are_refused(tmp_path: Path, key: str) -> None:
    assert key not in INGEST_KEYS
    path = _config(tmp_path, f'[ingest]\nfunding = true\n{key} = "x"\n')
    with pytest.raises(ConfigError, match=rf"\[ingest\] has unknown key\(s\) {key};"):
        read_config(Path(path))
    with pytest.raises(ConfigError, match=rf"\[ingest\] has unknown key\(s\) {key};"):
        make_spec("BTCUSDT", "2022-01-01", "2022-02-01", path)


def test_an_ingest_perpetual_outside_the_symbols_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, '[ingest]\nreplay_perpetuals = ["ETHUSDT"]\n')
    with pytest.raises(ConfigError, match="REPLAY_PERPETUALS"):
        make_spec("BTCUSDT", "2022-01-01", "2022-02-01", path)


def test_a_funding_arb_pair_needs_the_ledger_funding(tmp_path: Path) -> None:
    path = _arb_config(tmp_path, '[ingest]\nreplay_perpetuals = ["BTCUSDT"]\n')
    with pytest.raises(ConfigError, match=r"bots\[arb1\] is a funding-arb pair: set "
                                          r"MERIDIAN_LEDGER_FUNDING=true"):
        make_spec("BTCUSDT", "2022-01-01", "2022-02-01", path)
    path = _arb_config(tmp_path, '[ingest]\nreplay_perpetuals = ["BTCUSDT"]\n'
                                 "[ledger]\nfunding = false\n")
    with pytest.raises(ConfigError, match="MERIDIAN_LEDGER_FUNDING"):
        make_spec("BTCUSDT", "2022-01-01", "2022-02-01", path)


@pytest.mark.parametrize(("symbols", "ingest", "missing"), [
    ("BTCUSDT", "", "binance-linear:BTCUSDT"),  # no perpetual copy
    ("BTCUSDT", '[ingest]\nreplay_perpetuals = ["BTCUSDT"]\nfunding = false\n',
     "binance-linear:BTCUSDT"),  # a copy without its settlements
    ("ETHUSDT", "", "binance:BTCUSDT, binance-linear:BTCUSDT"),  # the pair's symbol not replayed
])
def test_a_funding_arb_pair_needs_both_legs_replayed(tmp_path: Path, symbols: str, ingest: str,
                                                     missing: str) -> None:
    path = _arb_config(tmp_path, "[ledger]\nfunding = true\n" + ingest)
    with pytest.raises(ConfigError) as err:
        make_spec(symbols, "2022-01-01", "2022-02-01", path)
    message = str(err.value)
    assert f"bots[arb1]: the replay publishes no {missing};" in message, message
    assert "MERIDIAN_INGEST_REPLAY_PERPETUALS" in message


def test_a_funding_arb_backtest_with_both_legs_loads(tmp_path: Path) -> None:
    path = _arb_config(tmp_path, "[ledger]\nfunding = true\n"
                                 '[ingest]\nreplay_perpetuals = ["BTCUSDT"]\n')
    spec = make_spec("BTCUSDT", "2022-01-01", "2022-02-01", path)
    assert spec.overrides["bots"]["config"] == str(tmp_path / "bots.toml")
    assert spec.strategy == "bots"
    settings = spec.settings()
    assert settings.ledger.funding is True
    assert settings.ingest.replay_perpetuals == ("BTCUSDT",)
    assert settings.ingest.funding is True
    assert settings.bots.config == str(tmp_path / "bots.toml")
    env = env_for(spec)
    assert env["MERIDIAN_BOTS_CONFIG"] == str(tmp_path / "bots.toml")
    assert env["MERIDIAN_LEDGER_FUNDING"] == "true"
    assert env["MERIDIAN_INGEST_REPLAY_PERPETUALS"] == "BTCUSDT"


def test_check_pairs_leaves_grid_bots_and_live_ingest_alone(tmp_path: Path) -> None:
    bots = tmp_path / "bots.toml"
    bots.write_text(ARB_BOTS.replace('kind = "funding-arb"', 'kind = "grid"').split("capital")[0]
                    + 'lower = "33000"\nupper = "34200"\nlevels = 4\nquantity = "0.01"\n')
    risk = {"signals": False, "intents": True}
    # a grid bot: no funding needed
    grid = PipelineSettings.load(environ={}, bots={"config": str(bots)}, risk=risk)
    assert grid.ledger.funding is False
    bots.write_text(ARB_BOTS)
    # a live run publishes the exchange's own markets: only the ledger's funding is checked
    live = PipelineSettings.load(environ={}, bots={"config": str(bots)}, risk=risk,
                                 ingest={"mode": "live"}, ledger={"funding": True})
    assert live.ingest.mode == "live"
    with pytest.raises(ConfigError, match="MERIDIAN_LEDGER_FUNDING"):
        PipelineSettings.load(environ={}, bots={"config": str(bots)}, risk=risk,
                              ingest={"mode": "live"})


def test_the_candle_count_includes_the_perpetual_copies() -> None:
    """The progress total (and the Kafka run's wait for that many marks) counts what the replay
    publishes: 24 BTC and 24 ETH hours, and BTC's 24 again as its perpetual."""
    window = {"start": "2022-03-01", "end": "2022-03-02", "source": "csv"}
    spot = PipelineSettings.load(ingest={**window, "symbols": ["BTCUSDT", "ETHUSDT"]})
    both = PipelineSettings.load(ingest={**window, "symbols": ["BTCUSDT", "ETHUSDT"],
                                         "replay_perpetuals": ["BTCUSDT"]})
    assert (count_candles(spot), count_candles(both)) == (48, 72)
