"""The backtest's inputs are checked before anything runs, and fingerprint what computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian_cli.backtest_spec import env_for, make_spec, read_config
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
