"""POST /v1/webhook/tradingview over the in-process bus: the shared secret, validation naming
each field, the signal.v1 record it publishes (read back through the codec), duplicates, rate
limits on an injected clock, Kafka unreachable, and the secret kept out of every answer, log
line and metric."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from meridian.v1 import common_pb2, signal_pb2
from meridian_common import codec, config, topics
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.bus.kafka import KafkaBus
from meridian_common.testing import read_topic
from meridian_control.app import create_app
from meridian_control.settings import ControlSettings

PREFIX = "t."
WRITE = "write-token-0123456789abcdef"
SECRET = "whsec-0123456789abcdef"
PATH = "/v1/webhook/tradingview"
HOUR = 3_600_000
# 2021-03-01T10:00:00Z, the open of a 1h candle; "now" is 17 min 3.5 s into it.
BAR = 1_614_592_800_000
NOW = BAR + 17 * 60_000 + 3_500


class Clock:
    """Stands still until the test moves it."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now


def settings(**values: Any) -> ControlSettings:
    return config.load(ControlSettings, environ={}, **{"token": WRITE, **values})


def common(**values: Any) -> config.CommonSettings:
    return config.load(config.CommonSettings, environ={},
                       **{"bus": "inprocess", "topic_prefix": PREFIX, **values})


def alert(**fields: Any) -> dict[str, Any]:
    return {"secret": SECRET, "name": "breakout", "symbol": "BTCUSDT", "action": "buy",
            "price": "49000.5", "stop_loss": "48000", **fields}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hook(bus: InProcessBus, clock: Clock) -> Callable[..., TestClient]:
    """hook(**control settings) -> a client of an app with the webhook enabled."""

    def make(**values: Any) -> TestClient:
        values.setdefault("webhook_secret", SECRET)
        return TestClient(create_app(settings(**values), common(), bus, clock=clock,
                                     store=None))

    return make


@pytest.fixture
def client(hook: Callable[..., TestClient]) -> TestClient:
    return hook()


def published(bus: InProcessBus) -> list[signal_pb2.Signal]:
    try:
        return asyncio.run(read_topic(bus, PREFIX, topics.SIGNAL))  # type: ignore[return-value]
    except KeyError:  # the topic was never created: nothing was published
        return []


def records(bus: InProcessBus) -> list[tuple[int, bytes | None, bytes | None]]:
    """(partition, key, type header) of every signal.v1 record."""
    name = PREFIX + topics.SIGNAL

    async def read() -> list[tuple[int, bytes | None, bytes | None]]:
        out = []
        for partition, end in enumerate(await bus.topic_ends(name)):
            for r in await bus.read_partition(name, partition, 0, end):
                out.append((partition, r.key, r.header(codec.TYPE_HEADER)))
        return out

    return asyncio.run(read())


def outcomes(client: TestClient) -> dict[str, float]:
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("meridian_control_webhook_alerts_total{"):
            label, value = line.split("} ")
            out[label.split('"')[1]] = float(value)
    return out


# ------------------------------------------------------------------------------ the signal


@pytest.mark.parametrize(("action", "direction"), [
    ("buy", common_pb2.DIRECTION_LONG), ("long", common_pb2.DIRECTION_LONG),
    ("BUY", common_pb2.DIRECTION_LONG), ("sell", common_pb2.DIRECTION_SHORT),
    ("Short", common_pb2.DIRECTION_SHORT), ("close", common_pb2.DIRECTION_FLAT),
    ("flat", common_pb2.DIRECTION_FLAT), ("exit", common_pb2.DIRECTION_FLAT)])
def test_actions_map_to_directions(client: TestClient, bus: InProcessBus, action: str,
                                   direction: int) -> None:
    flat = direction == common_pb2.DIRECTION_FLAT
    body = alert(action=action, stop_loss=None if flat else
                 ("48000" if direction == common_pb2.DIRECTION_LONG else "50000"))
    if flat:
        body.pop("stop_loss")
    response = client.post(PATH, json=body)
    assert response.status_code == 202, response.text
    [signal] = published(bus)
    assert signal.direction == direction
    assert response.json()["direction"] == {1: "long", 2: "short", 3: "flat"}[direction]


