"""Liveness and readiness of one service, answered over HTTP from the metrics server's thread.

`/healthz` (liveness) asks "is the loop still making progress?": 200 while the service is
starting (a state rebuild may take minutes without polling), 200 while the loop has polled (or
rebuilt a chunk) within `stall_s`, 503 `stalled` otherwise, so an orchestrator restarts a
process that is wedged but never one that is merely busy rebuilding.

`/readyz` (readiness) asks "is the state loaded and can the service do its work?": 503
`starting` until the host has rebuilt/restored its state and subscribed, then the dependency
checks (a database `SELECT 1`, whatever a handler declares) run on the service's own event loop
(the clients they use are bound to it) with a timeout each, and any failure makes it 503
`not_ready` naming the check. Error texts are the exception's type and a short message with
URLs and passwords scrubbed: a probe body is read by people who must not see credentials.

The HTTP server runs in a thread, so both endpoints still answer when the event loop is blocked;
readiness then times out waiting for the loop and says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

Check = Callable[[], Awaitable[None]]
Phase = Literal["starting", "running", "rebuilding", "stopped"]

CHECK_TIMEOUT_S = 2.0
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_PASSWORD = re.compile(r"(?i)(password|passwd|pwd)(\s*[=:]\s*)\S+")
_MAX_ERROR = 160


@dataclass(frozen=True, slots=True)
class Answer:
    """One probe's answer: the HTTP status and the JSON body of the contract."""

    status: int
    service: str
    state: Literal["ok", "starting", "stalled", "not_ready"]
    checks: Mapping[str, str]

    def body(self) -> bytes:
        return json.dumps({"service": self.service, "status": self.state,
                           "checks": dict(self.checks)}).encode()


