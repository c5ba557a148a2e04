#!/usr/bin/env python3
"""Local Kafka and PostgreSQL for Meridian's tests, CI and developers, without Docker.

Stdlib only on purpose: it must run with a bare ``python3.11`` on a fresh CI machine
before any virtualenv exists, and be importable from pytest.

Command line::

    python scripts/localinfra.py kafka start|stop|status
    python scripts/localinfra.py postgres start|stop|status
    python scripts/localinfra.py up        # start both (in parallel)
    python scripts/localinfra.py down      # stop both
    python scripts/localinfra.py status    # status of both
    python scripts/localinfra.py env       # eval "$(python scripts/localinfra.py env)"

``env`` prints ``export MERIDIAN_KAFKA_BOOTSTRAP=127.0.0.1:PORT`` and
``export MERIDIAN_DATABASE_URL=postgresql://meridian@127.0.0.1:PORT/meridian`` for the
services that are running. Exit codes: 0 ok, 1 failure (message on stderr), 3 ``status``
of a service that is not running.

Python API (for pytest fixtures)::

    start_kafka(state_dir) -> KafkaHandle      stop_kafka(handle)     kafka_status(state_dir)
    start_postgres(state_dir) -> PgHandle      stop_postgres(handle)  postgres_status(state_dir)

Every ``start_*`` is idempotent: when the state file says the service runs and its pid is
alive (and really is that service), the existing handle is returned. ``stop_*`` on a
service that is not running only cleans leftovers. Failures raise :class:`InfraError`.

``KafkaHandle`` fields:
    bootstrap        "127.0.0.1:PORT", the value for bootstrap_servers
    port             broker (PLAINTEXT) port
    controller_port  KRaft controller listener port (same process: combined mode)
    pid              pid of the broker JVM
    cluster_id       random cluster id given to ``StorageTool format``
    version          Kafka version, e.g. "3.9.2"
    data_dir         throwaway log/metadata dir, deleted by stop
    log_file         broker log (kept after stop for post-mortems, truncated on start)
    state_dir        the state dir this instance belongs to
    config_file      (property) the broker's server.properties

``PgHandle`` fields:
    dsn              "postgresql://meridian@127.0.0.1:PORT/meridian" (trust auth, no password)
    port             TCP port on 127.0.0.1
    pid              pid of the postmaster
    user, database   application role and database (both "meridian"; the role owns the db)
    superuser        bootstrap superuser ("postgres")
    data_dir         throwaway cluster dir, deleted by stop
    socket_dir       unix socket dir (psql -h SOCKET_DIR), deleted by stop
    work_dir         parent of data_dir and socket_dir, deleted by stop
    log_file         server log (kept after stop, truncated on start)
    bindir           PostgreSQL binaries used
    state_dir        the state dir this instance belongs to

Layout of the state dir (default ``<repo>/.local/infra``, env ``MERIDIAN_INFRA_DIR``)::

    state.json                 {"kafka": {...KafkaHandle}, "postgres": {...PgHandle}}
    kafka/server.properties    kafka/kafka.log    kafka/data/ (throwaway)
    postgres/postgres.log      postgres/work/{data,run}/ (throwaway)

The Kafka jars are not a tarball download (only package registries are reachable): Maven
resolves ``scripts/kafka/pom.xml`` into ``$MERIDIAN_CACHE_DIR/kafka-<version>/libs``
(default ``~/.cache/meridian``) once; a marker file makes later starts skip Maven.

Other environment knobs: ``MERIDIAN_AUTO_INSTALL=1`` lets a root run ``apt-get install
postgresql`` when the server binaries are missing; ``MERIDIAN_PG_BINDIR`` picks the
PostgreSQL binaries explicitly.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "KAFKA_VERSION",
    "InfraError",
    "KafkaHandle",
    "PgHandle",
    "default_state_dir",
    "kafka_status",
    "main",
    "postgres_status",
    "start_kafka",
    "start_postgres",
    "stop_kafka",
    "stop_postgres",
]

# Latest 3.9 patch release on Maven Central. Keep in sync with scripts/kafka/pom.xml
# (the script passes -Dkafka.version, so the pom's value is only a default).
KAFKA_VERSION = "3.9.2"

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
KAFKA_POM = SCRIPT_DIR / "kafka" / "pom.xml"
DEFAULT_STATE_DIR = REPO_ROOT / ".local" / "infra"

PG_USER = "meridian"
PG_DATABASE = "meridian"
PG_SUPERUSER = "postgres"
PG_OS_USER = "postgres"  # PostgreSQL refuses to run as root; Debian's package creates this user

HOST = "127.0.0.1"
KAFKA_START_TIMEOUT = 90.0  # cold JVM on a busy 2-core CI machine; typically ~3 s
PG_START_TIMEOUT = 60.0
PORT_ATTEMPTS = 3  # a "free" port can be grabbed by someone else before we bind it

# Modest heap: a test broker holds a few MB of data. G1 + ExitOnOutOfMemoryError like the
# official kafka-run-class.sh, so an OOM kills the broker instead of leaving a zombie JVM.
KAFKA_JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# StorageTool runs for ~1 s: C1 only and serial GC start faster.
KAFKA_TOOL_JVM_OPTS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

JAVA_MISSING = "Java 17 is required to run the Kafka broker: install openjdk-17-jre-headless"
MAVEN_MISSING = (
    "Maven is required (once) to fetch the Kafka broker jars from Maven Central: install maven"
)
PG_MISSING = (
    "PostgreSQL server binaries (initdb, postgres) were not found: run "
    "`apt-get update && apt-get install -y postgresql` as root "
    "(or set MERIDIAN_AUTO_INSTALL=1 and run this as root to do it automatically)"
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_NOT_RUNNING = 3  # LSB convention for "status: program is not running"


class InfraError(Exception):
    """A failure with a message meant for a human; the CLI prints it and exits 1."""


class _PortInUseError(InfraError):
    """The port we picked was taken between choosing and binding it: worth a retry."""


def _log(message: str) -> None:
    print(f"localinfra: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- handles


@dataclass(frozen=True)
class KafkaHandle:
    """A running single-node KRaft broker (fields documented in the module docstring)."""

    bootstrap: str
    port: int
    controller_port: int
    pid: int
    cluster_id: str
    version: str
    data_dir: Path
    log_file: Path
    state_dir: Path

    @property
    def config_file(self) -> Path:
        return self.state_dir / "kafka" / "server.properties"


@dataclass(frozen=True)
class PgHandle:
    """A running PostgreSQL server (fields documented in the module docstring)."""

    dsn: str
    port: int
    pid: int
    user: str
    database: str
    superuser: str
    data_dir: Path
    socket_dir: Path
    work_dir: Path
    log_file: Path
    bindir: Path
    state_dir: Path


_H = TypeVar("_H", KafkaHandle, PgHandle)


def _handle_to_json(handle: KafkaHandle | PgHandle) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(handle).items()}


def _handle_from_json(cls: type[_H], data: dict[str, Any]) -> _H:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        value = data[f.name]
        kwargs[f.name] = Path(value) if f.type in ("Path", Path) else value
    return cls(**kwargs)


# --------------------------------------------------------------------------- state


def default_state_dir() -> Path:
    """``$MERIDIAN_INFRA_DIR`` or ``<repo>/.local/infra`` (relative to this script)."""
    env = os.environ.get("MERIDIAN_INFRA_DIR")
    return Path(env).expanduser().resolve() if env else DEFAULT_STATE_DIR


def _cache_root() -> Path:
    env = os.environ.get("MERIDIAN_CACHE_DIR")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "meridian"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive flock on ``path``.

    flock (not fcntl record locks) because it also excludes threads of one process
    (``up`` starts both services in threads) and concurrent CLI/pytest runs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_state(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / "state.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InfraError(f"unreadable state file {state_dir / 'state.json'}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _write_service_state(state_dir: Path, service: str, value: dict[str, Any] | None) -> None:
    """Read-modify-write one service's entry; atomic so a crash never leaves half a file."""
    with _locked(state_dir / "state.lock"):
        state = _read_state(state_dir)
        if value is None:
            state.pop(service, None)
        else:
            state[service] = value
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=state_dir)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide `status` from other users
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, state_dir / "state.json")