def test_the_signal_is_filled_like_a_trend_signal(client: TestClient, bus: InProcessBus) -> None:
    response = client.post(PATH, json=alert(take_profit="52000.25"))
    assert response.status_code == 202, response.text
    [signal] = published(bus)
    # stamped with the close of the last closed 1h candle at receipt (10:00), not 10:17:03.5
    assert signal.meta.event_time_ms == BAR
    assert signal.meta.producer == "webhook"
    assert signal.meta.cause_id == ""
    assert (signal.exchange, signal.symbol, signal.strategy) == (
        "binance", "BTCUSDT", "webhook:breakout")
    assert (signal.strength, signal.confidence, signal.model_version) == (1.0, 1.0, "")
    assert (signal.reference_price, signal.stop_loss, signal.take_profit) == (
        "49000.5", "48000", "52000.25")
    assert signal.reason == "webhook breakout: buy at 49000.5"
    assert signal.meta.id.startswith(f"webhook:breakout:BTCUSDT:{BAR}:")
    # keyed exchange:symbol like the signals service, with the codec's type header
    [(_, key, mtype)] = records(bus)
    assert key == b"binance:BTCUSDT"
    assert mtype == b"meridian.v1.Signal"
    body = response.json()
    assert body == {"status": "accepted", "id": signal.meta.id, "strategy": "webhook:breakout",
                    "exchange": "binance", "symbol": "BTCUSDT", "direction": "long",
                    "reference_price": "49000.5", "event_time_ms": BAR,
                    "time": "2021-03-01T10:00:00.000Z", "topic": PREFIX + topics.SIGNAL}


def test_a_linear_pipeline_keys_the_signal_on_the_perpetual_venue(
        hook: Callable[..., TestClient], bus: InProcessBus) -> None:
    """MERIDIAN_CONTROL_WEBHOOK_MARKET_TYPE=linear: the venue name a linear ingest gives the
    candles (binance-linear), so the gate decides the alert on the market it has."""
    response = hook(webhook_market_type="linear").post(PATH, json=alert())
    assert response.status_code == 202, response.text
    [signal] = published(bus)
    assert signal.exchange == "binance-linear"
    [(_, key, _)] = records(bus)
    assert key == b"binance-linear:BTCUSDT"