class CheckFailed(Exception):
    """A check failure already described (type and scrubbed message): the probe shows its text
    as it is. A handler's own check may raise it too."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def describe(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """An error as a probe shows it: type and a short message, never a URL or a password
    (drivers put the DSN in some messages; `secrets` are removed wherever they appear)."""
    text = str(exc)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _PASSWORD.sub(r"\1\2***", _URL.sub("<url>", text)).strip()
    if len(text) > _MAX_ERROR:
        text = text[: _MAX_ERROR - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Health:
    """What the probes answer. The loop side (`beat`, `phase`) is written by the host's task;
    `live` and `ready` are called from the HTTP server's threads."""

    def __init__(self, service: str, *, stall_s: float = 60.0,
                 checks: Mapping[str, Check] | None = None,
                 check_timeout_s: float = CHECK_TIMEOUT_S,
                 on_ready: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if stall_s <= 0:
            raise ValueError("stall_s must be > 0")
        self.service = service
        self.stall_s = stall_s
        self.check_timeout_s = check_timeout_s
        self.checks: dict[str, Check] = dict(checks or {})
        self.on_ready = on_ready
        self._phase: Phase = "starting"
        self._reason = "loading state"
        self._last_beat: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._clock = clock  # monotonic seconds; tests give a settable one

    # -- written by the service's loop ---------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the dependency checks run on (their clients belong to it)."""
        self._loop = loop

    def beat(self) -> None:
        """The loop made progress (polled, or rebuilt a chunk of state)."""
        self._last_beat = self._clock()

    def set_phase(self, phase: Phase, reason: str = "") -> None:
        with self._lock:
            self._phase = phase
            self._reason = reason or phase
        if phase == "running":
            self.beat()  # the stall clock starts when the loop does
        if phase != "running" and self.on_ready is not None:
            self.on_ready(False)

    @property
    def phase(self) -> Phase:
        return self._phase

    # -- answered from any thread -------------------------------------------------------------

    def live(self) -> Answer:
        phase, last = self._phase, self._last_beat
        if phase == "starting":
            return Answer(200, self.service, "starting", {"loop": "starting"})
        if phase == "stopped":
            return Answer(503, self.service, "stalled", {"loop": "stopped"})
        age = self._clock() - (last if last is not None else 0.0)
        if age > self.stall_s:
            return Answer(503, self.service, "stalled", {
                "loop": f"no progress for {age:.0f} s (limit {self.stall_s:g} s)"})
        return Answer(200, self.service, "ok", {"loop": "ok"})

    def ready(self) -> Answer:
        """Readiness, running the checks on the service's loop (blocks this thread up to the
        check timeout plus a second)."""
        phase, reason = self._phase, self._reason
        if phase != "running":
            state = "starting" if phase == "starting" else "not_ready"
            return Answer(503, self.service, state, {"state": reason})
        loop = self._loop
        if loop is None or loop.is_closed():
            results = {"state": "ok"} if not self.checks else {"loop": "not running"}
        else:
            try:
                results = asyncio.run_coroutine_threadsafe(self.evaluate(), loop).result(
                    self.check_timeout_s + 1.0)
            except (concurrent.futures.TimeoutError, TimeoutError):
                results = {"loop": "TimeoutError: the event loop did not answer"}
        return self._answer(results)

    async def evaluate(self) -> dict[str, str]:
        """Run every check (concurrently, each with the timeout) on the current loop; report
        the outcome to `on_ready` (the `meridian_ready` gauge)."""
        results: dict[str, str] = {"state": "ok" if self._phase == "running" else self._reason}
        names = list(self.checks)
        outcomes = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        results.update(zip(names, outcomes, strict=True))
        if self.on_ready is not None:
            self.on_ready(all(v == "ok" for v in results.values()))
        return results

    async def _run(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self.check_timeout_s)
        except TimeoutError:
            return f"TimeoutError: no answer within {self.check_timeout_s:g} s"
        except CheckFailed as exc:
            return exc.text
        except Exception as exc:  # any failure is a failing check, reported, not raised
            return describe(exc)
        return "ok"

    def _answer(self, results: Mapping[str, str]) -> Answer:
        if all(v == "ok" for v in results.values()):
            return Answer(200, self.service, "ok", results)
        return Answer(503, self.service, "not_ready", results)


class LoopHeartbeat:
    """Liveness for a process without a ServiceHost (ingest): a timer on its event loop beats
    every second, so `/healthz` reports a loop that stopped turning, and the service is ready
    once the loop has run (nothing to rebuild)."""

    def __init__(self, health: Health, loop: asyncio.AbstractEventLoop,
                 every_s: float = 1.0) -> None:
        self.health = health
        self.loop = loop
        self.every_s = every_s
        health.attach(loop)
        loop.call_soon(self._first)

    def _first(self) -> None:
        self.health.set_phase("running")
        if self.health.on_ready is not None:
            self.health.on_ready(True)
        self._beat()

    def _beat(self) -> None:
        self.health.beat()
        self.loop.call_later(self.every_s, self._beat)


def database_check(url: str, timeout_s: float = CHECK_TIMEOUT_S) -> Check:
    """`SELECT 1` over a fresh connection (asyncpg) with a connect timeout: a service whose
    database is unreachable is not ready. The URL (with its password) never reaches an error
    text: the password is scrubbed from whatever the driver says."""
    from meridian_common.db.engine import conninfo

    dsn = conninfo(url)
    password = _password(url)

    async def check() -> None:
        import asyncpg

        try:
            conn = await asyncpg.connect(dsn, timeout=timeout_s)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close(timeout=timeout_s)
        except Exception as exc:
            raise CheckFailed(describe(exc, (password,))) from None

    return check


def engine_check(engine: AsyncEngine) -> Check:
    """`SELECT 1` through a service's own SQLAlchemy async engine (its pool): for a handler
    that wants its `health_checks()` to test the connection it really uses."""
    password = engine.url.password or ""

    async def check() -> None:
        from sqlalchemy import text

        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise CheckFailed(describe(exc, (str(password),))) from None

    return check


def _password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password or ""
    except Exception:  # a malformed URL fails the connect itself; nothing to scrub
        return ""
