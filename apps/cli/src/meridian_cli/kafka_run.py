"""Run the pipeline as separate OS processes over Kafka (the integration test and the benchmark).

Each consumer service is `python -m meridian_<name>` with the given environment; ingest runs to
completion; the run is drained when the ledger has marked every replayed candle (one equity row
per candle), which happens only after every upstream service has handled it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from meridian_common.db import conninfo

CONSUMERS = ("features", "signals", "risk", "execution", "ledger")
MODULES = {"bots": "meridian_signals.bots"}  # else meridian_<name>


class RunFailed(RuntimeError):
    pass


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class KafkaPipeline:
    env: Mapping[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _environ(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
        return {**base, **self.env, "MERIDIAN_BUS": "kafka"}

    def start(self, services: tuple[str, ...] = CONSUMERS) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in services:
            log = (self.log_dir / f"{name}.log").open("ab")  # a restart appends
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", MODULES.get(name, f"meridian_{name}")],
                env=self._environ(),
                stdout=log, stderr=subprocess.STDOUT)

    def ingest(self, timeout_s: float = 300) -> None:
        log = self.log_dir / "ingest.log"
        with log.open("wb") as fh:
            code = subprocess.run([sys.executable, "-m", "meridian_ingest"], env=self._environ(),
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s,
                                  check=False).returncode
        if code != 0:
            raise RunFailed(f"ingest exited with {code}:\n{_tail(log)}")

    def wait_started(self, timeout_s: float = 120) -> None:
        """Wait until every started service logged "service started" (its consumer joined), so
        what is produced next is read from its first record."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            logs = [self.log_dir / f"{name}.log" for name in self.procs]
            if all(log.exists() and "service started" in log.read_text(errors="replace")
                   for log in logs):
                time.sleep(1.0)
                return
            time.sleep(0.1)
        raise RunFailed(f"services did not start within {timeout_s:.0f} s")

    def kill(self, name: str) -> None:
        """kill -9 one service (a crash: no batch finished, nothing flushed)."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RunFailed(f"{name} exited with {proc.returncode}:\n"
                                f"{_tail(self.log_dir / f'{name}.log')}")

    def wait_marked(self, database_url: str, account: str, expected: int,
                    timeout_s: float = 300) -> float:
        """Wait until the ledger has `expected` equity rows; return the seconds waited."""
        libpq = conninfo(database_url)
        started = time.monotonic()
        count = -1
        while time.monotonic() - started < timeout_s:
            self.check_alive()
            try:
                with psycopg.connect(libpq) as conn:
                    row = conn.execute("select count(*) from equity where account = %s",
                                       (account,)).fetchone()
                    count = row[0] if row else 0
            except psycopg.errors.UndefinedTable:
                count = 0
            if count >= expected:
                return time.monotonic() - started
            time.sleep(0.05)
        raise RunFailed(f"pipeline not drained after {timeout_s}s: {count}/{expected} candles "
                        f"marked; ledger log:\n{_tail(self.log_dir / 'ledger.log')}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> KafkaPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