def test_json_numbers_are_kept_exact(client: TestClient, bus: InProcessBus) -> None:
    raw = ('{"secret": "' + SECRET + '", "name": "n", "symbol": "ETHUSDT", "action": "sell", '
           '"price": 1234.10, "stop_loss": 1300.000000000000000001}')
    response = client.post(PATH, content=raw, headers={"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text
    [signal] = published(bus)
    assert (signal.reference_price, signal.stop_loss) == ("1234.1", "1300.000000000000000001")


@pytest.mark.parametrize(("given", "close"), [
    ("2021-03-01T07:00:00Z", BAR - 2 * HOUR),  # a bar's open: that bar's close
    ("2021-03-01T07:59:59Z", BAR - 2 * HOUR),
    (str(BAR - 3 * HOUR), BAR - 2 * HOUR),  # epoch ms as a string
    (BAR - 3 * HOUR + 1, BAR - 2 * HOUR),  # as a number
    ("2021-03-01T11:00:00+02:00", BAR),  # 09:00 UTC
    (NOW, BAR + HOUR),  # the bar still open at receipt: decided when it closes
])
def test_the_alerts_bar_time_sets_the_event_time(client: TestClient, bus: InProcessBus,
                                                  given: Any, close: int) -> None:
    response = client.post(PATH, json=alert(time=given))
    assert response.status_code == 202, response.text
    assert [s.meta.event_time_ms for s in published(bus)] == [close]


def test_the_id_is_deterministic_and_a_retry_is_a_duplicate(
        client: TestClient, bus: InProcessBus, clock: Clock) -> None:
    first = client.post(PATH, json=alert())
    assert first.status_code == 202
    clock.now += 30 * 60_000  # later in the same bar: the same signal
    again = client.post(PATH, json=alert(action="long", price="49100"))
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    assert again.json()["id"] == first.json()["id"]
    assert len(published(bus)) == 1
    clock.now += HOUR  # the next bar: a new signal
    assert client.post(PATH, json=alert()).status_code == 202
    # the alert's own id tells alerts of one bar apart
    assert client.post(PATH, json=alert(id="tv-1")).status_code == 202
    assert client.post(PATH, json=alert(id="tv-2")).status_code == 202
    assert client.post(PATH, json=alert(id="tv-1")).json()["status"] == "duplicate"
    # TradingView's ids repeat ("Long" on every entry): in another bar it is a new signal
    clock.now += HOUR
    assert client.post(PATH, json=alert(id="tv-1")).status_code == 202
    signals = published(bus)
    assert len(signals) == 5
    assert len({s.meta.id for s in signals}) == 5
    assert [s.meta.cause_id for s in signals[2:]] == ["alert:tv-1", "alert:tv-2", "alert:tv-1"]
    assert outcomes(client)["duplicate"] == 2
    assert outcomes(client)["accepted"] == 5


def test_the_same_alert_twice_at_once_is_published_once(bus: InProcessBus, clock: Clock) -> None:
    app = create_app(settings(webhook_secret=SECRET), common(), bus, clock=clock, store=None)

    async def both() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            answers = await asyncio.gather(*(c.post(PATH, json=alert()) for _ in range(5)))
        return sorted(a.status_code for a in answers)

    assert asyncio.run(both()) == [200, 200, 200, 200, 202]
    assert len(published(bus)) == 1


# ------------------------------------------------------------------------------ refusals


def test_disabled_without_a_secret(hook: Callable[..., TestClient], bus: InProcessBus) -> None:
    client = hook(webhook_secret=None)
    response = client.post(PATH, json=alert())
    assert response.status_code == 404
    assert response.json()["detail"].startswith("webhook disabled")
    assert published(bus) == []
    assert outcomes(client)["disabled"] == 1


@pytest.mark.parametrize("body", [
    alert(secret="whsec-0123456789abcdeF"), alert(secret=SECRET + " "), alert(secret=""),
    alert(secret=None), alert(secret=123), alert(secret=[SECRET]),
    {k: v for k, v in alert().items() if k != "secret"},
    alert(name="not a valid name!", secret="nope"),  # the name changes nothing
    alert(name="unknown-strategy", secret="nope"),
    {"secret": "nope"},
])
def test_a_missing_or_wrong_secret_is_401_and_publishes_nothing(
        client: TestClient, bus: InProcessBus, body: dict[str, Any]) -> None:
    response = client.post(PATH, json=body)
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or wrong secret"}
    assert published(bus) == []
    assert outcomes(client)["unauthorized"] == 1


def test_a_bearer_token_does_not_open_the_webhook(client: TestClient, bus: InProcessBus) -> None:
    body = {k: v for k, v in alert().items() if k != "secret"}
    response = client.post(PATH, json=body, headers={"Authorization": f"Bearer {WRITE}"})
    assert response.status_code == 401
    assert client.post(PATH, json=alert(secret=WRITE)).status_code == 401
    assert published(bus) == []


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"name": "Breakout"}, "name", "pattern"),
    ({"name": "x" * 33}, "name", "pattern"),
    ({"name": None}, "name", "string"),
    ({"symbol": "DOGEUSDT"}, "symbol", "must be one of BTCUSDT, ETHUSDT, XRPUSDT, LTCUSDT"),
    ({"symbol": "btcusdt"}, "symbol", "must be one of"),
    ({"action": "hold"}, "action", "must be one of buy, long, sell, short, close, flat, exit"),
    ({"action": 1}, "action", "string"),
    ({"price": "0"}, "price", "> 0"),
    ({"price": -5}, "price", "> 0"),
    ({"price": "abc"}, "price", "not a decimal"),
    ({"price": "NaN"}, "price", "> 0"),
    ({"price": True}, "price", "decimal string or a number"),
    ({"price": "1e16"}, "price", "at most"),
    ({"stop_loss": "49000.5"}, "stop_loss", "below price for a long"),
    ({"stop_loss": "50000"}, "stop_loss", "below price for a long"),
    ({"action": "sell", "stop_loss": "48000"}, "stop_loss", "above price for a short"),
    ({"take_profit": "40000"}, "take_profit", "above price for a long"),
    ({"action": "sell", "stop_loss": "50000", "take_profit": "50001"}, "take_profit",
     "below price for a short"),
    ({"action": "close"}, "stop_loss", "not allowed with action 'close'"),
    ({"id": "has space"}, "id", "pattern"),
    ({"id": "x" * 65}, "id", "pattern"),
    ({"time": "yesterday"}, "time", "not an ISO-8601 time"),
    ({"time": 1_614_592_800}, "time", "looks like seconds"),
    ({"time": NOW + 2 * 60_000}, "time", "in the future"),
    ({"time": 1.5}, "time", "ISO-8601 time or epoch milliseconds"),
    ({"comment": "hi"}, "comment", "unknown field (allowed: secret, name, symbol"),
])
def test_each_invalid_field_is_422_naming_it(client: TestClient, bus: InProcessBus,
                                             change: dict[str, Any], field: str,
                                             says: str) -> None:
    response = client.post(PATH, json=alert(**change))
    assert response.status_code == 422, response.text
    body = response.json()
    assert [e["field"] for e in body["errors"]] == [field]
    assert says in body["errors"][0]["error"]
    assert body["detail"].startswith(f"invalid alert: {field}: ")
    assert published(bus) == []
    assert outcomes(client)["invalid"] == 1