def _load_handle(state_dir: Path, service: str, cls: type[_H]) -> _H | None:
    entry = _read_state(state_dir).get(service)
    if not isinstance(entry, dict):
        return None
    try:
        return _handle_from_json(cls, entry)
    except (KeyError, TypeError):
        return None  # written by an older/newer version of this script: treat as stale


# --------------------------------------------------------------------------- processes

# Children started by this process. Keeping the Popen objects lets us reap them (a killed
# but unreaped child is a zombie that still answers kill(pid, 0)) and avoids Popen's
# "subprocess is still running" ResourceWarning when pytest garbage-collects them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _pid_alive(pid: int, needle: str | None = None) -> bool:
    """Is ``pid`` a live process whose command line contains ``needle``?

    The needle guards against pid reuse: after a reboot the pid in a stale state file may
    belong to an unrelated process, which we must neither report as ours nor kill.
    """
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (postgres started by root, status as a user)
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return True  # no procfs (macOS): kill(pid, 0) is all we have
    try:
        # A zombie (e.g. reparented to a PID 1 that never reaps) is dead for our purposes.
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        if needle is not None:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            return needle in cmdline
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except PermissionError:
        return True
    return True


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere).

    Needed for a last-resort SIGKILL of PostgreSQL: its children call setsid(), so they
    are not in the postmaster's process group and killpg() would miss them.
    """
    children = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat_file.parent.name))
    return children


def _wait_gone(pid: int, needle: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid, needle):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid, needle)


def _terminate(
    pid: int, needle: str | None, steps: Sequence[tuple[signal.Signals, float]], name: str
) -> None:
    """Send each (signal, grace seconds) in turn until the process is gone, then SIGKILL.

    The final SIGKILL also hits the direct children, so PostgreSQL backends die with their
    postmaster instead of lingering until they notice it is gone.
    """
    for sig, grace in steps:
        if not _pid_alive(pid, needle):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, needle, grace):
            break
    else:
        if _pid_alive(pid, needle):
            _log(f"{name} (pid {pid}) ignored {steps[-1][0].name}; sending SIGKILL")
            for victim in (pid, *_child_pids(pid)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(victim, signal.SIGKILL)
            if not _wait_gone(pid, needle, 10.0):
                raise InfraError(f"could not kill {name} (pid {pid})")
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def _spawn(
    cmd: Sequence[str],
    log_file: Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running service detached from our terminal, output to ``log_file``.

    ``start_new_session`` puts it in its own session: Ctrl-C or closing the terminal that ran
    ``localinfra.py up`` must not take the service down with it.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            **_user_kwargs(user),
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _user_kwargs(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None or user.pw_uid == os.geteuid():
        return {}
    # Popen's own setuid (not `runuser`) so the pid we get is the service itself.
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, preceded by its first error lines.

    A dying broker logs dozens of shutdown lines after the actual cause, so a plain tail
    often hides it.
    """
    try:
        all_lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    errors = [line for line in all_lines[:-lines] if _ERROR_LINE.search(line)][:10]
    head = ["(first errors)", *errors, "(last lines)"] if errors else []
    return "\n".join([*head, *all_lines[-lines:]])


