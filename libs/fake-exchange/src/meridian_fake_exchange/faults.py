"""Injected faults and request statistics.

Faults are counters consumed by the next requests or pushes ("the next 3 REST calls are
rate-limited"), so a test states exactly what goes wrong and when, and the same fault can be
set from another process through the admin route. Random WebSocket faults (duplicates,
reordering) use a seeded RNG so a failing run can be reproduced.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


class RestFault(Enum):
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class RestDecision:
    """What to do with one REST request: wait `delay_s`, then answer normally or with `fault`."""

    delay_s: float = 0.0
    fault: RestFault | None = None
    status: int = 503
    retry_after_s: int = 1


class TokenBucket:
    """Requests per second with a one-second burst, the shape of a venue's IP limit."""

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate limit must be > 0 requests/s, got {rate_per_s}")
        self.rate = rate_per_s
        self.capacity = max(1.0, rate_per_s)
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def seconds_until_token(self) -> float:
        return max(0.0, (1.0 - self._tokens) / self.rate)


@dataclass
class Stats:
    """Counts per (host, path): every REST request, and those answered with a fault.

    `errors` counts normal exchange error answers (bad symbol, bad interval, ...).
    """

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    rate_limited: Counter[tuple[str, str]] = field(default_factory=Counter)
    server_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    slowed: Counter[tuple[str, str]] = field(default_factory=Counter)
    ws_connections: int = 0
    ws_open: int = 0
    ws_messages: int = 0
    ws_dropped: int = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly copy (keys "host/path")."""
        def flat(counter: Counter[tuple[str, str]]) -> dict[str, int]:
            return {f"{host}/{path}": n for (host, path), n in sorted(counter.items())}

        return {
            "requests": flat(self.requests),
            "rate_limited": flat(self.rate_limited),
            "server_errors": flat(self.server_errors),
            "errors": flat(self.errors),
            "slowed": flat(self.slowed),
            "total_requests": self.total_requests,
            "ws_connections": self.ws_connections,
            "ws_open": self.ws_open,
            "ws_messages": self.ws_messages,
            "ws_dropped": self.ws_dropped,
        }

    def reset(self) -> None:
        """Zero every counter except the number of connections open right now."""
        fresh = Stats(ws_open=self.ws_open)
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))


@dataclass
class OrderFaults:
    """Faults of the private order-create endpoint, each consumed by the next create requests.

    `reject_*`: the next n authenticated creates answer retCode `reject_code` (nothing is
    recorded). `timeout_*`: the next n creates that are accepted are recorded and matched, but
    the HTTP answer is held back `timeout_delay_s` real seconds (or the connection is dropped),
    the ambiguous outcome an executor must resolve by looking the order up. `partial_*`: the
    next n accepted orders fill in `partial_pieces` equal parts, one per matching step.
    The faults are venue-agnostic: the next create on either venue (Bybit or Binance) takes
    them, so a rejection code must be the venue's own (Bybit retCode > 0, Binance code < 0).
    """

    reject_left: int = 0
    reject_code: int = 0
    reject_msg: str = ""
    reject_status: int | None = None    # Binance: the HTTP status of the answer (400)
    timeout_left: int = 0
    timeout_delay_s: float = 30.0
    timeout_drop: bool = False
    partial_left: int = 0
    partial_pieces: int = 1

    def take_reject(self) -> tuple[int, str] | None:
        if self.reject_left <= 0:
            return None
        self.reject_left -= 1
        return self.reject_code, self.reject_msg

    def take_timeout(self) -> tuple[float, bool] | None:
        if self.timeout_left <= 0:
            return None
        self.timeout_left -= 1
        return self.timeout_delay_s, self.timeout_drop

    def take_pieces(self) -> int:
        if self.partial_left <= 0:
            return 1
        self.partial_left -= 1
        return self.partial_pieces

    def clear(self) -> None:
        self.reject_left = self.timeout_left = self.partial_left = 0


@dataclass
class Faults:
    """The current fault settings; the server consults it on every request and push."""

    seed: int = 0
    rate_limit_left: int = 0
    server_error_left: int = 0
    server_error_status: int = 503
    slow_left: int = 0
    slow_seconds: float = 0.0
    bucket: TokenBucket | None = None
    drop_every: int | None = None
    duplicate_p: float = 0.0
    reorder_p: float = 0.0
    orders: OrderFaults = field(default_factory=OrderFaults)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - reproducible test faults, not crypto

    def set_rate_limit_per_s(self, rate: float | None) -> None:
        self.bucket = None if rate is None else TokenBucket(rate)

    def decide(self) -> RestDecision:
        """Consume the fault counters for one REST request (order: slow, then the answer)."""
        delay = 0.0
        if self.slow_left > 0:
            self.slow_left -= 1
            delay = self.slow_seconds
        if self.rate_limit_left > 0:
            self.rate_limit_left -= 1
            return RestDecision(delay, RestFault.RATE_LIMIT)
        if self.server_error_left > 0:
            self.server_error_left -= 1
            return RestDecision(delay, RestFault.SERVER_ERROR, self.server_error_status)
        if self.bucket is not None and not self.bucket.take():
            wait = max(1, int(self.bucket.seconds_until_token() + 0.999))
            return RestDecision(delay, RestFault.RATE_LIMIT, retry_after_s=wait)
        return RestDecision(delay)

    def chance(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p

    def clear(self) -> None:
        """Remove every injected fault (the rate limiter too); the RNG is re-seeded."""
        self.rate_limit_left = self.server_error_left = self.slow_left = 0
        self.slow_seconds = 0.0
        self.server_error_status = 503
        self.bucket = None
        self.drop_every = None
        self.duplicate_p = self.reorder_p = 0.0
        self.orders.clear()
        self.rng = random.Random(self.seed)  # noqa: S311
