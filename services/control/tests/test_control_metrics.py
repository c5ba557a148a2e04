"""GET /metrics on the control plane: the contract's series move with requests and commands, the
route label stays bounded whatever path a client sends, and no token ever shows in the output."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from meridian_control import telemetry

# the tokens the conftest app factory configures
WRITE = "write-token-0123456789abcdef"
READ = "read-token-fedcba9876543210"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

AUTH_W = {"Authorization": f"Bearer {WRITE}"}
AUTH_R = {"Authorization": f"Bearer {READ}"}


def scrape(client: TestClient) -> Samples:
    """Every sample of GET /metrics (no token), keyed by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def requests(samples: Samples, route: str, method: str, status: str) -> float:
    key = ("meridian_control_requests_total",
           (("method", method), ("route", route), ("status", status)))
    return samples.get(key, 0.0)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for n, labels in samples if n == name and label in dict(labels)}


def test_metrics_need_no_token_and_start_with_both_kill_switch_actions(
        make_client: Callable[..., TestClient]) -> None:
    samples = scrape(make_client())
    for action in ("set", "clear"):
        key = ("meridian_control_kill_switch_commands_total", (("action", action),))
        assert samples[key] == 0.0


def test_requests_and_durations_move_per_route_template(
        make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    before = scrape(client)
    assert client.get("/v1/positions", headers=AUTH_R).status_code == 200
    assert client.get("/v1/positions", headers=AUTH_R).status_code == 200
    assert client.get("/v1/positions").status_code == 401
    assert client.get("/static/dashboard.js").status_code == 200
    after = scrape(client)
    assert requests(after, "/v1/positions", "GET", "200") - \
        requests(before, "/v1/positions", "GET", "200") == 2
    assert requests(after, "/v1/positions", "GET", "401") == 1
    # a path parameter is not a label value: the template is
    assert requests(after, "/static/{name}", "GET", "200") == 1
    count = ("meridian_control_request_duration_seconds_count",
             (("method", "GET"), ("route", "/v1/positions")))
    assert after[count] == 3
    # the scrape before counted itself under its own route
    assert requests(after, telemetry.PATH, "GET", "200") >= 1


def test_kill_switch_commands_count_by_action(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    for engaged in (True, True, False):
        response = client.post("/v1/kill-switch", headers=AUTH_W,
                               json={"engaged": engaged, "reason": "drill"})
        assert response.status_code == 202
    # refused (read-only token): nothing published, nothing counted
    assert client.post("/v1/kill-switch", headers=AUTH_R,
                       json={"engaged": True, "reason": "drill"}).status_code == 403
    samples = scrape(client)
    assert samples[("meridian_control_kill_switch_commands_total", (("action", "set"),))] == 2
    assert samples[("meridian_control_kill_switch_commands_total", (("action", "clear"),))] == 1
    assert requests(samples, "/v1/kill-switch", "POST", "202") == 3
    assert requests(samples, "/v1/kill-switch", "POST", "403") == 1


def test_unknown_paths_and_methods_add_no_label_values(
        make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    client.get("/v1/positions", headers=AUTH_R)
    for i in range(5):
        assert client.get(f"/v1/no-such-route-{i}/x{i}").status_code == 404
    assert client.request("BREW", "/v1/positions", headers=AUTH_R).status_code == 405
    # a path parameter the route refuses is still the route's template
    assert client.post("/v1/models/unknown-model-xyz/promote", headers=AUTH_W,
                       json={"version": "nope"}).status_code in (404, 422)
    samples = scrape(client)  # the first scrape: /metrics itself is not counted yet
    routes = label_values(samples, "meridian_control_requests_total", "route")
    assert routes == {"/v1/positions", "/v1/models/{name}/promote", telemetry.UNMATCHED}
    assert requests(samples, telemetry.UNMATCHED, "GET", "404") == 5
    assert requests(samples, "/v1/positions", telemetry.OTHER_METHOD, "405") == 1
    text = client.get("/metrics").text
    assert "no-such-route" not in text
    assert "unknown-model-xyz" not in text
    assert "BREW" not in text


def test_no_token_appears_in_metrics(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    client.get("/v1/kill-switch", headers=AUTH_W)
    client.get("/v1/kill-switch", headers=AUTH_R)
    client.get(f"/v1/positions?token={WRITE}")
    client.get(f"/{READ}")
    client.post("/v1/kill-switch", headers=AUTH_W, json={"engaged": True, "reason": WRITE})
    text = client.get("/metrics").text
    assert "meridian_control_requests_total" in text
    assert WRITE not in text
    assert READ not in text


def test_each_app_has_its_own_registry(make_client: Callable[..., TestClient]) -> None:
    """Two apps in one process (tests, embedded runs) neither share nor collide on a series."""
    first, second = make_client(), make_client()
    first.get("/health")
    first.get("/health")
    assert requests(scrape(first), "/health", "GET", "200") == 2
    assert requests(scrape(second), "/health", "GET", "200") == 0