_ERROR_LINE = re.compile(r"\b(ERROR|FATAL|PANIC)\b|Exception")


def _free_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (all distinct: sockets held until the end)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _with_port_retries(start: Callable[[], _H], name: str) -> _H:
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return start()
        except _PortInUseError:
            if attempt == PORT_ATTEMPTS:
                raise
            _log(f"{name}: picked port was taken meanwhile, retrying with new ports")
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- kafka


def _java() -> str:
    """Path of a Java >= 17 runtime (JAVA_HOME first, like kafka-run-class.sh)."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else None
    if not java or not os.access(java, os.X_OK):
        java = shutil.which("java")
    if not java:
        raise InfraError(JAVA_MISSING)
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise InfraError(f"{JAVA_MISSING} (could not parse `java -version`: {out.strip()!r})")
    major = int(match[1]) if match[1] != "1" else int(match[2] or 0)  # "1.8.0" is Java 8
    if major < 17:
        raise InfraError(f"{JAVA_MISSING} (found Java {major} at {java})")
    return java


def _kafka_libs(version: str) -> Path:
    """Directory with every jar the broker needs; runs Maven only when not cached yet.

    The marker holds a fingerprint of the pom and version, so editing the pom re-resolves.
    Resolution goes to a temporary dir renamed into place, under a lock, so a concurrent or
    interrupted run never sees half a classpath.
    """
    cache = _cache_root() / f"kafka-{version}"
    libs = cache / "libs"
    marker = libs / ".complete"
    try:
        pom = KAFKA_POM.read_bytes()
    except OSError as exc:
        raise InfraError(f"missing {KAFKA_POM}: {exc}") from exc
    fingerprint = hashlib.sha256(pom + version.encode()).hexdigest()[:16]

    def cached() -> bool:
        try:
            return marker.read_text().strip() == fingerprint
        except OSError:
            return False

    if cached():
        return libs
    with _locked(cache / ".lock"):
        if cached():
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise InfraError(MAVEN_MISSING)
        tmp = cache / f"libs.tmp-{os.getpid()}-{threading.get_ident()}"
        _rmtree(tmp)
        cmd = [
            mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(KAFKA_POM),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-Dkafka.version={version}", f"-DoutputDirectory={tmp}",
        ]  # fmt: skip
        _log(f"resolving Kafka {version} jars with Maven into {libs} (first run only)")
        proc = subprocess.run(
            cmd, cwd=KAFKA_POM.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, check=False,
        )  # fmt: skip
        broker_jar = tmp / f"kafka_2.13-{version}.jar"
        if proc.returncode != 0 or not broker_jar.is_file():
            _rmtree(tmp)
            tail = "\n".join(proc.stdout.splitlines()[-40:])
            raise InfraError(
                f"Maven failed to resolve Kafka {version} (exit {proc.returncode}):\n"
                f"$ {' '.join(cmd)}\n{tail}"
            )
        (tmp / ".complete").write_text(fingerprint + "\n")
        _rmtree(libs)
        os.replace(tmp, libs)
    return libs


def _kafka_cluster_id() -> str:
    """Same format as Kafka's Uuid.randomUuid(): url-safe base64 of 16 bytes, no padding.

    Kafka avoids ids starting with '-' (they look like CLI flags), so do we.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _kafka_server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    # Static quorum (controller.quorum.voters) rather than 3.9's new dynamic quorum
    # (--standalone + controller.quorum.bootstrap.servers): equivalent for one node, and the
    # long-standing, best-tested code path.
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "3",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        # 50 partitions by default: creating them makes a test's first consumer group slow.
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "group.initial.rebalance.delay.ms": "0",
        # 2-core machines: the defaults (3 network, 8 io threads) only add contention.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


