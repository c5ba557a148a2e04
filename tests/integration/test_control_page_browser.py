"""The operator's page in headless Chromium, driven over chromedriver's W3C WebDriver HTTP API
(plain HTTP calls: no Selenium), against the control plane run as deployed (`python -m
meridian_control`, uvicorn on a free port) over real Kafka and a PostgreSQL the embedded
pipeline filled from real market data.

It enters the token, sees the ledger's positions and equity, goes live over the WebSocket,
follows a new mark without a reload, engages the kill switch with the button (and a risk gate
restored from control.v1 holds it), and refuses the button to the read-only token.

Needs Debian's chromium and chromium-driver (scripts/ci-prereqs.sh installs them); their
absence fails the test, it is never skipped.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest

from meridian_cli.pipeline import run_inprocess
from meridian_cli.settings import PipelineSettings
from meridian_common.bus.base import Bus
from meridian_common.bus.kafka import KafkaBus
from meridian_common.host import all_topic_configs
from meridian_common.testing import free_port, stop_process

pytestmark = pytest.mark.integration

WRITE = "it-page-write-7d3f0a91"
READ = "it-page-read-52c8e6b4"
SLICE = {"MERIDIAN_INGEST_SYMBOLS": "BTCUSDT,ETHUSDT", "MERIDIAN_INGEST_START": "2021-01-01",
         "MERIDIAN_INGEST_END": "2021-01-18T20:00:00"}  # ends with ETH long, BTC flat
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C element reference key



def _wait_http(url: str, proc: subprocess.Popen[Any], logs: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"{what} exited:\n{logs.read_text()}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} did not start in 60 s"
        time.sleep(0.1)



# ------------------------------------------------------------------------------ WebDriver


class Browser:
    """The few WebDriver commands the test needs, as HTTP calls to chromedriver."""

    def __init__(self, driver_url: str, binary: str) -> None:
        self.http = httpx.Client(base_url=driver_url, timeout=60)
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": binary,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1100", "--disable-extensions", "--no-first-run"]}}
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = value["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, path, json=body)
        value = response.json().get("value")
        assert response.status_code == 200, f"WebDriver {method} {path}: {value}"
        return value

    def _s(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def go(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def _element(self, css: str) -> str:
        return self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self._s("POST", f"/element/{self._element(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        element = self._element(css)
        self._s("POST", f"/element/{element}/clear", {})
        self._s("POST", f"/element/{element}/value", {"text": text})

    def js(self, script: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def text(self, css: str) -> str | None:
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.textContent : null;", css)

    def wait(self, check: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def wait_text(self, css: str, expected: str, timeout_s: float = 30) -> None:
        self.wait(lambda: self.text(css) == expected,
                  f"{css} to read {expected!r} (reads {self.text(css)!r})", timeout_s)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))

    def close(self) -> None:
        try:
            self._s("DELETE", "")
        finally:
            self.http.close()


def _chromium() -> tuple[str, str]:
    binary = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"),
                               shutil.which("chromium-browser")) if p and Path(p).exists()),
                  None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
         if Path(p).exists()), None)
    missing = ("headless Chromium is required: apt-get install chromium chromium-driver "
               "(scripts/ci-prereqs.sh installs them)")
    assert binary, missing
    assert driver, missing
    return binary, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary, driver = _chromium()
    port = free_port()
    logs = tmp_path / "chromedriver.log"
    with logs.open("w") as sink:
        proc = subprocess.Popen([driver, f"--port={port}"], stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/status", proc, logs, "chromedriver")
        session = Browser(f"http://127.0.0.1:{port}", binary)
        try:
            yield session
        finally:
            session.screenshot(tmp_path / "page.png")
            session.close()
    finally:
        stop_process(proc)


# ------------------------------------------------------------------------------ the service


@pytest.fixture
def ledger(new_database: Callable[[str], str]) -> str:
    url = new_database("ctlpage")
    settings = PipelineSettings.load(environ=SLICE, common={"bus": "inprocess"})
    asyncio.run(run_inprocess(settings, url))
    return url


@pytest.fixture
def service(ledger: str, kafka_bootstrap: str, topic_prefix: str,
            tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """`python -m meridian_control` on a free port; yields (base URL, process, its log)."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")},
           "MERIDIAN_BUS": "kafka", "MERIDIAN_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "MERIDIAN_TOPIC_PREFIX": topic_prefix, "MERIDIAN_DATABASE_URL": ledger,
           "MERIDIAN_CONTROL_PORT": str(port), "MERIDIAN_CONTROL_TOKEN": WRITE,
           "MERIDIAN_CONTROL_READ_TOKEN": READ, "MERIDIAN_CONTROL_PUSH_S": "0.2"}
    logs = tmp_path / "control.log"
    with logs.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "meridian_control"], env=env, text=True,
                                stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/health", proc, logs, "the control plane")
        yield base, proc, logs
    finally:
        stop_process(proc)


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def _mark_next_candle(url: str, unrealized: Decimal) -> None:
    """Write what the ledger writes when it marks the next candle: an equity row per symbol
    and the positions' as_of, in one transaction."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select distinct on (symbol) exchange, symbol, ts, quantity, realized_pnl, "
            "fees_paid, funding_paid from equity order by symbol, ts desc").fetchall()
        for exchange, symbol, ts, qty, realized, fees, funding in rows:
            later = ts + timedelta(hours=1)
            u = unrealized if qty else Decimal(0)
            conn.execute(
                "insert into equity (account, exchange, symbol, ts, quantity, mark_price, "
                "realized_pnl, unrealized_pnl, fees_paid, net_pnl, funding_paid) values "
                "('paper', %s, %s, %s, %s, 1500, %s, %s, %s, %s, %s)",
                (exchange, symbol, later, qty, realized, u, fees, realized + u - fees - funding,
                 funding))
            conn.execute("update positions set as_of = %s where symbol = %s", (later, symbol))


# ------------------------------------------------------------------------------ the test


def test_the_page_shows_the_ledger_and_engages_the_kill_switch(
        browser: Browser, service: tuple[str, subprocess.Popen[str], Path], ledger: str,
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
        restored_kill_switch: Callable[[Bus, str], Awaitable[bool]]) -> None:
    base, proc, logs = service
    bus = KafkaBus(kafka_bootstrap)
    asyncio.run(bus.ensure_topics(all_topic_configs(topic_prefix, 3)))  # the gate's topics
    positions = {symbol: (str(qty), side) for symbol, qty, side in _rows(
        ledger, "select symbol, quantity, case when quantity > 0 then 'long' "
                "when quantity < 0 then 'short' else 'flat' end from positions")}
    assert positions["ETHUSDT"][1] == "long"

    # the page loads without a token and asks for one
    browser.go(f"{base}/")
    browser.wait(lambda: browser.js("return !document.getElementById('login').hidden"),
                 "the token form")
    assert browser.js("return document.getElementById('dashboard').hidden") is True
    browser.type("#token", WRITE)
    browser.click("#connect")

    # the ledger's positions, as the table holds them
    rows = "#positions tbody tr[data-symbol]"
    browser.wait(lambda: browser.js(f"return document.querySelectorAll('{rows}').length") == 2,
                 "two position rows")
    for symbol, (qty, side) in positions.items():
        cells = browser.js(f"return [...document.querySelector('{rows}[data-symbol=\"{symbol}\"]')"
                           ".cells].map(c => c.textContent)")
        assert cells[1] == f"binance:{symbol}"
        assert (cells[2], cells[3]) == (side, qty), cells
    assert browser.js("return sessionStorage.getItem('meridian.control.token')") == WRITE
    assert browser.js("return localStorage.length") == 0

    # live over the WebSocket (the CSP lets the page reach its own origin only; uvicorn needs
    # a WebSocket library, `websockets`, to accept it)
    browser.wait(lambda: browser.text("#live") == "live",
                 f"the live stream (#live reads {browser.text('#live')!r}; the service log "
                 "says whether uvicorn has a WebSocket library)")

    # the equity: the newest point of the curve, drawn from every point the API returned
    [(net,)] = _rows(ledger, "select sum(net_pnl) from (select distinct on (symbol) net_pnl "
                             "from equity order by symbol, ts desc) latest")
    shown = browser.wait(lambda: browser.text("#equity-latest"), "the equity figure")
    assert abs(float(shown.split(" ")[0].replace(",", "")) - float(10000 + net)) < 0.006, shown
    points = browser.js("return document.querySelector('#equity-chart polyline')"
                        ".getAttribute('points').split(' ').length")
    assert points > 400
    assert browser.js("return document.querySelectorAll('#decisions tbody tr').length") == 25

    # a new mark reaches the page through the stream, without a reload
    browser.js("window.sameDocument = true")
    _mark_next_candle(ledger, Decimal("123.45"))
    eth_unrealized = f"return document.querySelector('{rows}[data-symbol=\"ETHUSDT\"]').cells[6]" \
                     ".textContent"
    browser.wait(lambda: browser.js(eth_unrealized) == "123.45", "the pushed mark")
    assert browser.js("return window.sameDocument") is True

    # the kill switch: never set, then engaged with the button
    browser.wait_text("#kill-state", "clear")
    browser.wait_text("#kill-toggle", "Engage kill switch")
    browser.type("#kill-reason", "exchange outage (page test)")
    browser.click("#kill-toggle")
    browser.wait_text("#kill-state", "ENGAGED")
    assert "published on" in (browser.text("#message") or "")
    assert "exchange outage (page test)" in (browser.text("#kill-detail") or "")
    assert asyncio.run(restored_kill_switch(bus, topic_prefix)) is True
    browser.screenshot(tmp_path / "dashboard.png")  # for a person to look at when it fails

    # the read-only token watches but cannot clear it
    browser.click("#logout")
    browser.wait(lambda: browser.js("return !document.getElementById('login').hidden"),
                 "the token form again")
    assert browser.js("return sessionStorage.getItem('meridian.control.token')") is None
    browser.type("#token", READ)
    browser.click("#connect")
    browser.wait_text("#live", "live")
    browser.wait_text("#kill-toggle", "Clear kill switch")
    browser.type("#kill-reason", "not allowed")
    browser.click("#kill-toggle")
    browser.wait(lambda: "read-only token" in (browser.text("#message") or ""),
                 "the read-only refusal")
    assert browser.text("#kill-state") == "ENGAGED"
    assert asyncio.run(restored_kill_switch(bus, topic_prefix)) is True

    # a wrong token is refused and forgotten
    browser.click("#logout")
    browser.type("#token", "not-a-token")
    browser.click("#connect")
    browser.wait(lambda: browser.text("#login-error") == "The token was refused.",
                 "the refusal")
    assert browser.js("return sessionStorage.getItem('meridian.control.token')") is None

    # the stream also takes the token in its query string, and uvicorn's log line of it (which
    # has the query string) shows no token; a wrong one is refused at the handshake
    ws_url = base.replace("http://", "ws://") + "/v1/ws/portfolio?token="
    browser.js("window.viaQuery = null; window.refused = false;"
               "const ok = new WebSocket(arguments[0]);"
               "ok.onmessage = (e) => { window.viaQuery = JSON.parse(e.data).type; ok.close(); };"
               "const bad = new WebSocket(arguments[1]);"
               "bad.onclose = () => { window.refused = true; };",
               ws_url + READ, ws_url + "guess-" + READ)
    browser.wait(lambda: browser.js("return window.viaQuery") == "portfolio",
                 "a stream authenticated by its query string")
    browser.wait(lambda: browser.js("return window.refused"), "the refused stream")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, logs.read_text()
    text = logs.read_text()
    assert "portfolio stream opened" in text
    assert "kill switch ENGAGED" in text
    assert '"WebSocket /v1/ws/portfolio?token=***\\" [accepted]' in text
    assert '"WebSocket /v1/ws/portfolio?token=***\\" 403' in text
    assert WRITE not in text
    assert READ not in text

