"""Bybit v5 and Binance request signing, checked the way the venues check it.

A signed request carries X-BAPI-API-KEY, X-BAPI-TIMESTAMP (ms), X-BAPI-RECV-WINDOW (ms,
default 5000) and X-BAPI-SIGN = hex HMAC-SHA256(secret, timestamp + api_key + recv_window +
payload), the payload being the query string of a GET or the raw JSON body of a POST. The
timestamp must satisfy  now - recv_window <= timestamp < now + 1000  where now is the FAKE
clock, as Bybit measures it against its own clock: a client must take its time from the
server (ccxt: `load_time_difference()` / option `adjustForTimeDifference`), and again after
the fake clock jumps. Both tolerances are real durations (network latency is real): while the
clock runs faster than real time (speed s > 1) they are multiplied by s, otherwise 1 ms of
latency at 3600x would already be 3.6 s of fake time.

Binance (`verify_binance`): header X-MBX-APIKEY; params `timestamp` (ms), optional `recvWindow`
(default 5000, at most 60000) and `signature` = hex HMAC-SHA256(secret, totalParams), where
totalParams is the query string concatenated with the form body, without the signature
parameter. Accepted when  timestamp < now + 1000  and  now - timestamp <= recvWindow  (fake
clock, the same speed scaling). Answers: missing key -2014, unknown key -2015 (both HTTP 401),
bad signature -1022, timestamp -1021, missing timestamp/signature -1102.

Secrets stay in this module: errors quote the signed string (as Bybit's "error sign!" message
does) but never the secret, and nothing is logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote

from meridian_fake_exchange.venue import ParamError

#: the default account of a FakeExchange (any string works; these are for tests only)
TEST_API_KEY = "FAKEX-TEST-KEY"
TEST_API_SECRET = "FAKEX-TEST-SECRET-not-a-real-secret"  # noqa: S105 - a public test key
DEFAULT_RECV_WINDOW = 5000
FUTURE_TOLERANCE_MS = 1000
BAD_KEY = 10003
BAD_SIGN = 10004
BAD_TIME = 10002
MAX_BINANCE_RECV_WINDOW = 60_000


class BinanceAuthError(ParamError):
    """A Binance authentication failure; `status` is the HTTP status Binance answers with."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(code, msg)
        self.status = status


def binance_sign(secret: str, total_params: str) -> str:
    """The Binance `signature` for a query string + body (hex HMAC-SHA256)."""
    return hmac.new(secret.encode(), total_params.encode(), hashlib.sha256).hexdigest()


def _without_signature(raw: str) -> tuple[str, str | None]:
    """`raw` without its signature parameter, and that parameter's value (if present)."""
    kept, signature = [], None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature


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

    def verify_binance(self, headers: Mapping[str, str], query: str, body: str, now_ms: int,
                       speed: float = 1.0) -> tuple[str, dict[str, str]]:
        """The API key and the parameters (query and body merged, signature removed) of a
        correctly signed Binance request; BinanceAuthError if not. `query`/`body` are the raw
        strings received; the percent-decoded form is accepted too, as for Bybit."""
        api_key = headers.get("X-MBX-APIKEY", "")
        if not api_key:
            raise BinanceAuthError(-2014, "API-key format invalid.", 401)
        secret = self._keys.get(api_key)
        if secret is None:
            raise BinanceAuthError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        query_part, in_query = _without_signature(query)
        body_part, in_body = _without_signature(body)
        given = in_query if in_query is not None else in_body
        params = dict(parse_qsl(query_part, keep_blank_values=True))
        params.update(parse_qsl(body_part, keep_blank_values=True))
        if not given:
            raise BinanceAuthError(-1102, "Mandatory parameter 'signature' was not sent, was "
                                          "empty/null, or malformed.")
        total = query_part + body_part
        if not any(hmac.compare_digest(given.encode(), binance_sign(secret, p).encode())
                   for p in {total, unquote(total)}):
            raise BinanceAuthError(-1022, "Signature for this request is not valid.")
        try:
            timestamp = int(params.get("timestamp", ""))
            window = int(params.get("recvWindow") or DEFAULT_RECV_WINDOW)
        except ValueError:
            raise BinanceAuthError(-1102, "Mandatory parameter 'timestamp' was not sent, was "
                                          "empty/null, or malformed.") from None
        if window > MAX_BINANCE_RECV_WINDOW:
            raise BinanceAuthError(-1131, "recvWindow must be less than 60000")
        scale = max(1.0, speed)
        if self.check_timestamp:
            if timestamp >= now_ms + FUTURE_TOLERANCE_MS * scale:
                raise BinanceAuthError(-1021, "Timestamp for this request was 1000ms ahead of "
                                              "the server's time.")
            if now_ms - timestamp > window * scale:
                raise BinanceAuthError(-1021, "Timestamp for this request is outside of the "
                                              "recvWindow.")
        return api_key, params
