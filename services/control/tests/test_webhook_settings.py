"""The webhook's settings (refused secrets never shown) and its token buckets on a given clock."""

from __future__ import annotations

import pytest

from meridian_common import config
from meridian_control.ratelimit import RateLimiter, Refusal, TokenBucket
from meridian_control.settings import ControlSettings

TOKEN = "write-token-0123456789abcdef"
READ = "read-token-fedcba9876543210"


def load(**env: str) -> ControlSettings:
    return config.load(ControlSettings, environ={"MERIDIAN_CONTROL_TOKEN": TOKEN,
                                                 "MERIDIAN_CONTROL_READ_TOKEN": READ, **env})


def test_defaults_leave_the_webhook_disabled() -> None:
    s = load()
    assert s.webhook_secret is None
    assert s.webhook_symbols == ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
    assert (s.webhook_timeframe, s.webhook_rate_per_min, s.webhook_global_rate_per_min,
            s.webhook_dedupe) == ("1h", 6, 60, 10_000)


def test_symbols_are_a_comma_list_and_the_secret_is_stripped() -> None:
    s = load(MERIDIAN_CONTROL_WEBHOOK_SYMBOLS=" BTCUSDT, SOLUSDT ,",
             MERIDIAN_CONTROL_WEBHOOK_SECRET=" whsec-0123456789abcdef\n")
    assert s.webhook_symbols == ("BTCUSDT", "SOLUSDT")
    assert s.webhook_secret is not None
    assert s.webhook_secret.get_secret_value() == "whsec-0123456789abcdef"
    assert "whsec" not in repr(s)


@pytest.mark.parametrize(("secret", "says"), [
    ("   ", "must not be empty or blank"),
    ("short-secret", "at least 16 characters"),
    (TOKEN, "must differ from MERIDIAN_CONTROL_TOKEN"),
    (READ, "must differ from MERIDIAN_CONTROL_READ_TOKEN"),
])
def test_weak_or_reused_secrets_are_refused_without_being_shown(secret: str, says: str) -> None:
    with pytest.raises(config.ConfigError, match="MERIDIAN_CONTROL_WEBHOOK_SECRET") as exc:
        load(MERIDIAN_CONTROL_WEBHOOK_SECRET=secret)
    assert says in str(exc.value)
    if secret.strip():
        assert secret not in str(exc.value)


@pytest.mark.parametrize(("env", "name"), [
    ({"MERIDIAN_CONTROL_WEBHOOK_SYMBOLS": " , "}, "MERIDIAN_CONTROL_WEBHOOK_SYMBOLS"),
    ({"MERIDIAN_CONTROL_WEBHOOK_TIMEFRAME": "1w"}, "MERIDIAN_CONTROL_WEBHOOK_TIMEFRAME"),
    ({"MERIDIAN_CONTROL_WEBHOOK_RATE_PER_MIN": "0"}, "MERIDIAN_CONTROL_WEBHOOK_RATE_PER_MIN"),
    ({"MERIDIAN_CONTROL_WEBHOOK_SECRETS": "x" * 20}, "MERIDIAN_CONTROL_WEBHOOK_SECRETS"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        load(**env)


# ------------------------------------------------------------------------------ buckets


def test_a_bucket_refills_at_its_capacity_per_minute() -> None:
    bucket = TokenBucket.full(6, 0)
    for _ in range(6):
        bucket.take()
    assert bucket.wait_ms() == 10_000
    bucket.refill(5_000)
    assert bucket.wait_ms() == 5_000
    bucket.refill(4_000)  # a clock stepping back adds nothing and takes nothing
    assert bucket.wait_ms() == 5_000
    bucket.refill(10_000_000)
    assert bucket.tokens == 6  # never above capacity


def test_the_limiter_takes_from_both_buckets_or_from_none() -> None:
    limiter = RateLimiter(per_key_per_min=2, global_per_min=3)
    a, b = ("a", "BTCUSDT"), ("b", "BTCUSDT")
    assert limiter.take(a, 0) is None
    assert limiter.take(a, 0) is None
    assert limiter.take(a, 0) == Refusal("key", 30)
    assert limiter.take(b, 0) is None  # the third global token
    assert limiter.take(b, 0) == Refusal("global", 20)
    assert limiter.take(b, 20_000) is None  # b's own bucket lost nothing to the refusal
    # b: 1 left at 0, + 2/3 by 20 s, one taken: 2/3 short of a token, 10 s at 2 per minute
    assert limiter.take(b, 20_000) == Refusal("key", 10)


def test_the_per_key_buckets_are_bounded() -> None:
    limiter = RateLimiter(per_key_per_min=1, global_per_min=1000, max_keys=2)
    for name in ("a", "b", "c"):
        assert limiter.take((name, "BTCUSDT"), 0) is None
    assert limiter.take(("c", "BTCUSDT"), 0) is not None
    assert limiter.take(("a", "BTCUSDT"), 0) is None  # evicted: a fresh bucket
