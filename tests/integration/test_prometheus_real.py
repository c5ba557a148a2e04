"""Every dashboard query and every alert rule's series query returns data from a real Prometheus
scraping the real services.

The services run as they are deployed, one OS process each (`python -m meridian_<name>`) over
real Kafka and PostgreSQL: the five consumers, the control plane, ingest replaying two months of
the shared candles, ingest in live mode against the fake exchange (its clock running hours
per second), and the bots host with deploy/bots/bots.example.toml, its risk gate taking the
bots' intents as docker compose's "bots" profile runs it (the example's bots start in 2023,
after this replay: until then the host only passes the candle times on, and the gate waits for
them on every symbol). Prometheus (the real binary) runs with deploy/prometheus/prometheus.yml,
its rule files and target labels unchanged, only the addresses swapped for the processes' free
loopback ports and the intervals made 1 s. The test then proves: every target was up at once,
every rule group loaded and evaluates without error, and each query (Grafana's variables
substituted as "All" does) returned at least one sample while the pipeline ran. A failure lists
each query that never returned data, with the log of any service that died.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import httpx2 as httpx
import pytest

from meridian_common.testing import sibling_module

pytestmark = pytest.mark.integration



pq = sibling_module(__file__, "promqueries")
promserver = sibling_module(__file__, "promserver")

CONSUMERS = ("features", "signals", "risk", "execution", "ledger")
BOTS_FILE = pq.REPO / "deploy" / "bots" / "bots.example.toml"
# The gate next to the bots host (docker-compose.yml's "bots" profile, components/bots in k8s).
RISK_WITH_BOTS = {"MERIDIAN_RISK_INTENTS": "true", "MERIDIAN_RISK_REQUIRE_STOP_LOSS": "false"}
SYMBOLS = "BTCUSDT,ETHUSDT"
TOKEN = "it-prom-token-7d2e91c4a8"  # the control plane's bearer token (a test value)
# Two months of hourly candles at 50 event-time hours per wall-clock second: ~30 s of replay,
# long enough for Prometheus (1 s scrapes) to see the replay ingest up next to the others.
REPLAY = {"MERIDIAN_INGEST_MODE": "replay", "MERIDIAN_INGEST_SOURCE": "csv",
          "MERIDIAN_INGEST_SYMBOLS": SYMBOLS, "MERIDIAN_INGEST_START": "2021-01-01",
          "MERIDIAN_INGEST_END": "2021-03-01", "MERIDIAN_INGEST_SPEED": "180000"}
LIVE_START = "2022-03-01"
STARTUP_S = 120   # every long-running service scraped as up
DATA_S = 150      # every query has returned data (from the replay's start)
RATE_WINDOW = "5m"  # for $__rate_interval: spans the whole run, so a rate sees every event


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so none is handed out twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


class Processes:
    """The services under test: each a process with its own log; all stopped on exit (SIGTERM,
    then SIGKILL after a grace period)."""

    def __init__(self, log_dir: Path, base_env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.base_env = base_env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None,
              stdout: int | None = None) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, *args], env={**self.base_env, **(env or {})},
                stdout=stdout if stdout is not None else log, stderr=log)
        return self.procs[name]

    def tail(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return text[-2500:]

    def check_alive(self, may_finish: tuple[str, ...] = ()) -> None:
        """Fail with the log of any service that exited (those in may_finish: with an error)."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None and (name not in may_finish or code != 0):
                raise AssertionError(f"{name} exited with {code}:\n{self.tail(name)}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def processes(log_dir: Path, base_env: dict[str, str]) -> Iterator[Processes]:
    procs = Processes(log_dir, base_env)
    try:
        yield procs
    finally:
        procs.stop()


def _poll(what: str, done: Callable[[], bool], timeout_s: float, procs: Processes,
          may_finish: tuple[str, ...] = ()) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        procs.check_alive(may_finish)
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s:.0f} s")
        time.sleep(0.5)


def _target_health(prom: promserver.Prometheus) -> dict[str, str]:
    """'job service [mode] address' -> health ("up", "down", "unknown") of each active target."""
    out = {}
    for t in prom.targets():
        labels = t["labels"]
        name = " ".join(filter(None, (labels.get("job"), labels.get("service"),
                                      labels.get("mode"), labels.get("instance"))))
        out[name] = f"{t['health']} {t.get('lastError', '')}".strip()
    return out


