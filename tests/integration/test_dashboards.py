"""Static checks of the Grafana dashboards and Prometheus alert rules in deploy/ (fast, no server).

What they prove: the dashboards load as Grafana provisions them in docker-compose.yml (the
provider's path is where compose mounts them, every panel names the provisioned datasource's
uid); every metric a panel or rule selects is one docs/observability.md documents, and every
documented series is on a dashboard; promtool accepts the rules and the config that loads them;
and `promtool test rules` shows the main alerts fire on the series that should fire them, after
their `for:`, and stay quiet otherwise (the replay ingest exiting, a lag being worked off).
test_prometheus_real.py then runs every one of these queries against the real services.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from meridian_common.testing import sibling_module

pq = sibling_module(__file__, "promqueries")
COMPOSE = pq.REPO / "docker-compose.yml"
TITLES = {"Meridian / Pipeline health", "Meridian / Trading", "Meridian / ML"}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, ("promtool is required (Debian package prometheus): run `bash "
                   "scripts/ci-prereqs.sh` as root")
    return found


def run_promtool(*args: str) -> str:
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


# -- dashboards and provisioning ----------------------------------------------------------------

def test_dashboards_parse_with_unique_uids_and_the_expected_titles() -> None:
    boards = pq.dashboards()
    assert {b["title"] for b in boards.values()} == TITLES
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids), uids
    for path, board in boards.items():
        assert board["schemaVersion"] >= 39, path.name
        ids = [p["id"] for p in pq.panels(board)]
        assert len(set(ids)) == len(ids), f"{path.name}: duplicate panel ids"
        assert all(t.get("expr") for p in pq.panels(board) for t in p.get("targets", [])), \
            f"{path.name}: a target without an expression"


def _datasource_uids(board: dict[str, Any]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for panel in pq.panels(board):
        if panel["type"] == "row":
            continue
        out.append((f"panel {panel['title']!r}", (panel.get("datasource") or {}).get("uid")))
        out += [(f"panel {panel['title']!r} {t['refId']}", (t.get("datasource") or {}).get("uid"))
                for t in panel["targets"]]
    out += [(f"variable {v['name']}", (v.get("datasource") or {}).get("uid"))
            for v in board["templating"]["list"] if v["type"] == "query"]
    return out


def test_every_panel_and_variable_queries_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load((pq.GRAFANA / "provisioning" / "datasources" /
                                  "prometheus.yml").read_text())["datasources"]
    assert [(d["uid"], d["type"], d["url"]) for d in datasources] == [
        (pq.DATASOURCE_UID, "prometheus", "http://prometheus:9090")]
    wrong = [(path.name, where, uid) for path, board in pq.dashboards().items()
             for where, uid in _datasource_uids(board) if uid != pq.DATASOURCE_UID]
    assert not wrong, f"not the provisioned datasource {pq.DATASOURCE_UID}: {wrong}"


def _container_path_to_repo(volumes: list[str], path: str) -> Path | None:
    """The repository path a container path is mounted from (compose short volume syntax)."""
    for volume in volumes:
        source, target = volume.split(":")[:2]
        if source.startswith("./") and (path == target or path.startswith(target + "/")):
            return pq.REPO / source[2:] / path[len(target):].lstrip("/")
    return None


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    volumes = grafana["volumes"]
    provisioning = _container_path_to_repo(volumes, grafana["environment"]["GF_PATHS_PROVISIONING"])
    assert provisioning == pq.GRAFANA / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "meridian.yml").read_text())
    paths = [_container_path_to_repo(volumes, p["options"]["path"])
             for p in providers["providers"]]
    assert paths == [pq.DASHBOARDS], paths
    assert len(list(pq.DASHBOARDS.glob("*.json"))) == len(TITLES)


# -- the metric contract ------------------------------------------------------------------------

def test_every_metric_in_a_panel_or_rule_is_documented() -> None:
    documented = pq.documented_metrics() | pq.BUILTIN_SERIES
    assert len(documented) > 40, "docs/observability.md tables did not parse"
    unknown = {(q.where, name) for q in pq.dashboard_queries() + pq.rule_queries()
               for name in pq.metric_names(q.expr) if name not in documented}
    assert not unknown, f"not in docs/observability.md: {sorted(unknown)}"


def test_every_documented_series_is_on_a_dashboard() -> None:
    used = {name for q in pq.dashboard_queries() for name in pq.metric_names(q.expr)}
    missing = {name for name in pq.documented_metrics()
               if name not in used and not name.endswith(("_sum", "_count"))
               and name + "_bucket" not in used}
    assert not missing, f"documented but on no dashboard: {sorted(missing)}"


def test_metric_names_ignore_functions_labels_and_variables() -> None:
    expr = ('histogram_quantile(0.99, sum by (service, le) (rate(meridian_x_bucket'
            '{service=~"$service", le!="up"}[$__rate_interval]))) > on (job) group_left () '
            '2 * max without (instance) (up offset 5m)')
    assert pq.metric_names(expr) == {"meridian_x_bucket", "up"}


def test_series_queries_drop_thresholds_and_keep_both_sides_of_a_series_comparison() -> None:
    assert pq.series_queries('sum by (a) (x{b=">"}) > 5000 and sum by (a) (delta(x[5m])) > 0') \
        == ['sum by (a) (x{b=">"})', "sum by (a) (delta(x[5m]))"]
    assert pq.series_queries("time() - y > on (job) group_left () 2 * z") == \
        ["time() - y", "2 * z"]
    assert pq.series_queries("up == 0 or up{mode=\"live\"} == bool 0") == \
        ["up", 'up{mode="live"}']


# -- the rules ----------------------------------------------------------------------------------

def test_every_alert_has_for_severity_summary_and_description() -> None:
    rules = [(g, r) for g, rules in pq.rule_groups().items() for r in rules]
    assert len(rules) >= 10
    for group, rule in rules:
        where = f"{group}/{rule.get('alert')}"
        assert rule.get("alert"), f"{where}: recording rules are not expected here"
        assert rule.get("for"), f"{where}: no for:"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, where
        assert {"summary", "description"} <= set(rule.get("annotations", {})), where


def test_promtool_checks_the_rules_and_the_config_that_loads_them(tmp_path: Path) -> None:
    files = pq.rule_files()
    assert files, "prometheus.yml's rule_files match no file"
    out = run_promtool("check", "rules", *map(str, files))
    assert "SUCCESS" in out
    copy = tmp_path / "prometheus"
    shutil.copytree(pq.PROMETHEUS, copy)  # as compose mounts it: the directory whole
    out = run_promtool("check", "config", str(copy / "prometheus.yml"))
    assert f"SUCCESS: {len(files)} rule files found" in out, out


# -- the rules' behaviour (promtool test rules) -------------------------------------------------

def _without_annotations(path: Path, into: Path) -> Path:
    """The rule file with annotations dropped: the unit tests below then compare labels only
    (one test keeps them, to prove the templates render)."""
    doc = yaml.safe_load(path.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") != "MeridianTargetDown":  # its annotations are checked
                rule.pop("annotations", None)
    into.write_text(yaml.safe_dump(doc, sort_keys=False))
    return into


HOST = {"job": "meridian", "instance": "risk:9100", "service": "risk"}
LIVE = {"job": "meridian", "instance": "ingest-live:9100", "service": "ingest", "mode": "live"}
BOTS = {"job": "meridian", "instance": "bots:9100", "service": "bots"}


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _case(series: list[dict[str, str]], checks: list[tuple[str, str, list[dict[str, str]]]]
          ) -> dict[str, Any]:
    return {"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": x} for x in exp]}
        for at, name, exp in checks]}


def _rule_cases() -> list[dict[str, Any]]:
    lag = {**HOST, "topic": "signal.v1"}
    return [
        # a growing backlog fires after for: 10m; one being worked off never does
        _case([_series("meridian_consumer_lag_messages", "0+500x40", partition="0", **lag),
               _series("meridian_consumer_lag_messages", "20000-100x40", partition="0",
                       **{**HOST, "topic": "risk.v1"})],
              [("15m", "MeridianConsumerLagHigh", []),
               ("30m", "MeridianConsumerLagHigh",
                [{"severity": "warning", "service": "risk", "topic": "signal.v1"}])]),
        # 1m candles: ETH stops at 0 while BTC keeps up with the clock
        _case([_series("meridian_ingest_last_candle_seconds", "0+60x30", symbol="BTCUSDT", **LIVE),
               _series("meridian_ingest_last_candle_seconds", "0x30", symbol="ETHUSDT", **LIVE),
               _series("meridian_ingest_timeframe_seconds", "60x30", **LIVE)],
              [("5m", "MeridianMarketDataStale", []),
               ("20m", "MeridianMarketDataStale",
                [{"severity": "critical", "symbol": "ETHUSDT", **LIVE}])]),
        # the replay ingest has exited (down, no alert); risk goes down at minute 3
        _case([_series("up", "0x20", job="meridian", instance="ingest:9100", service="ingest"),
               _series("up", "1x20", **LIVE),
               _series("up", "1 1 1 0x20", **HOST),
               _series("up", "1x20", job="prometheus", instance="localhost:9090")],
              [("4m", "MeridianTargetDown", []),
               ("10m", "MeridianTargetDown", [{"severity": "critical", **HOST}]),
               ("10m", "MeridianLiveIngestDown", [])]),
        _case([_series("up", "1 0x20", **LIVE)],
              [("3m", "MeridianLiveIngestDown", []),
               ("10m", "MeridianLiveIngestDown", [{"severity": "warning", **LIVE}])]),
        # the bots host not running (compose without its profile): its own warning, after 5m,
        # and never the critical MeridianTargetDown
        _case([_series("up", "1 0x20", **BOTS), _series("up", "1x20", **HOST)],
              [("3m", "MeridianBotsHostDown", []),
               ("10m", "MeridianBotsHostDown", [{"severity": "warning", **BOTS}]),
               ("10m", "MeridianTargetDown", [])]),
        # counters start at 0 (the contract): one error at minute 6 is seen
        _case([_series("meridian_handler_errors_total", "0x5 1x20", stage="act", **HOST),
               _series("meridian_handler_errors_total", "0x25", stage="handle", **HOST),
               _series("meridian_dead_letters_total", "0x25", topic="candle.v1", **HOST),
               _series("meridian_risk_kill_switch", "0 0 0 1x20", **HOST),
               _series("meridian_ledger_drawdown_ratio", "0.05 0.1 0.2x20", **HOST)],
              [("5m", "MeridianHandlerErrors", []),
               ("9m", "MeridianHandlerErrors",
                [{"severity": "critical", "service": "risk", "stage": "act"}]),
               ("20m", "MeridianDeadLetters", []),
               ("3m", "MeridianKillSwitchSet", []),
               ("6m", "MeridianKillSwitchSet", [{"severity": "critical", "service": "risk"}]),
               ("10m", "MeridianDrawdownHigh", [{"severity": "warning", "service": "risk"}]),
               ("10m", "MeridianDrawdownCritical", [])]),
    ]


def test_alerts_fire_on_the_series_that_should_fire_them(tmp_path: Path) -> None:
    rule_files = [str(_without_annotations(p, tmp_path / p.name)) for p in pq.rule_files()]
    cases = _rule_cases()
    # the annotations of one alert, rendered from its labels
    cases[2]["alert_rule_test"][1]["exp_alerts"][0]["exp_annotations"] = {
        "summary": "risk (risk:9100) is not scraped",
        "description": "Prometheus could not read /metrics of risk at risk:9100 for 2 minutes: "
                       "the process is down, restarting or unreachable."}
    tests = tmp_path / "meridian_test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": rule_files, "evaluation_interval": "1m",
                                     "tests": cases}, sort_keys=False))
    out = run_promtool("test", "rules", str(tests))
    assert "SUCCESS" in out


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The harness above can fail: the same input expecting no kill-switch alert is rejected."""
    rule_files = [str(_without_annotations(p, tmp_path / p.name)) for p in pq.rule_files()]
    case = _case([_series("meridian_risk_kill_switch", "1x20", **HOST)],
                 [("10m", "MeridianKillSwitchSet", [])])
    tests = tmp_path / "wrong_test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": rule_files, "evaluation_interval": "1m",
                                     "tests": [case]}, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(tests)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "MeridianKillSwitchSet" in result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted(pq.DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_variables_are_defined_and_match_everything_for_all(path: Path) -> None:
    """The test against a real Prometheus substitutes `.+` for a variable: the value Grafana
    sends for "All" must be that too, or the dashboards would query something else; and every
    variable a panel uses is defined on its dashboard (and substituted by that test)."""
    board = pq.dashboards()[path]
    defined = {v["name"] for v in board["templating"]["list"]}
    for var in board["templating"]["list"]:
        assert var["type"] != "query" or (var["includeAll"] and var["allValue"] == ".+"), \
            var["name"]
    for panel in pq.panels(board):
        for target in panel.get("targets", []):
            used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= defined, f"{panel['title']}: undefined {used - defined}"
            assert "$" not in pq.substitute(target["expr"]), target["expr"]
