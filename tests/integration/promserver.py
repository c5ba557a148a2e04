"""A real Prometheus server for tests: the binary (Debian's `prometheus` package, installed by
scripts/ci-prereqs.sh), a config derived from deploy/prometheus/prometheus.yml, and its HTTP API.

The config keeps the repository's rule files and scrape jobs (metrics path, target labels) and
only swaps each target's address for a process the test started on a free loopback port, so what
is proven is the repository's config, not a test-only copy of it.
"""

from __future__ import annotations

import copy
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml

Labels = frozenset[tuple[str, str]]


def binary() -> str:
    """The prometheus executable, or a failure that says how to get it."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus"
                                           if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise AssertionError("the prometheus binary is required (neither on PATH nor "
                             "/usr/bin/prometheus): run `bash scripts/ci-prereqs.sh` as root, "
                             "or `apt-get install --no-install-recommends prometheus`")
    return found


def labels(**pairs: str) -> Labels:
    return frozenset(pairs.items())


@dataclass
class RenderedConfig:
    """The generated config and how the repository's targets mapped onto the started ones."""

    config: dict[str, Any]
    not_in_repo: list[Labels] = field(default_factory=list)  # started, but the repo lacks them
    not_started: list[Labels] = field(default_factory=list)  # in the repo, but not started


def render_config(repo_config: Path, targets: Mapping[Labels, str], self_address: str,
                  interval: str = "1s") -> RenderedConfig:
    """The repo's config with `interval` scrapes/evaluations, rule files made absolute, the
    `prometheus` job pointed at `self_address`, and every static group carrying a `service`
    label pointed at the started process with the same target labels. Started processes the
    repo does not scrape are added (job `meridian-unlisted`) so their series can still be
    queried, and reported."""
    config = copy.deepcopy(yaml.safe_load(repo_config.read_text()))
    config.setdefault("global", {}).update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(repo_config.parent / p) for p in config.get("rule_files") or []]
    out = RenderedConfig(config)
    used: set[Labels] = set()
    for job in config["scrape_configs"]:
        job["scrape_interval"] = interval
        job.pop("scrape_timeout", None)
        for group in job.get("static_configs", []):
            key = frozenset((group.get("labels") or {}).items())
            if job["job_name"] == "prometheus":
                group["targets"] = [self_address]
            elif key in targets:
                group["targets"] = [targets[key]]
                used.add(key)
            else:
                out.not_started.append(key)
                group["targets"] = []
        job["static_configs"] = [g for g in job.get("static_configs", []) if g["targets"]]
    extra = [{"targets": [address], "labels": dict(key)} for key, address in targets.items()
             if key not in used]
    if extra:
        out.not_in_repo = [frozenset(g["labels"].items()) for g in extra]
        config["scrape_configs"].append({"job_name": "meridian-unlisted",
                                         "scrape_interval": interval, "static_configs": extra})
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j.get("static_configs")]
    return out


class Prometheus:
    """One Prometheus process: started on enter, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, config: dict[str, Any], workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [binary(), f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=sink, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def wait_ready(self, timeout_s: float = 30) -> None:
        """Until /-/ready answers 200 (config and rule files loaded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n"
                                     f"{self.tail()}")
            try:
                if httpx.get(f"{self.base}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready in {timeout_s:.0f} s:\n{self.tail()}")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a success, an AssertionError otherwise."""
        response = httpx.get(f"{self.base}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"/api/v1/{path} {params}: {body.get('errorType')}: "
                                 f"{body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at now: the samples (a scalar counts as one)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])