class Evidence:
    """Which queries have returned a sample so far (and which only NaN: a quantile over an
    interval without observations is NaN, which still proves the series exist)."""

    def __init__(self, queries: list[pq.Query]) -> None:
        self.pending = {q: pq.substitute(q.expr, RATE_WINDOW) for q in queries}
        self.nan_only: dict[pq.Query, str] = {}
        self.errors: dict[pq.Query, str] = {}

    def poll(self, prom: promserver.Prometheus) -> bool:
        """Run what has not returned a number yet; True once every query returned a sample."""
        for query, expr in [*self.pending.items(), *self.nan_only.items()]:
            try:
                samples = prom.query(expr)
            except AssertionError as exc:  # a query Prometheus rejects never gets data
                self.errors[query] = str(exc)
                self.pending.pop(query, None)
                continue
            if samples:
                self.pending.pop(query, None)
                if all(math.isnan(float(s["value"][1])) for s in samples):
                    self.nan_only[query] = expr
                else:
                    self.nan_only.pop(query, None)
        return not self.pending

    def report(self) -> str:
        lines = [f"  {q.where}: {expr}" for q, expr in sorted(self.pending.items())]
        lines += [f"  {q.where}: {q.expr}  -> {err}" for q, err in sorted(self.errors.items())]
        return "\n".join(lines)


def _rules_loaded(prom: promserver.Prometheus) -> dict[str, list[str]]:
    """Rule group -> its rules' 'name: health lastError' (every rule once evaluated)."""
    groups = prom.api("rules")["groups"]
    return {g["name"]: [f"{r['name']}: {r['health']} {r.get('lastError', '')}".strip()
                        for r in g["rules"]] for g in groups}


