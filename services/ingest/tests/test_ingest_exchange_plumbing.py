"""Exchange plumbing without an exchange: URL rerouting, error classes, budget, backoff."""

from __future__ import annotations

import random
import time

import ccxt
import ccxt.pro
import pytest

from meridian_common.ccxt_urls import reroute_urls
from meridian_ingest.exchange.retry import (
    Budget,
    ExchangeCallError,
    RetryPolicy,
    RetryStats,
    call,
    retryable,
)


def test_every_url_keeps_its_host_as_the_first_path_segment() -> None:
    ex = ccxt.pro.bybit()
    reroute_urls(ex, "http://127.0.0.1:9999")
    assert ex.urls["api"]["public"] == "http://127.0.0.1:9999/api.bybit.com"
    assert ex.urls["api"]["ws"]["public"]["linear"] == \
        "ws://127.0.0.1:9999/stream.bybit.com/v5/public/linear"
    ex = ccxt.pro.binance()
    reroute_urls(ex, "https://proxy.local/base/")
    assert ex.urls["api"]["fapiPublic"] == "https://proxy.local/base/fapi.binance.com/fapi/v1"
    assert ex.urls["api"]["ws"]["spot"] == "wss://proxy.local/base/stream.binance.com/ws"


@pytest.mark.parametrize(("exc", "expected"), [
    (ccxt.RateLimitExceeded("x"), True), (ccxt.DDoSProtection("x"), True),
    (ccxt.ExchangeNotAvailable("x"), True), (ccxt.RequestTimeout("x"), True),
    (ccxt.BadSymbol("x"), False), (ccxt.BadRequest("x"), False),
    (ccxt.AuthenticationError("x"), False), (ccxt.PermissionDenied("x"), False),
])
def test_only_network_family_errors_are_retried(exc: Exception, expected: bool) -> None:
    assert retryable(exc) is expected


async def test_retryable_errors_are_retried_then_succeed() -> None:
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ccxt.RateLimitExceeded("bybit {'retCode': 10006}")
        return "ok"

    stats = RetryStats()
    policy = RetryPolicy(retries=5, base_s=0.001, max_s=0.002)
    assert await call("fetch", flaky, policy, Budget(0), stats) == "ok"
    assert stats.retries == {"RateLimitExceeded": 2}


async def test_non_retryable_error_fails_at_once_naming_the_call() -> None:
    attempts = []

    async def bad() -> None:
        attempts.append(1)
        raise ccxt.BadSymbol("bybit does not have market symbol NOPE/USDT")

    with pytest.raises(ExchangeCallError, match="fetch_ohlcv NOPE failed: BadSymbol"):
        await call("fetch_ohlcv NOPE", bad, RetryPolicy(retries=5), Budget(0))
    assert len(attempts) == 1


async def test_retries_exhausted_says_so() -> None:
    async def down() -> None:
        raise ccxt.ExchangeNotAvailable("503 https://api.bybit.com/v5/market/kline?sig=secret")

    with pytest.raises(ExchangeCallError, match="after 2 retries") as info:
        await call("kline", down, RetryPolicy(retries=2, base_s=0.001, max_s=0.001), Budget(0))
    assert "secret" not in str(info.value)


def test_backoff_doubles_with_bounded_jitter() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=8.0, rng=random.Random(1))
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays)


async def test_budget_spaces_requests() -> None:
    budget = Budget(200.0)
    started = time.monotonic()
    for _ in range(21):
        await budget.take()
    assert time.monotonic() - started >= 20 / 200 * 0.9