@pytest.mark.parametrize("field", ["name", "symbol", "action", "price"])
def test_a_missing_required_field_is_named(client: TestClient, field: str) -> None:
    body = alert()
    del body[field]
    response = client.post(PATH, json=body)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": field, "error": "Field required"}]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
def test_a_body_that_is_no_json_object_is_422(client: TestClient, raw: bytes) -> None:
    response = client.post(PATH, content=raw)
    assert response.status_code == 422
    assert "JSON object" in response.json()["detail"]


def test_a_huge_body_is_413(client: TestClient, bus: InProcessBus) -> None:
    response = client.post(PATH, json=alert(pad="x" * 20_000))
    assert response.status_code == 413
    assert published(bus) == []


# ------------------------------------------------------------------------------ rate limits


def test_the_rate_limit_per_name_and_symbol(client: TestClient, bus: InProcessBus,
                                            clock: Clock) -> None:
    for i in range(6):  # default 6 per minute per (name, symbol)
        assert client.post(PATH, json=alert(id=f"a{i}")).status_code == 202
    refused = client.post(PATH, json=alert(id="a6"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"  # one token per 10 s
    assert "at most 6 alerts per minute for 'breakout' on BTCUSDT" in refused.json()["detail"]
    assert len(published(bus)) == 6
    # other (name, symbol) pairs have buckets of their own
    assert client.post(PATH, json=alert(id="b0", symbol="ETHUSDT")).status_code == 202
    assert client.post(PATH, json=alert(id="c0", name="other")).status_code == 202
    clock.now += 9_999
    assert client.post(PATH, json=alert(id="a6")).status_code == 429
    clock.now += 1  # the bucket refilled one token
    assert client.post(PATH, json=alert(id="a6")).status_code == 202
    assert client.post(PATH, json=alert(id="a7")).status_code == 429
    assert len(published(bus)) == 9
    assert outcomes(client)["rate_limited"] == 3


def test_the_global_rate_limit(hook: Callable[..., TestClient], bus: InProcessBus,
                               clock: Clock) -> None:
    client = hook(webhook_global_rate_per_min=3)
    for name in ("a", "b", "c"):
        assert client.post(PATH, json=alert(name=name)).status_code == 202
    refused = client.post(PATH, json=alert(name="d"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "20"
    assert "at most 3 alerts per minute in all" in refused.json()["detail"]
    # a refusal takes no token: d's own bucket is still full after the global one refills
    clock.now += 20_000
    assert client.post(PATH, json=alert(name="d")).status_code == 202
    assert len(published(bus)) == 4


def test_a_duplicate_is_answered_even_when_rate_limited(
        hook: Callable[..., TestClient], bus: InProcessBus) -> None:
    client = hook(webhook_rate_per_min=1)
    assert client.post(PATH, json=alert()).status_code == 202
    assert client.post(PATH, json=alert()).status_code == 200  # a retry: no token needed
    assert client.post(PATH, json=alert(id="new")).status_code == 429
    assert len(published(bus)) == 1


# ------------------------------------------------------------------------------ Kafka down


def test_kafka_unreachable_is_503_and_the_alert_is_not_remembered(clock: Clock) -> None:
    down = KafkaBus("127.0.0.1:1")
    app = create_app(settings(webhook_secret=SECRET, kafka_timeout_s=1.0),
                     common(bus="kafka", kafka_bootstrap="127.0.0.1:1"), down, clock=clock,
                     store=None)
    client = TestClient(app)
    response = client.post(PATH, json=alert())
    assert response.status_code == 503, response.text
    assert "Kafka" in response.json()["detail"]
    assert SECRET not in response.text
    assert len(app.state.webhook.recent) == 0  # a retry publishes it
    assert outcomes(client)["unavailable"] == 1
    # the retry is not a duplicate and still finds Kafka down
    assert client.post(PATH, json=alert()).status_code == 503


# ------------------------------------------------------------------------------ the secret


def test_the_secret_is_in_no_answer_log_line_or_metric(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    answers: list[httpx.Response] = []
    with caplog.at_level(logging.DEBUG):
        answers += [
            client.post(PATH, json=alert()),
            client.post(PATH, json=alert()),
            client.post(PATH, json=alert(secret=SECRET + "x")),
            client.post(PATH, json=alert(secret=SECRET[:-1])),
            client.post(PATH, json=alert(secret=None, name=SECRET)),
            client.post(PATH, json=alert(symbol=SECRET, name=SECRET, price=SECRET,
                                         time=SECRET, action=SECRET, stop_loss=SECRET)),
            client.post(PATH, json={**alert(), SECRET: SECRET}),
            client.post(PATH, content=json.dumps(alert())[:-1]),
        ]
        for i in range(7):
            answers.append(client.post(PATH, json=alert(id=f"r{i}")))
    assert [a.status_code for a in answers] == [202, 200, 401, 401, 401, 422, 422, 422] + \
        [202] * 5 + [429] * 2
    metrics = client.get("/metrics").text
    logged = [str(r.__dict__) for r in caplog.records]  # messages and their extra fields
    for text in [caplog.text, *logged, metrics, *(a.text for a in answers),
                 *(json.dumps(dict(a.headers)) for a in answers)]:
        assert SECRET not in text
    # the secret pasted in other fields is refused, naming them
    assert answers[5].json()["errors"] == [
        {"field": f, "error": "must not contain the secret"}
        for f in ("name", "symbol", "action", "price", "stop_loss", "time")]
    assert answers[6].json()["errors"] == [
        {"field": "***", "error": "must not contain the secret"}]
    assert "webhook alert: accepted" in caplog.text
    assert "webhook alert refused: unauthorized" in caplog.text
    assert repr(client.app.state.webhook).startswith("Webhook(enabled=True")  # type: ignore[attr-defined]
    assert SECRET not in repr(client.app.state.webhook)  # type: ignore[attr-defined]
    assert SECRET not in repr(client.app.state.ctx.settings)  # type: ignore[attr-defined]
