"""Settings loading (errors name the variable, secrets never print) and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
from pydantic import SecretStr

from meridian_common import config, logs
from meridian_common.config import CommonSettings, ConfigError
from meridian_execution.settings import ExecutionSettings

SECRET_URL = "postgresql://meridian:hunter2-s3cret@db.internal:5432/meridian"
SECRET_KEY = "AKIA-very-secret-key-42"


def test_defaults_from_empty_environment() -> None:
    s = config.load(CommonSettings, environ={})
    assert s.bus == "kafka"
    assert s.partitions == 3
    assert s.database_url is None


def test_values_are_read_from_given_environ_only() -> None:
    s = config.load(CommonSettings, environ={"MERIDIAN_PARTITIONS": "7",
                                             "MERIDIAN_BUS": "inprocess",
                                             "MERIDIAN_TOPIC_PREFIX": "run-1."})
    assert (s.partitions, s.bus, s.topic_prefix) == (7, "inprocess", "run-1.")


def test_override_wins_over_environ() -> None:
    s = config.load(CommonSettings, environ={"MERIDIAN_PARTITIONS": "7"}, partitions=2)
    assert s.partitions == 2


@pytest.mark.parametrize(("var", "value"), [
    ("MERIDIAN_PARTITIONS", "zero"),
    ("MERIDIAN_PARTITIONS", "0"),
    ("MERIDIAN_PARTITIONS", "257"),
    ("MERIDIAN_BUS", "rabbitmq"),
    ("MERIDIAN_METRICS_PORT", "70000"),
    ("MERIDIAN_TOPIC_PREFIX", "bad prefix!"),
    ("MERIDIAN_LOG_LEVEL", "LOUD"),
])
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CommonSettings, environ={var: value})
    text = str(info.value)
    assert var in text
    assert value in text  # non-secret values are shown to help the operator


def test_several_bad_values_are_all_named() -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CommonSettings, environ={"MERIDIAN_PARTITIONS": "x",
                                             "MERIDIAN_BUS": "y"})
    assert "MERIDIAN_PARTITIONS" in str(info.value)
    assert "MERIDIAN_BUS" in str(info.value)


def test_typo_is_an_unknown_setting() -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CommonSettings, environ={"MERIDIAN_PARTITONS": "6"})
    text = str(info.value)
    assert "MERIDIAN_PARTITONS" in text
    assert "unknown" in text
    assert "MERIDIAN_PARTITIONS" in text  # lists what it reads, to spot the typo


def test_unknown_keys_lists_all_sorted() -> None:
    env = {"MERIDIAN_ZZZ": "1", "MERIDIAN_AAA": "1", "OTHER_THING": "1", "MERIDIAN_BUS": "kafka"}
    assert config.unknown_keys(CommonSettings, env) == ["MERIDIAN_AAA", "MERIDIAN_ZZZ"]


def test_service_prefixed_vars_are_not_unknown_for_common() -> None:
    env = {f"MERIDIAN_{s.upper()}_ANYTHING": "1" for s in config.SERVICES}
    env["MERIDIAN_RISK_ORDER_NOTIONAL"] = "500"
    assert config.unknown_keys(CommonSettings, env) == []
    config.load(CommonSettings, environ=env)


def test_test_harness_vars_are_not_settings() -> None:
    env = {"MERIDIAN_TEST_KAFKA_BOOTSTRAP": "127.0.0.1:9092", "MERIDIAN_TEST_PG_PORT": "5432",
           "MERIDIAN_TESTS": "1"}
    assert config.unknown_keys(CommonSettings, env) == ["MERIDIAN_TESTS"]  # only the prefix


def test_service_class_rejects_its_own_typos() -> None:
    with pytest.raises(ConfigError, match="MERIDIAN_EXECUTION_TAKER_FEES"):
        config.load(ExecutionSettings, environ={"MERIDIAN_EXECUTION_TAKER_FEES": "0.001"})


def test_unrelated_vars_are_ignored() -> None:
    config.load(CommonSettings, environ={"PATH": "/bin", "HOME": "/root"})


def test_no_module_reads_a_variable_the_settings_would_refuse(monkeypatch) -> None:
    """The data directory is configured only through MERIDIAN_INGEST_DATA_DIR: no module reads a
    hidden MERIDIAN_* variable that the unknown-key check would refuse at start-up."""
    from meridian_common.marketdata import default_data_dir

    before = default_data_dir()
    monkeypatch.setenv("MERIDIAN_DATA_DIR", "/nowhere")
    assert default_data_dir() == before
    with pytest.raises(ConfigError, match="MERIDIAN_DATA_DIR"):
        config.load(CommonSettings, environ={"MERIDIAN_DATA_DIR": "/nowhere"})


def test_secret_never_in_repr_or_str() -> None:
    s = config.load(CommonSettings, environ={"MERIDIAN_DATABASE_URL": SECRET_URL})
    assert isinstance(s.database_url, SecretStr)
    assert s.database_url.get_secret_value() == SECRET_URL
    for text in (repr(s), str(s), repr(s.database_url), str(s.database_url),
                 repr(s.model_dump()), s.model_dump_json()):
        assert "hunter2" not in text

    e = config.load(ExecutionSettings, environ={"MERIDIAN_EXECUTION_API_KEY": SECRET_KEY,
                                                "MERIDIAN_EXECUTION_API_SECRET": SECRET_KEY})
    assert e.api_key is not None
    assert e.api_key.get_secret_value() == SECRET_KEY
    for text in (repr(e), str(e), e.model_dump_json()):
        assert SECRET_KEY not in text


def test_secret_not_in_error_when_its_validation_fails() -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CommonSettings, environ={}, database_url=["hunter2-s3cret"])
    assert "MERIDIAN_DATABASE_URL" in str(info.value)
    assert "hunter2" not in str(info.value)

    with pytest.raises(ConfigError) as info:
        config.load(ExecutionSettings, environ={}, api_key={"value": SECRET_KEY})
    assert "MERIDIAN_EXECUTION_API_KEY" in str(info.value)
    assert SECRET_KEY not in str(info.value)


def test_secret_not_in_error_when_another_field_fails() -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CommonSettings, environ={"MERIDIAN_DATABASE_URL": SECRET_URL,
                                             "MERIDIAN_PARTITIONS": "-1"})
    assert "MERIDIAN_PARTITIONS" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        config.load(ExecutionSettings, environ={"MERIDIAN_EXECUTION_API_KEY": SECRET_KEY,
                                                "MERIDIAN_EXECUTION_SLIPPAGE_BPS": "-3"})
    assert "MERIDIAN_EXECUTION_SLIPPAGE_BPS" in str(info.value)
    assert SECRET_KEY not in str(info.value)


def test_secret_not_in_unknown_key_error() -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CommonSettings, environ={"MERIDIAN_DATABASE_ULR": SECRET_URL})
    assert "MERIDIAN_DATABASE_ULR" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_model_level_error_is_a_config_error() -> None:
    from meridian_risk.settings import RiskSettings

    with pytest.raises(ConfigError, match="min_order_notional"):
        config.load(RiskSettings, environ={"MERIDIAN_RISK_MIN_ORDER_NOTIONAL": "600",
                                           "MERIDIAN_RISK_ORDER_NOTIONAL": "500"})


def test_settings_are_frozen() -> None:
    s = config.load(CommonSettings, environ={})
    with pytest.raises(ValueError, match="frozen"):
        s.partitions = 9  # type: ignore[misc]


def test_reference_lists_every_field() -> None:
    rows = config.reference(CommonSettings)
    names = [r[0] for r in rows]
    assert names == [f"MERIDIAN_{f.upper()}" for f in CommonSettings.model_fields]
    by_name = {r[0]: r for r in rows}
    assert by_name["MERIDIAN_PARTITIONS"][1] == "3"
    assert by_name["MERIDIAN_DATABASE_URL"][1] == ""
    assert by_name["MERIDIAN_BUS"][2]  # has a description
    exec_rows = config.reference(ExecutionSettings)
    assert {r[0] for r in exec_rows} == {
        f"MERIDIAN_EXECUTION_{f.upper()}" for f in ExecutionSettings.model_fields}


# --- logs ---------------------------------------------------------------------------------------


def _logger_to(stream: io.StringIO, service: str = "risk") -> logging.Logger:
    logger = logging.getLogger(f"test_config.{id(stream)}")
    logger.handlers.clear()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter(service))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def test_redact_url_masks_password_only() -> None:
    assert logs.redact_url(SECRET_URL) == "postgresql://meridian:***@db.internal:5432/meridian"
    assert logs.redact_url("http://host:8080/x") == "http://host:8080/x"
    assert logs.redact_url("postgresql://user@h/db") == "postgresql://user@h/db"
    text = f"a={SECRET_URL} b=redis://:pw2@r:6379/0"
    out = logs.redact_url(text)
    assert "hunter2" not in out
    assert "pw2" not in out


def test_json_formatter_output_is_json_and_redacts() -> None:
    stream = io.StringIO()
    log = _logger_to(stream)
    log.info("connecting to %s", SECRET_URL, extra={"attempt": 3, "key": SecretStr(SECRET_KEY)})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["level"] == "INFO"
    assert payload["service"] == "risk"
    assert payload["attempt"] == 3
    assert payload["msg"] == "connecting to postgresql://meridian:***@db.internal:5432/meridian"
    assert payload["ts"].endswith("Z")
    assert "hunter2" not in lines[0]
    assert SECRET_KEY not in lines[0]


def test_json_formatter_redacts_exceptions() -> None:
    stream = io.StringIO()
    log = _logger_to(stream)
    try:
        raise RuntimeError(f"cannot connect to {SECRET_URL}")
    except RuntimeError:
        log.exception("failed")
    payload = json.loads(stream.getvalue())
    assert "RuntimeError" in payload["exc"]
    assert "hunter2" not in stream.getvalue()


def test_setup_is_idempotent() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        logs.setup("x", "WARNING")
        logs.setup("x", "WARNING")
        ours = [h for h in root.handlers if getattr(h, "_meridian", False)]
        assert len(ours) == 1
        assert ours[0].stream is sys.stderr  # type: ignore[attr-defined]
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)
