"""GET /: the operator's page (HTML, one stylesheet, one script; no build step, no CDN).

The page itself needs no token and holds no data: it asks for the token, keeps it in the tab's
sessionStorage (gone when the tab closes, never sent to another origin) and reads everything
through the API with it. The headers forbid inline scripts, other origins and framing: a page
with a kill-switch button must not run injected code or be clickjacked.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, status
from fastapi.responses import HTMLResponse, Response

STATIC = Path(__file__).parent / "static"
ASSETS = {"dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8"}

HEADERS = {
    # connect-src 'self' covers ws:// and wss:// to the same host and port (CSP level 3)
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install(app: FastAPI) -> None:
    index = (STATIC / "index.html").read_bytes()
    assets = {name: (STATIC / name).read_bytes() for name in ASSETS}

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(index, headers=HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return Response(assets[name], media_type=ASSETS[name], headers=HEADERS)
