"""The page: served without a token, with headers that forbid inline scripts, other origins and
framing; nothing fetched from elsewhere (the machine may be offline); every element the script
looks up exists. What it does in a browser is tested in
tests/integration/test_control_page_browser.py (headless Chromium)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from meridian_control.page import STATIC


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def test_the_page_needs_no_token(client: TestClient, fake_store: object) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert '<script src="/static/dashboard.js" defer></script>' in response.text
    assert not fake_store.calls  # type: ignore[attr-defined]  # the page holds no data


@pytest.mark.parametrize(("name", "kind"), [("dashboard.js", "text/javascript"),
                                            ("dashboard.css", "text/css")])
def test_assets(client: TestClient, name: str, kind: str) -> None:
    response = client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(kind)
    assert response.content == (STATIC / name).read_bytes()


@pytest.mark.parametrize("path", ["/static/index.html", "/static/..%2Fapp.py",
                                  "/static/nothing.js"])
def test_nothing_else_is_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_nothing_comes_from_another_origin() -> None:
    svg_namespace = "http://www.w3.org/2000/svg"  # an identifier, never fetched
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = (STATIC / name).read_text().replace(svg_namespace, "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text


def test_no_inline_script_or_handler() -> None:
    html = (STATIC / "index.html").read_text()
    assert len(re.findall(r"<script\b", html)) == 1
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert "style=" not in html


def test_every_element_the_script_uses_exists() -> None:
    html = (STATIC / "index.html").read_text()
    script = (STATIC / "dashboard.js").read_text()
    used = set(re.findall(r'\$\("([a-z-]+)"\)', script))
    defined = set(re.findall(r'\bid="([a-z-]+)"', html))
    assert used
    assert used <= defined, used - defined


def test_the_script_renders_text_not_html() -> None:
    script = (STATIC / "dashboard.js").read_text()
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "eval(" not in script
    assert "localStorage" not in script  # the token lives in sessionStorage only

