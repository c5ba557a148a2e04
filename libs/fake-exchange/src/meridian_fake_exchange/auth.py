"""Bybit v5 request signing, checked the way the venue checks it.

A signed request carries X-BAPI-API-KEY, X-BAPI-TIMESTAMP (ms), X-BAPI-RECV-WINDOW (ms,
default 5000) and X-BAPI-SIGN = hex HMAC-SHA256(secret, timestamp + api_key + recv_window +
payload), the payload being the query string of a GET or the raw JSON body of a POST. The
timestamp must satisfy  now - recv_window <= timestamp < now + 1000  where now is the FAKE
clock, as Bybit measures it against its own clock: a client must take its time from the
server (ccxt: `load_time_difference()` / option `adjustForTimeDifference`), and again after
the fake clock jumps. Both tolerances are real durations (network latency is real): while the
clock runs faster than real time (speed s > 1) they are multiplied by s, otherwise 1 ms of
latency at 3600x would already be 3.6 s of fake time.

Secrets stay in this module: errors quote the signed string (as Bybit's "error sign!" message
does) but never the secret, and nothing is logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import unquote

from meridian_fake_exchange.venue import ParamError

#: the default account of a FakeExchange (any string works; these are for tests only)
TEST_API_KEY = "FAKEX-TEST-KEY"
TEST_API_SECRET = "FAKEX-TEST-SECRET-not-a-real-secret"  # noqa: S105 - a public test key
DEFAULT_RECV_WINDOW = 5000
FUTURE_TOLERANCE_MS = 1000
BAD_KEY = 10003
BAD_SIGN = 10004
BAD_TIME = 10002


def sign(secret: str, timestamp: int | str, api_key: str, recv_window: int | str,
         payload: str) -> str:
    """The X-BAPI-SIGN value for a request (hex HMAC-SHA256)."""
    message = f"{timestamp}{api_key}{recv_window}{payload}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class Authenticator:
    """Checks the signature headers of private requests against the configured keys."""

    def __init__(self, keys: Mapping[str, str], *, check_timestamp: bool = True) -> None:
        if not keys:
            raise ValueError("at least one API key is needed")
        self._keys = dict(keys)
        self.check_timestamp = check_timestamp

    @property
    def api_keys(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def verify(self, headers: Mapping[str, str], payload: str, now_ms: int,
               speed: float = 1.0) -> str:
        """The API key of a correctly signed request; ParamError (10003/10002/10004) if not.

        `payload` is the query string as received or the body. A GET query is also accepted
        percent-decoded: ccxt signs the unencoded string and the HTTP library may encode it.
        `speed` (>= 1) scales the time tolerances, see the module docstring.
        """
        api_key = headers.get("X-BAPI-API-KEY", "")
        secret = self._keys.get(api_key)
        if secret is None:
            raise ParamError(BAD_KEY, "API key is invalid.")
        raw_ts, raw_window = headers.get("X-BAPI-TIMESTAMP", ""), headers.get(
            "X-BAPI-RECV-WINDOW", str(DEFAULT_RECV_WINDOW))
        try:
            timestamp, window = int(raw_ts), int(raw_window)
        except ValueError:
            raise ParamError(BAD_TIME, "invalid request, please check your server timestamp "
                             f"or recv_window param. req_timestamp[{raw_ts}],server_timestamp"
                             f"[{now_ms}],recv_window[{raw_window}]") from None
        scale = max(1.0, speed)
        if self.check_timestamp and not (
                now_ms - window * scale <= timestamp < now_ms + FUTURE_TOLERANCE_MS * scale):
            raise ParamError(BAD_TIME, "invalid request, please check your server timestamp "
                             f"or recv_window param. req_timestamp[{timestamp}],"
                             f"server_timestamp[{now_ms}],recv_window[{window}]")
        given = headers.get("X-BAPI-SIGN", "")
        candidates = {payload, unquote(payload)}
        if not any(hmac.compare_digest(given.encode(),
                                       sign(secret, raw_ts, api_key, raw_window, p).encode())
                   for p in candidates):
            raise ParamError(BAD_SIGN, f"error sign! origin_string[{raw_ts}{api_key}"
                                       f"{raw_window}{payload}]")
        return api_key

    def verify_stream(self, api_key: str, expires: str, signature: str, now_ms: int) -> str:
        """The WebSocket "auth" op: signature = hex HMAC-SHA256(secret, "GET/realtime" +
        expires), and `expires` (ms) must still be in the future of the fake clock."""
        secret = self._keys.get(api_key)
        if secret is None:
            raise ParamError(BAD_KEY, "Invalid apikey")
        try:
            expiry = int(expires)
        except ValueError:
            raise ParamError(BAD_TIME, "Params Error: expires invalid") from None
        if self.check_timestamp and expiry <= now_ms:
            raise ParamError(BAD_TIME, "Params Error: expires is in the past")
        expected = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise ParamError(BAD_SIGN, "Invalid sign")
        return api_key
