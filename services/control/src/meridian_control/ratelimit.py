"""Token buckets for the webhook: one per (name, symbol) and one for all alerts together.

Why token buckets: an alert source that misfires (a TradingView script re-triggering on every
tick, a loop in someone's bot) must not flood the risk gate with signals, while a normal burst
(a few symbols closing on the same bar) passes at once. A bucket holds at most `capacity`
tokens, refills at `capacity` per minute, and each accepted alert takes one.

Time is given (epoch ms from the app's clock), never read here: the tests drive the refill
without sleeping. The per-key buckets are bounded (least recently used dropped): the global
bucket still bounds the total when a dropped key comes back with a fresh bucket.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MINUTE_MS = 60_000
MAX_KEYS = 4096


@dataclass(slots=True)
class TokenBucket:
    """Kept in integer units of 1/MINUTE_MS token (a ms of refill at one token per minute),
    so the refill and the Retry-After are exact, with no float rounding."""

    capacity: int  # tokens when full; also the refill per minute
    units: int  # tokens x MINUTE_MS
    at_ms: int  # when `units` was last brought up to date

    @classmethod
    def full(cls, capacity: int, now_ms: int) -> TokenBucket:
        return cls(capacity, capacity * MINUTE_MS, now_ms)

    @property
    def tokens(self) -> float:
        return self.units / MINUTE_MS

    def refill(self, now_ms: int) -> None:
        elapsed = max(0, now_ms - self.at_ms)  # a clock that steps back adds nothing
        self.units = min(self.capacity * MINUTE_MS, self.units + elapsed * self.capacity)
        self.at_ms = max(self.at_ms, now_ms)

    def wait_ms(self) -> int:
        """Milliseconds until one token is there (0: one is there now)."""
        missing = MINUTE_MS - self.units
        return 0 if missing <= 0 else -(-missing // self.capacity)

    def take(self) -> None:
        self.units -= MINUTE_MS


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str  # "key" or "global"
    retry_after_s: int  # whole seconds, at least 1 (the Retry-After header)


class RateLimiter:
    """take(key, now) -> None (a token of both buckets taken) or the Refusal (none taken)."""

    def __init__(self, per_key_per_min: int, global_per_min: int,
                 max_keys: int = MAX_KEYS) -> None:
        self.per_key = per_key_per_min
        self.max_keys = max_keys
        self._global: TokenBucket | None = None
        self._global_capacity = global_per_min
        self._keys: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def _bucket(self, key: tuple[str, str], now_ms: int) -> TokenBucket:
        bucket = self._keys.get(key)
        if bucket is None:
            bucket = self._keys[key] = TokenBucket.full(self.per_key, now_ms)
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        bucket.refill(now_ms)
        return bucket

    def take(self, key: tuple[str, str], now_ms: int) -> Refusal | None:
        if self._global is None:
            self._global = TokenBucket.full(self._global_capacity, now_ms)
        total = self._global
        total.refill(now_ms)
        own = self._bucket(key, now_ms)
        for scope, bucket in (("key", own), ("global", total)):
            wait = bucket.wait_ms()
            if wait:
                return Refusal(scope, max(1, -(-wait // 1000)))
        own.take()
        total.take()
        return None
