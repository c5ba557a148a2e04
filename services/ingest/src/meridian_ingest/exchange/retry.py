"""Which exchange errors are worth retrying, and how long to wait.

ccxt's hierarchy does the classifying: NetworkError covers rate limits (RateLimitExceeded,
DDoSProtection), 5xx and maintenance (ExchangeNotAvailable) and timeouts (RequestTimeout).
Everything else (BadSymbol, BadRequest, AuthenticationError, PermissionDenied, NotSupported)
is a mistake a retry cannot fix: it fails at once with a message that says what was wrong.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import ccxt

log = logging.getLogger(__name__)
T = TypeVar("T")


class ExchangeCallError(RuntimeError):
    """A non-retryable exchange error, or retries exhausted: names the call and the cause."""


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, ccxt.NetworkError)


@dataclass(slots=True)
class RetryPolicy:
    retries: int = 8
    base_s: float = 0.5
    max_s: float = 30.0
    rng: random.Random | None = None

    def delay(self, attempt: int) -> float:
        """Equal jitter: uniform in [cap/2, cap], cap = min(max, base * 2^attempt).

        Half the wait is guaranteed (a rate-limited client must actually slow down); the random
        half spreads replicas that failed together.
        """
        cap = min(self.max_s, self.base_s * (2 ** attempt))
        return (self.rng or random).uniform(cap / 2, cap)


class Budget:
    """Our own request budget (requests per second) on top of ccxt's limiter; 0 = none."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


class RetryStats:
    """Counts retries per error class (kept on MarketData) and reports every failed exchange
    call by kind to `on_error` (the ingest metrics): `retryable` when it is retried, `fatal`
    when it ends the call (not retryable, or retries exhausted)."""

    def __init__(self, on_error: Callable[[str], None] | None = None) -> None:
        self.retries: dict[str, int] = {}
        self.on_error = on_error

    def count(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.retries[name] = self.retries.get(name, 0) + 1
        if self.on_error is not None:
            self.on_error("retryable")

    def fatal(self) -> None:
        if self.on_error is not None:
            self.on_error("fatal")


async def call(what: str, fn: Callable[[], Awaitable[T]], policy: RetryPolicy, budget: Budget,
               stats: RetryStats | None = None) -> T:
    """Run `fn` under the budget; retry retryable errors with backoff; explain the rest."""
    attempt = 0
    while True:
        await budget.take()
        try:
            return await fn()
        except ccxt.BaseError as exc:
            if stats is not None and (not retryable(exc) or attempt >= policy.retries):
                stats.fatal()
            if not retryable(exc):
                raise ExchangeCallError(f"{what} failed: {type(exc).__name__}: "
                                        f"{_short(exc)}") from exc
            if attempt >= policy.retries:
                raise ExchangeCallError(f"{what} failed after {attempt} retries: "
                                        f"{type(exc).__name__}: {_short(exc)}") from exc
            if stats is not None:
                stats.count(exc)
            delay = policy.delay(attempt)
            log.warning("retrying exchange call", extra={
                "call": what, "error": type(exc).__name__, "attempt": attempt + 1,
                "delay_s": round(delay, 3)})
            attempt += 1
            await asyncio.sleep(delay)


def _short(exc: BaseException, limit: int = 300) -> str:
    """ccxt messages start with the exchange id and may quote a whole response; keep it short.

    Request URLs can carry signed query strings, so anything after '?' is cut.
    """
    text = str(exc).split("?", 1)[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"
