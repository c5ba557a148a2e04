"""Auth on every route and on the WebSocket, and an OpenAPI document that lists every route with
its security and response model. The route lists are checked against the app's own routes, so
a route added later without being listed here fails the first test.

One route takes no bearer token: the TradingView webhook, whose auth is the shared secret in its
body (tests/test_webhook.py); here it is listed apart and shown not to open with a token."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from meridian_control import auth
from meridian_control.auth import redact_query_token

WRITE = "write-token-0123456789abcdef"
READ = "read-token-fedcba9876543210"
WS = "/v1/ws/portfolio"

GETS = ["/v1/kill-switch", "/v1/positions", "/v1/fills", "/v1/equity", "/v1/decisions",
        "/v1/orders", "/v1/status"]
POSTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/kill-switch", {"engaged": True, "reason": "outage", "actor": "alice"}),
    ("/v1/models/meta-trend/promote", {"version": "v2"}),
    ("/v1/configs/trend/promote", {"version": "c1"}),
]
TEMPLATES = {"/v1/models/meta-trend/promote": "/v1/models/{name}/promote",
             "/v1/configs/trend/promote": "/v1/configs/{strategy}/promote"}
OPEN = {"/", "/health", "/metrics", "/static/{name}", "/openapi.json", "/docs",
        "/docs/oauth2-redirect", "/redoc"}
# auth by a shared secret in the body (MERIDIAN_CONTROL_WEBHOOK_SECRET), not by a bearer token
SECRET_IN_BODY = {("POST", "/v1/webhook/tradingview")}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def test_the_lists_cover_every_route(client: TestClient) -> None:
    routes = {(m, r.path) for r in client.app.routes if isinstance(r, APIRoute)  # type: ignore[attr-defined]
              for m in r.methods}
    guarded = {(m, p) for m, p in routes if p not in OPEN} - SECRET_IN_BODY
    assert guarded == {("GET", p) for p in GETS} | {("POST", TEMPLATES.get(p, p))
                                                     for p, _ in POSTS}
    assert routes >= SECRET_IN_BODY
    sockets = [r.path for r in client.app.routes if isinstance(r, APIWebSocketRoute)]  # type: ignore[attr-defined]
    assert sockets == [WS]


@pytest.mark.parametrize("path", GETS)
@pytest.mark.parametrize(("headers", "expected"), [
    ({}, 401),
    ({"Authorization": "Bearer wrong-token"}, 401),
    ({"Authorization": f"Basic {READ}"}, 401),
    ({"Authorization": f"Bearer {READ}x"}, 401),
    (_auth(READ), 200),
    (_auth(WRITE), 200),
])
def test_every_get_takes_either_token(client: TestClient, path: str, headers: dict[str, str],
                                      expected: int) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == expected, response.text
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert set(response.json()) == {"detail"}


@pytest.mark.parametrize(("path", "body"), POSTS)
def test_every_mutating_route_takes_the_write_token_only(
        client: TestClient, fake_store: Any, path: str, body: dict[str, Any]) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        assert client.post(path, json=body, headers=headers).status_code == 401
    response = client.post(path, json=body, headers=_auth(READ))
    assert response.status_code == 403, response.text
    assert "read-only token" in response.json()["detail"]
    assert not [c for c in fake_store.calls if c[0].startswith("promote")]  # nothing written
    assert client.post(path, json=body, headers=_auth(WRITE)).status_code == 202


@pytest.mark.parametrize(("path", "body"), POSTS)
def test_auth_comes_before_validation(client: TestClient, path: str,
                                      body: dict[str, Any]) -> None:
    assert client.post(path, json={"bogus": 1}, headers=_auth(READ)).status_code == 403
    assert client.post(path, json={"bogus": 1}).status_code == 401
    assert client.post(path, json={"bogus": 1}, headers=_auth(WRITE)).status_code == 422


@pytest.mark.parametrize("token", [WRITE, READ])
def test_no_bearer_token_opens_the_webhook(make_client: Callable[..., TestClient],
                                           bus: Any, token: str) -> None:
    client = make_client(webhook_secret="whsec-auth-test-0123456789")
    body = {"name": "n", "symbol": "BTCUSDT", "action": "close", "price": "1"}
    response = client.post("/v1/webhook/tradingview", json=body, headers=_auth(token))
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or wrong secret"}
    with pytest.raises(KeyError):  # nothing was ever published on signal.v1
        bus.end_offsets("t.signal.v1")
    body["secret"] = "whsec-auth-test-0123456789"
    assert client.post("/v1/webhook/tradingview", json=body).status_code == 202


def test_query_validation_waits_for_auth(client: TestClient) -> None:
    assert client.get("/v1/fills?limit=0").status_code == 401
    assert client.get("/v1/fills?limit=0", headers=_auth(READ)).status_code == 422


# ------------------------------------------------------------------------------ WebSocket


@pytest.mark.parametrize("token", [READ, WRITE])
def test_websocket_token_in_the_query(client: TestClient, token: str) -> None:
    with client.websocket_connect(f"{WS}?token={token}") as ws:
        assert ws.receive_json()["type"] == "portfolio"


@pytest.mark.parametrize("token", [READ, WRITE])
def test_websocket_token_as_the_first_message(client: TestClient, token: str) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text(json.dumps({"token": token}))
        assert ws.receive_json()["type"] == "portfolio"


def test_websocket_wrong_query_token_is_refused_at_the_handshake(
        client: TestClient, fake_store: Any) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, \
            client.websocket_connect(f"{WS}?token=nope"):
        pass
    assert refused.value.code == 1008
    assert fake_store.polls == 0


@pytest.mark.parametrize("first", [json.dumps({"token": "nope"}), json.dumps({"token": 5}),
                                   "not json", json.dumps(["a"]), json.dumps({"tok": READ}),
                                   json.dumps({"token": "naïve-ü"})])
def test_websocket_wrong_first_message_closes_1008(client: TestClient, fake_store: Any,
                                                   first: str) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text(first)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008
    assert fake_store.polls == 0  # nothing was read, nothing was sent


def test_websocket_without_a_token_in_time_closes_1008(
        client: TestClient, fake_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "WS_AUTH_TIMEOUT_S", 0.2)
    with client.websocket_connect(WS) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert closed.value.code == 1008
    assert "no token" in (closed.value.reason or "")
    assert fake_store.polls == 0


def test_websocket_refusals_are_logged_without_the_token(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        with pytest.raises(WebSocketDisconnect), \
                client.websocket_connect(f"{WS}?token=guess-{WRITE}"):
            pass
        with client.websocket_connect(WS) as ws:
            ws.send_text(json.dumps({"token": f"guess-{READ}"}))
            with pytest.raises(WebSocketDisconnect):
                ws.receive_json()
    assert caplog.text.count("refused WEBSOCKET /v1/ws/portfolio: unknown token") == 2
    assert WRITE not in caplog.text
    assert READ not in caplog.text


def test_query_tokens_are_redacted_from_log_lines() -> None:
    line = f'127.0.0.1:5000 - "WebSocket /v1/ws/portfolio?token={WRITE}&x=1" [accepted]'
    assert redact_query_token(line) == \
        '127.0.0.1:5000 - "WebSocket /v1/ws/portfolio?token=***&x=1" [accepted]'
    assert redact_query_token(f"/v1/ws/portfolio?a=1&TOKEN={READ}") == \
        "/v1/ws/portfolio?a=1&TOKEN=***"
    assert redact_query_token("/v1/positions") == "/v1/positions"


# ------------------------------------------------------------------------------ OpenAPI


def test_openapi_lists_every_route_with_security_and_a_response_model(
        client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    listed = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    expected = {("GET", p) for p in GETS} | {("POST", TEMPLATES.get(p, p)) for p, _ in POSTS}
    assert listed == expected | {("GET", "/health")} | SECRET_IN_BODY
    schemas = doc["components"]["schemas"]
    for method, path in expected:
        op = paths[path][method.lower()]
        assert op["security"] == [{"bearer": []}], (method, path)
        assert "401" in op["responses"], (method, path)
        ok = next(code for code in op["responses"] if code.startswith("2"))
        ref = op["responses"][ok]["content"]["application/json"]["schema"]["$ref"]
        assert ref.removeprefix("#/components/schemas/") in schemas, (method, path)
        if method == "POST":
            assert "403" in op["responses"], path
            assert ok == "202", path
        assert op.get("summary"), (method, path)
    hook = paths["/v1/webhook/tradingview"]["post"]
    assert "security" not in hook  # its secret is in the body
    assert {"202", "200", "401", "404", "422", "429", "503"} <= set(hook["responses"])
    assert hook["requestBody"]["content"]["application/json"]["schema"]["$ref"] == \
        "#/components/schemas/TradingViewAlert"
    assert {"secret", "name", "symbol", "action", "price"} == set(
        schemas["TradingViewAlert"]["required"])
    for path in ("/v1/models/{name}/promote", "/v1/configs/{strategy}/promote"):
        assert "404" in paths[path]["post"]["responses"]
    for path in ("/v1/positions", "/v1/fills", "/v1/equity", "/v1/decisions"):
        assert "503" in paths[path]["get"]["responses"]
    # the WebSocket is described, with its message as a component
    assert WS in doc["info"]["description"]
    message = schemas["PortfolioMessage"]
    assert {"type", "positions", "equity", "detail"} <= set(message["properties"])
    assert "AccountEquity" in schemas
    assert "/" not in paths  # the page is not an API route