def _start_fake_exchange(procs: Processes) -> str:
    """The fake exchange on a free port: its clock 10 hours per second from LIVE_START."""
    proc = procs.start("fake-exchange", [
        "-m", "meridian_fake_exchange", "--port", "0", "--symbols", SYMBOLS, "--timeframes",
        "1h", "--start", f"{LIVE_START}T00:30:00Z", "--speed", "36000"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().strip()  # its first line; blocks until it listens
    assert url.startswith("http"), f"fake exchange did not start:\n{procs.tail('fake-exchange')}"
    threading.Thread(target=_drain, args=(proc.stdout, procs.log_dir / "fake-exchange.out"),
                     daemon=True).start()  # a full pipe would block it
    return url


def _drain(pipe: IO[bytes], into: Path) -> None:
    with into.open("ab") as sink:
        for line in pipe:
            sink.write(line)


def _start_services(procs: Processes, port: dict[str, int], db: str, prefix: str) -> None:
    """Everything but the replay: the consumers, the bots host, the control plane and live ingest
    (on its own topic prefix, as in docker-compose.yml, so the pipeline sees the replay only)."""
    exchange_url = _start_fake_exchange(procs)
    for name in CONSUMERS:
        env = {"MERIDIAN_METRICS_PORT": str(port[name])}
        if name == "ledger":
            env["MERIDIAN_DATABASE_URL"] = db
        if name == "risk":
            env.update(RISK_WITH_BOTS)
        procs.start(name, ["-m", f"meridian_{name}"], env)
    procs.start("bots", ["-m", "meridian_signals.bots"], {
        "MERIDIAN_METRICS_PORT": str(port["bots"]), "MERIDIAN_BOTS_CONFIG": str(BOTS_FILE)})
    procs.start("control", ["-m", "meridian_control"], {
        "MERIDIAN_CONTROL_PORT": str(port["control"]), "MERIDIAN_CONTROL_TOKEN": TOKEN,
        "MERIDIAN_DATABASE_URL": db})
    procs.start("ingest-live", ["-m", "meridian_ingest"], {
        "MERIDIAN_METRICS_PORT": str(port["ingest-live"]), "MERIDIAN_DATABASE_URL": db,
        "MERIDIAN_TOPIC_PREFIX": f"{prefix}live.", "MERIDIAN_EXCHANGE": "bybit",
        "MERIDIAN_INGEST_MODE": "live", "MERIDIAN_INGEST_MARKET_TYPE": "linear",
        "MERIDIAN_INGEST_SYMBOLS": SYMBOLS, "MERIDIAN_INGEST_TIMEFRAME": "1h",
        "MERIDIAN_INGEST_START": LIVE_START, "MERIDIAN_INGEST_API_BASE_URL": exchange_url,
        "MERIDIAN_INGEST_CCXT_RATE_LIMIT": "false", "MERIDIAN_INGEST_POLL_S": "0.2",
        "MERIDIAN_INGEST_GRACE_S": "0.05", "MERIDIAN_INGEST_STALE_AFTER_S": "1.5",
        "MERIDIAN_INGEST_BACKOFF_S": "0.02", "MERIDIAN_INGEST_BACKOFF_MAX_S": "0.3"})


def _wait_long_running_up(prom: promserver.Prometheus, procs: Processes, expected: int) -> None:
    """Every target but the replay ingest (not started yet) scraped as up."""
    def up() -> bool:
        health = _target_health(prom)
        return len(health) == expected and all(
            h == "up" for t, h in health.items()
            if t.split()[1:2] != ["ingest"] or "live" in t.split())

    try:
        _poll("the long-running services scraped as up", up, STARTUP_S, procs)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; targets: {_target_health(prom)}") from None


def _wait_all_up_and_data(prom: promserver.Prometheus, procs: Processes, expected: int,
                          evidence: Evidence) -> None:
    """Until every target has been up at one moment (the replay still running) and every query
    has returned data."""
    seen_all_up: list[dict[str, str]] = []

    def done() -> bool:
        health = _target_health(prom)
        if not seen_all_up and len(health) == expected and all(
                h == "up" for h in health.values()):
            seen_all_up.append(health)
        return evidence.poll(prom) and bool(seen_all_up)

    try:
        _poll("every query answered", done, DATA_S, procs, may_finish=("ingest",))
    except AssertionError as exc:
        if not seen_all_up:
            raise AssertionError(f"{exc}: the targets were never all up at once; last: "
                                 f"{_target_health(prom)}") from None
        if evidence.pending or evidence.errors:
            raise AssertionError(f"{len(evidence.pending) + len(evidence.errors)} queries "
                                 f"returned no data:\n{evidence.report()}") from None
        raise


def _wait_rules_evaluated(prom: promserver.Prometheus, procs: Processes) -> dict[str, list[str]]:
    def evaluated() -> bool:
        return all(r.split(": ")[1].startswith("ok") for rules in
                   _rules_loaded(prom).values() for r in rules)

    try:
        _poll("every rule evaluated", evaluated, 30, procs, may_finish=("ingest",))
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_rules_loaded(prom)}") from None
    return _rules_loaded(prom)


def test_every_dashboard_and_alert_query_returns_data_from_the_real_services(
        kafka_bootstrap: str, new_database: Callable[[str], str], topic_prefix: str,
        tmp_path: Path) -> None:
    db = new_database("prom")
    names = ("prometheus", "ingest", "ingest-live", "control", "bots", *CONSUMERS)
    port = dict(zip(names, _free_ports(len(names)), strict=True))
    address = {n: f"127.0.0.1:{p}" for n, p in port.items()}
    targets = {promserver.labels(service=n): address[n]
               for n in (*CONSUMERS, "ingest", "control", "bots")}
    targets[promserver.labels(service="ingest", mode="live")] = address["ingest-live"]
    rendered = promserver.render_config(pq.PROMETHEUS_CONFIG, targets, address["prometheus"])
    assert not rendered.not_started, (
        f"deploy/prometheus/prometheus.yml scrapes targets this test does not start: "
        f"{[dict(k) for k in rendered.not_started]}")
    evidence = Evidence(pq.dashboard_queries() + pq.rule_queries())
    base_env = {**{k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")},
                "MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "MERIDIAN_TOPIC_PREFIX": topic_prefix, "MERIDIAN_LOG_LEVEL": "INFO"}
    with processes(tmp_path / "logs", base_env) as procs, promserver.Prometheus(
            rendered.config, tmp_path / "prometheus", port["prometheus"]) as prom:
        prom.wait_ready()
        _start_services(procs, port, db, topic_prefix)
        expected = len(targets) + 1  # and Prometheus itself
        _wait_long_running_up(prom, procs, expected)
        httpx.get(f"http://{address['control']}/health", timeout=5)  # a request it counts
        procs.start("ingest", ["-m", "meridian_ingest"],
                    {**REPLAY, "MERIDIAN_METRICS_PORT": str(port["ingest"])})
        _wait_all_up_and_data(prom, procs, expected, evidence)
        loaded = _wait_rules_evaluated(prom, procs)
    assert set(loaded) == set(pq.rule_groups()), loaded
    assert all(loaded.values()), loaded
    assert not rendered.not_in_repo, (
        "services the test ran and Prometheus scraped, but deploy/prometheus/prometheus.yml "
        f"does not: {[dict(k) for k in rendered.not_in_repo]}")
    if evidence.nan_only:
        print("queries with only NaN samples (no observations in the window):",
              *(f"  {q.where}: {e}" for q, e in evidence.nan_only.items()), sep="\n")
