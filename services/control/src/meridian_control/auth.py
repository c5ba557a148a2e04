"""Bearer-token auth for the HTTP routes and the WebSocket.

Two tokens: MERIDIAN_CONTROL_TOKEN opens every route, MERIDIAN_CONTROL_READ_TOKEN only the ones
that change nothing (GET, and the portfolio WebSocket), so a dashboard on a shared screen can
watch without being able to engage the kill switch or promote a model. Tokens are compared in
constant time (`secrets.compare_digest`, both always), and are never logged, echoed or shown in
a repr. No token or a wrong one: 401; the read-only token where state changes: 403.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket, WebSocketDisconnect, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

log = logging.getLogger(__name__)

WS_AUTH_TIMEOUT_S = 10.0
WS_POLICY_VIOLATION = 1008  # RFC 6455 close code: the client broke the endpoint's policy

_QUERY_TOKEN = re.compile(r"(?i)([?&]token=)[^&\s\"']*")


class Access(enum.IntEnum):
    READ = 1
    WRITE = 2


class Tokens:
    """The configured tokens, as bytes for `secrets.compare_digest`; never shown."""

    __slots__ = ("_read", "_write")

    def __init__(self, write: SecretStr, read: SecretStr | None = None) -> None:
        self._write = write.get_secret_value().encode()
        self._read = read.get_secret_value().encode() if read is not None else None

    def access(self, presented: str) -> Access | None:
        """What a presented token grants (None: nothing). Both comparisons always run, in
        constant time, so the answer's timing says nothing about either token."""
        try:
            given = presented.encode("latin-1")  # the header's bytes, as the client sent them
        except UnicodeEncodeError:
            return None  # no configured token (a header value) has such characters
        write = secrets.compare_digest(given, self._write)
        read = secrets.compare_digest(given, self._read if self._read is not None else b"")
        if write:
            return Access.WRITE
        if read and self._read is not None:
            return Access.READ
        return None

    def __repr__(self) -> str:
        return f"Tokens(write=**********, read={'**********' if self._read else None})"


def redact_query_token(text: str) -> str:
    """`/v1/ws/portfolio?token=abc` -> `/v1/ws/portfolio?token=***`: uvicorn logs a WebSocket's
    path with its query string, where a client may put its token."""
    return _QUERY_TOKEN.sub(r"\1***", text)


_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="MERIDIAN_CONTROL_TOKEN (every route) or MERIDIAN_CONTROL_READ_TOKEN (GET routes "
                "only).")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail,
                         headers={"WWW-Authenticate": "Bearer"})


def _check(request: Request, credentials: HTTPAuthorizationCredentials | None,
           needed: Access) -> Access:
    tokens: Tokens = request.app.state.tokens
    if credentials is None:
        _refused(request.method, request.url.path, request, "no bearer token")
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    access = tokens.access(credentials.credentials)
    if access is None:
        _refused(request.method, request.url.path, request, "unknown token")
        raise _unauthorized("invalid token")
    if access < needed:
        _refused(request.method, request.url.path, request,
                 "read-only token on a route that changes state")
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "the read-only token cannot change state: use the token of "
                            "MERIDIAN_CONTROL_TOKEN")
    return access


def _refused(method: str, path: str, conn: Request | WebSocket, why: str) -> None:
    client = conn.client.host if conn.client else "-"
    log.warning("refused %s %s: %s", method, path, why, extra={"client": client})


async def require_read(request: Request, credentials: Credentials) -> Access:
    """The read or the write token."""
    return _check(request, credentials, Access.READ)


async def require_write(request: Request, credentials: Credentials) -> Access:
    """The write token."""
    return _check(request, credentials, Access.WRITE)


# Route parameters (resolved from this module's names: the annotations are strings).
ReadAccess = Annotated[Access, Depends(require_read)]
WriteAccess = Annotated[Access, Depends(require_write)]


async def websocket_access(websocket: WebSocket) -> Access | None:
    """Authenticate a WebSocket before anything is sent on it; None: refused and closed.

    The token comes as the query parameter `token` (checked before the handshake: a wrong one
    is refused with HTTP 403 and the socket never opens) or, without it, as the first message
    `{"token": "..."}` within WS_AUTH_TIMEOUT_S of the handshake (a wrong or missing one closes
    the socket with code 1008). The first message is what the page uses: a URL ends up in
    proxies' and browsers' histories, a message does not. Either token may watch.
    """
    tokens: Tokens = websocket.app.state.tokens
    path = websocket.url.path
    query = websocket.query_params.get("token")
    if query is not None:
        access = tokens.access(query)
        if access is None:
            _refused("WEBSOCKET", path, websocket, "unknown token")
            await websocket.close(code=WS_POLICY_VIOLATION, reason="invalid token")
        else:
            await websocket.accept()
        return access
    await websocket.accept()
    try:
        first = await asyncio.wait_for(websocket.receive_text(), WS_AUTH_TIMEOUT_S)
    except TimeoutError:
        _refused("WEBSOCKET", path, websocket, "no token")
        await websocket.close(code=WS_POLICY_VIOLATION,
                              reason=f"no token within {WS_AUTH_TIMEOUT_S:g}s")
        return None
    except (WebSocketDisconnect, KeyError):  # gone, or a binary first message
        return None
    access = tokens.access(_token_of(first))
    if access is None:
        _refused("WEBSOCKET", path, websocket, "unknown token")
        await websocket.close(code=WS_POLICY_VIOLATION,
                              reason='invalid token: send {"token": "<token>"} first')
    return access


def _token_of(message: str) -> str:
    try:
        body = json.loads(message)
    except ValueError:
        return ""
    token = body.get("token") if isinstance(body, dict) else None
    return token.strip() if isinstance(token, str) else ""