_BROKER_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
"""

_TOOLS_LOG4J = """\
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _kafka_metadata(port: int, timeout: float) -> tuple[str | None, list[tuple[int, str, int]]]:
    """One Metadata v4 request (no topics) over the Kafka wire protocol, stdlib only.

    Returns (cluster_id, [(node_id, host, port), ...]). In KRaft the broker's listener
    is bound (so TCP connects succeed) before request processing is enabled, which only
    happens once the broker is registered and unfenced; a real answer is what "ready" means.
    v4 rather than v0/v1: Kafka 4.0 dropped the oldest request versions (KIP-896), and v4
    is, as far as we know, its new floor for Metadata; bump it if an upgrade breaks this.
    """
    client_id = b"meridian-localinfra"
    correlation_id = 1
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    body = struct.pack(">ib", 0, 0)  # topics: empty array (not null = all); no auto-create
    request = header + body
    with socket.create_connection((HOST, port), timeout=timeout) as conn:
        conn.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(conn, 4))
        payload = _recv_exact(conn, size)

    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, payload, pos)
        pos += struct.calcsize(fmt)
        return value

    def take_str() -> str | None:
        nonlocal pos
        length = take(">h")
        if length < 0:
            return None
        value = payload[pos : pos + length].decode()
        pos += length
        return value

    if take(">i") != correlation_id:
        raise ConnectionError("unexpected correlation id")
    take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(take(">i")):
        node_id = take(">i")
        host = take_str() or ""
        broker_port = take(">i")
        take_str()  # rack
        brokers.append((node_id, host, broker_port))
    cluster_id = take_str()
    return cluster_id, brokers


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def kafka_status(state_dir: Path | None = None) -> KafkaHandle | None:
    """The running broker of ``state_dir``, or None."""
    state_dir = (state_dir or default_state_dir()).resolve()
    handle = _load_handle(state_dir, "kafka", KafkaHandle)
    if handle and _pid_alive(handle.pid, str(handle.config_file)):
        return handle
    return None


def start_kafka(
    state_dir: Path | None = None,
    *,
    version: str = KAFKA_VERSION,
    timeout: float = KAFKA_START_TIMEOUT,
) -> KafkaHandle:
    """Start (or return the already running) single-node KRaft broker of ``state_dir``."""
    state_dir = (state_dir or default_state_dir()).resolve()
    with _locked(state_dir / "kafka.lock"):
        running = kafka_status(state_dir)
        if running:
            return running
        _cleanup_kafka(state_dir, _load_handle(state_dir, "kafka", KafkaHandle))
        java = _java()
        libs = _kafka_libs(version)
        return _with_port_retries(
            lambda: _start_kafka_once(state_dir, java, libs, version, timeout), "kafka"
        )


def _start_kafka_once(
    state_dir: Path, java: str, libs: Path, version: str, timeout: float
) -> KafkaHandle:
    kafka_dir = state_dir / "kafka"
    data_dir = kafka_dir / "data"
    _rmtree(data_dir)
    kafka_dir.mkdir(parents=True, exist_ok=True)
    port, controller_port = _free_ports(2)
    cluster_id = _kafka_cluster_id()
    handle = KafkaHandle(
        bootstrap=f"{HOST}:{port}",
        port=port,
        controller_port=controller_port,
        pid=0,
        cluster_id=cluster_id,
        version=version,
        data_dir=data_dir,
        log_file=kafka_dir / "kafka.log",
        state_dir=state_dir,
    )
    handle.config_file.write_text(_kafka_server_properties(port, controller_port, data_dir))
    (kafka_dir / "log4j.properties").write_text(_BROKER_LOG4J)
    (kafka_dir / "tools-log4j.properties").write_text(_TOOLS_LOG4J)
    classpath = f"{libs}/*"

    fmt = subprocess.run(
        [
            java, *KAFKA_TOOL_JVM_OPTS,
            f"-Dlog4j.configuration=file:{kafka_dir / 'tools-log4j.properties'}",
            "-cp", classpath, "kafka.tools.StorageTool", "format",
            "--cluster-id", cluster_id, "--config", str(handle.config_file),
        ],
        cwd=kafka_dir, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if fmt.returncode != 0:
        raise InfraError(
            f"kafka storage format failed (exit {fmt.returncode}):\n{fmt.stdout}{fmt.stderr}"
        )

    proc = _spawn(
        [
            java, *KAFKA_JVM_OPTS,
            f"-Dlog4j.configuration=file:{kafka_dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={kafka_dir}",
            "-cp", classpath, "kafka.Kafka", str(handle.config_file),
        ],
        handle.log_file,
        cwd=kafka_dir,
    )  # fmt: skip
    handle = replace(handle, pid=proc.pid)
    try:
        _wait_kafka_ready(handle, timeout)
    except BaseException:
        _terminate(proc.pid, None, [(signal.SIGKILL, 5.0)], "kafka")
        _rmtree(data_dir)
        raise
    _write_service_state(state_dir, "kafka", _handle_to_json(handle))
    return handle


def _wait_kafka_ready(handle: KafkaHandle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not _pid_alive(handle.pid):
            log = _tail(handle.log_file)
            error = _PortInUseError if "Address already in use" in log else InfraError
            raise error(f"kafka broker exited during startup; tail of {handle.log_file}:\n{log}")
        try:
            cluster_id, brokers = _kafka_metadata(handle.port, timeout=2.0)
        except (OSError, struct.error, UnicodeDecodeError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            if cluster_id != handle.cluster_id:
                # Someone else answers on "our" port: it was taken between pick and bind.
                raise _PortInUseError(f"port {handle.port} answered with cluster id {cluster_id}")
            if any(p == handle.port for _, _, p in brokers):
                return
            last_error = f"metadata lists no broker yet: {brokers}"
        time.sleep(0.2)
    raise InfraError(
        f"kafka broker not ready after {timeout:.0f}s ({last_error}); "
        f"tail of {handle.log_file}:\n{_tail(handle.log_file)}"
    )


def stop_kafka(handle: KafkaHandle | None = None, *, state_dir: Path | None = None) -> bool:
    """Stop the broker (``handle``, or the one recorded in ``state_dir``) and delete its data.

    SIGTERM lets the broker shut down cleanly (~2 s); SIGKILL after 30 s. Returns whether a
    running broker was stopped; stopping a stopped broker only cleans up.
    """
    state_dir = (handle.state_dir if handle else state_dir or default_state_dir()).resolve()
    with _locked(state_dir / "kafka.lock"):
        recorded = _load_handle(state_dir, "kafka", KafkaHandle)
        handle = handle or recorded
        if handle is None:
            return False
        was_running = _pid_alive(handle.pid, str(handle.config_file))
        if was_running:
            _terminate(handle.pid, str(handle.config_file), [(signal.SIGTERM, 30.0)], "kafka")
        _cleanup_kafka(state_dir, handle)
        if recorded is not None and recorded.pid == handle.pid:
            _write_service_state(state_dir, "kafka", None)
        return was_running


def _cleanup_kafka(state_dir: Path, handle: KafkaHandle | None) -> None:
    _rmtree(handle.data_dir if handle else state_dir / "kafka" / "data")


# --------------------------------------------------------------------------- postgres


def _find_pg_bindir() -> Path | None:
    """$MERIDIAN_PG_BINDIR, else the newest Debian /usr/lib/postgresql/N/bin, else PATH."""
    env = os.environ.get("MERIDIAN_PG_BINDIR")
    if env:
        return Path(env)
    debian = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    if debian:
        return debian[-1]
    initdb = shutil.which("initdb")  # other distros, Homebrew: binaries on PATH
    return Path(initdb).parent if initdb else None


def _pg_bindir() -> Path:
    bindir = _find_pg_bindir()
    if bindir and (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
        return bindir
    if bindir is None and os.environ.get("MERIDIAN_AUTO_INSTALL") == "1" and os.geteuid() == 0:
        _log("PostgreSQL missing: apt-get install -y postgresql (MERIDIAN_AUTO_INSTALL=1)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "postgresql"],
        ):
            proc = subprocess.run(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                tail = "\n".join(proc.stdout.splitlines()[-30:])
                raise InfraError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
        bindir = _find_pg_bindir()
        if bindir:
            return bindir
    raise InfraError(PG_MISSING)


def _pg_os_user() -> pwd.struct_passwd | None:
    """The user to run initdb/postgres as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise InfraError(
            f"running as root, but PostgreSQL refuses to run as root and there is no "
            f"'{PG_OS_USER}' OS user to run it as (Debian's postgresql package creates it)"
        ) from None


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Can ``user`` reach ``path``, i.e. has search permission on it and every ancestor?"""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for p in (path, *path.parents):
        try:
            st = p.stat()
        except OSError:
            return False
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


# A unix socket path is limited to 107 bytes (sun_path); postgres adds "/.s.PGSQL.NNNNN.lock".
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535.lock")


def _pg_work_dir(state_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """Where the cluster and socket live: ``<state>/postgres/work`` when possible.

    Falls back to a private dir under the system temp dir when the ``postgres`` user could
    not reach the state dir (e.g. pytest's /tmp/pytest-of-root is mode 0700) or the socket
    path would exceed the unix socket length limit.
    """
    work = state_dir / "postgres" / "work"
    work.parent.mkdir(parents=True, exist_ok=True)
    fits = len(str(work / "run")) <= _MAX_SOCKET_DIR_LEN
    if fits and (user is None or _traversable_by(work.parent, user)):
        _rmtree(work)
        work.mkdir(parents=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="meridian-pg-"))
    if user is not None:
        os.chown(work, user.pw_uid, user.pw_gid)
    return work


def postgres_status(state_dir: Path | None = None) -> PgHandle | None:
    """The running PostgreSQL of ``state_dir``, or None."""
    state_dir = (state_dir or default_state_dir()).resolve()
    handle = _load_handle(state_dir, "postgres", PgHandle)
    if handle and _pid_alive(handle.pid, str(handle.data_dir)):
        return handle
    return None


def start_postgres(state_dir: Path | None = None, *, timeout: float = PG_START_TIMEOUT) -> PgHandle:
    """Start (or return the already running) throwaway PostgreSQL of ``state_dir``."""
    state_dir = (state_dir or default_state_dir()).resolve()
    with _locked(state_dir / "postgres.lock"):
        running = postgres_status(state_dir)
        if running:
            return running
        stale = _load_handle(state_dir, "postgres", PgHandle)
        if stale:
            _cleanup_postgres(stale)
        bindir = _pg_bindir()
        user = _pg_os_user()
        return _with_port_retries(
            lambda: _start_postgres_once(state_dir, bindir, user, timeout), "postgres"
        )


def _pg_env(user: pwd.struct_passwd | None) -> dict[str, str]:
    # Drop PG* variables (PGHOST, PGOPTIONS, PGSSLMODE, ...) that would redirect our tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if user is not None:
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    return env


def _start_postgres_once(
    state_dir: Path, bindir: Path, user: pwd.struct_passwd | None, timeout: float
) -> PgHandle:
    work = _pg_work_dir(state_dir, user)
    data_dir, socket_dir = work / "data", work / "run"
    socket_dir.mkdir(mode=0o700)
    if user is not None:
        os.chown(socket_dir, user.pw_uid, user.pw_gid)
    (port,) = _free_ports(1)
    handle = PgHandle(
        dsn=f"postgresql://{PG_USER}@{HOST}:{port}/{PG_DATABASE}",
        port=port,
        pid=0,
        user=PG_USER,
        database=PG_DATABASE,
        superuser=PG_SUPERUSER,
        data_dir=data_dir,
        socket_dir=socket_dir,
        work_dir=work,
        log_file=state_dir / "postgres" / "postgres.log",
        bindir=bindir,
        state_dir=state_dir,
    )
    env = _pg_env(user)
    try:
        # --no-sync and C locale: a throwaway cluster needs neither durability nor ICU
        # collation, and both make initdb noticeably faster.
        init = subprocess.run(
            [
                str(bindir / "initdb"), "-D", str(data_dir), "-U", PG_SUPERUSER,
                "--auth-local=trust", "--auth-host=trust", "-E", "UTF8", "--locale=C",
                "--no-sync", "--no-instructions",
            ],
            cwd=work, env=env, capture_output=True, text=True, check=False,
            **_user_kwargs(user),
        )  # fmt: skip
        if init.returncode != 0:
            raise InfraError(f"initdb failed (exit {init.returncode}):\n{init.stdout}{init.stderr}")
        proc = _spawn(
            [
                str(bindir / "postgres"), "-D", str(data_dir),
                "-c", f"listen_addresses={HOST}", "-c", f"port={port}",
                "-c", f"unix_socket_directories={socket_dir}",
                # Test speed over durability: the cluster is deleted on stop anyway.
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            ],
            handle.log_file, cwd=work, env=env, user=user,
        )  # fmt: skip
        handle = replace(handle, pid=proc.pid)
        _wait_postgres_ready(handle, timeout)
        _create_app_role_and_db(handle, env)
    except BaseException:
        if handle.pid:
            _terminate(handle.pid, None, [(signal.SIGQUIT, 5.0)], "postgres")
        _cleanup_postgres(handle)
        raise
    _write_service_state(state_dir, "postgres", _handle_to_json(handle))
    return handle


def _wait_postgres_ready(handle: PgHandle, timeout: float) -> None:
    """Wait for postmaster.pid to say "ready", the same signal ``pg_ctl start -w`` uses."""
    pidfile = handle.data_dir / "postmaster.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(handle.pid):
            log = _tail(handle.log_file)
            error = (
                _PortInUseError
                if "could not bind" in log or "already in use" in log
                else InfraError
            )
            raise error(f"postgres exited during startup; tail of {handle.log_file}:\n{log}")
        with contextlib.suppress(OSError):
            lines = pidfile.read_text().splitlines()
            if len(lines) >= 8 and lines[0] == str(handle.pid) and lines[7].strip() == "ready":
                return
        time.sleep(0.05)
    raise InfraError(
        f"postgres not ready after {timeout:.0f}s; tail of {handle.log_file}:\n"
        f"{_tail(handle.log_file)}"
    )


def _create_app_role_and_db(handle: PgHandle, env: dict[str, str]) -> None:
    """Create the ``meridian`` role and database, connecting over TCP like the app will.

    Going through 127.0.0.1 (not the socket) also proves listen_addresses and pg_hba work.
    """
    psql = handle.bindir / "psql"
    cmd = [
        str(psql) if psql.is_file() else "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
        "-h", HOST, "-p", str(handle.port), "-U", handle.superuser, "-d", "postgres",
        "-c", f'CREATE ROLE "{handle.user}" LOGIN CREATEDB',
        "-c", f'CREATE DATABASE "{handle.database}" OWNER "{handle.user}"',
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InfraError(
            f"creating role/database failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )


def stop_postgres(handle: PgHandle | None = None, *, state_dir: Path | None = None) -> bool:
    """Stop PostgreSQL (``handle``, or the one recorded in ``state_dir``) and delete its data.

    Not SIGTERM: for the postmaster that is a "smart" shutdown which waits for every client
    to disconnect, so a test's leaked connection pool would hang it. SIGINT is the "fast"
    shutdown (terminates sessions, then shuts down cleanly); SIGQUIT is "immediate"; SIGKILL
    of it and its children is the last resort. Returns whether it was running.
    """
    state_dir = (handle.state_dir if handle else state_dir or default_state_dir()).resolve()
    with _locked(state_dir / "postgres.lock"):
        recorded = _load_handle(state_dir, "postgres", PgHandle)
        handle = handle or recorded
        if handle is None:
            return False
        needle = str(handle.data_dir)
        was_running = _pid_alive(handle.pid, needle)
        if was_running:
            steps = [(signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0)]
            _terminate(handle.pid, needle, steps, "postgres")
        _cleanup_postgres(handle)
        if recorded is not None and recorded.pid == handle.pid:
            _write_service_state(state_dir, "postgres", None)
        return was_running


def _cleanup_postgres(handle: PgHandle) -> None:
    _rmtree(handle.work_dir)


# --------------------------------------------------------------------------- CLI

SERVICES = ("kafka", "postgres")


def _describe(service: str, handle: KafkaHandle | PgHandle) -> str:
    if isinstance(handle, KafkaHandle):
        return (
            f"{service}: running at {handle.bootstrap} (pid {handle.pid}, Kafka {handle.version})"
        )
    return f"{service}: running at {handle.dsn} (pid {handle.pid}, socket dir {handle.socket_dir})"


def _status(service: str, state_dir: Path) -> KafkaHandle | PgHandle | None:
    return kafka_status(state_dir) if service == "kafka" else postgres_status(state_dir)


def _cmd_start(service: str, state_dir: Path) -> int:
    existing = _status(service, state_dir)
    if existing:
        print(f"{_describe(service, existing)} [already running]", flush=True)
        return EXIT_OK
    started = time.monotonic()
    handle = start_kafka(state_dir) if service == "kafka" else start_postgres(state_dir)
    print(
        f"{_describe(service, handle)} [started in {time.monotonic() - started:.1f}s]", flush=True
    )
    return EXIT_OK


def _cmd_stop(service: str, state_dir: Path) -> int:
    started = time.monotonic()
    stop = stop_kafka if service == "kafka" else stop_postgres
    if stop(state_dir=state_dir):
        print(f"{service}: stopped [in {time.monotonic() - started:.1f}s]", flush=True)
    else:
        print(f"{service}: not running", flush=True)
    return EXIT_OK


def _cmd_status(service: str, state_dir: Path) -> int:
    handle = _status(service, state_dir)
    if handle is None:
        print(f"{service}: not running", flush=True)
        return EXIT_NOT_RUNNING
    print(_describe(service, handle), flush=True)
    return EXIT_OK


def _run_guarded(func: Callable[[str, Path], int], service: str, state_dir: Path) -> int:
    try:
        return func(service, state_dir)
    except InfraError as exc:
        print(f"{service}: FAILED: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE


def _for_all(func: Callable[[str, Path], int], state_dir: Path, parallel: bool) -> int:
    if parallel:  # Kafka's JVM and initdb overlap nicely; `up` takes max() instead of sum()
        with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
            codes = list(pool.map(lambda s: _run_guarded(func, s, state_dir), SERVICES))
    else:
        codes = [_run_guarded(func, s, state_dir) for s in SERVICES]
    return max(codes)


def _cmd_env(state_dir: Path) -> int:
    kafka, pg = kafka_status(state_dir), postgres_status(state_dir)
    if kafka:
        print(f"export MERIDIAN_KAFKA_BOOTSTRAP={shlex.quote(kafka.bootstrap)}")
    else:
        print("localinfra: kafka is not running", file=sys.stderr)
    if pg:
        print(f"export MERIDIAN_DATABASE_URL={shlex.quote(pg.dsn)}")
    else:
        print("localinfra: postgres is not running", file=sys.stderr)
    return EXIT_OK if (kafka or pg) else EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localinfra.py",
        description="Local Kafka (KRaft) and PostgreSQL for Meridian tests, without Docker.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where state, configs and logs live (default: $MERIDIAN_INFRA_DIR or "
        "<repo>/.local/infra)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for service in SERVICES:
        p = sub.add_parser(service, help=f"manage the local {service}")
        p.add_argument("action", choices=("start", "stop", "status"))
    sub.add_parser("up", help="start kafka and postgres")
    sub.add_parser("down", help="stop kafka and postgres")
    sub.add_parser("status", help="status of kafka and postgres")
    sub.add_parser("env", help="print export lines for the running services")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).resolve()
    actions = {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status}
    try:
        if args.command in SERVICES:
            return _run_guarded(actions[args.action], args.command, state_dir)
        if args.command == "up":
            return _for_all(_cmd_start, state_dir, parallel=True)
        if args.command == "down":
            return _for_all(_cmd_stop, state_dir, parallel=True)
        if args.command == "status":
            return _for_all(_cmd_status, state_dir, parallel=False)
        return _cmd_env(state_dir)
    except InfraError as exc:
        print(f"localinfra: FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
