"""Bybit v5 private WebSocket (stream.bybit.com/v5/private): order, execution, position and
wallet pushes, what ccxt.pro's watch_orders / watch_my_trades / watch_positions /
watch_balance listen to.

  {"op":"auth","args":[api_key, expires_ms, hex HMAC-SHA256(secret, "GET/realtime"+expires)]}
  {"op":"subscribe","args":["order","execution","position","wallet"]}  (".linear" / ".spot"
      suffixes filter by category), {"op":"unsubscribe",...}, {"op":"ping"}

Every poll (the server's WebSocket interval) the session lets the engine catch up with the
clock, then pushes what changed in its account since its previous push: each new fill once
(topic "execution"), and the current state of every order and position that changed (topics
"order", "position"; several changes of one order between two polls arrive as its latest
state, as a coalescing feed would), and the wallet when anything changed. Pushes go through
the same fault pipeline as market data (drop/duplicate/reorder).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from meridian_fake_exchange.auth import Authenticator
from meridian_fake_exchange.bybit_views import (
    SpecOf,
    execution_view,
    order_view,
    position_view,
    wallet_view,
)
from meridian_fake_exchange.context import Context, dumps
from meridian_fake_exchange.market import Event
from meridian_fake_exchange.matching import Engine
from meridian_fake_exchange.trading import Account, Order, Position
from meridian_fake_exchange.venue import ParamError
from meridian_fake_exchange.ws import PushSession, Subscription

TOPICS = ("order", "execution", "position", "wallet")


class BybitPrivateSession(PushSession):
    """One /v5/private connection: authenticate once, then subscribe to account topics."""

    def __init__(self, ctx: Context, request: web.Request, ws: web.WebSocketResponse,
                 engine: Engine, auth: Authenticator, spec_of: SpecOf) -> None:
        super().__init__(ctx, request, ws)
        self.engine, self.auth, self.spec_of = engine, auth, spec_of
        self.account: Account | None = None
        self.topics: set[str] = set()
        self.conn_id = str(uuid.uuid4())  # not from the engine's seeded ids
        self._changes = self._fills = 0

    async def on_open(self) -> None:
        """Nothing is sent before the client authenticates."""

    def format_event(self, sub: Subscription, event: Event) -> str:  # pragma: no cover
        raise NotImplementedError("private sessions push account changes, not klines")

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
            op = message.get("op")
        except (ValueError, AttributeError):
            await self._reply({}, False, "error:invalid op", "")
            return
        if op == "ping":
            req_id = message.get("req_id")
            await self.send_control({"req_id": "" if req_id is None else str(req_id),
                                     "op": "pong", "args": [str(self.ctx.now_ms())],
                                     "conn_id": self.conn_id})
        elif op == "auth":
            await self._auth(message)
        elif op in ("subscribe", "unsubscribe"):
            await self._subscribe(message, op)
        else:
            await self._reply(message, False, f"error:invalid op {op}", str(op or ""))

    async def _reply(self, message: dict[str, Any], success: bool, ret_msg: str,
                     op: str) -> None:
        reply: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "op": op,
                                 "conn_id": self.conn_id}
        if message.get("req_id") is not None:
            reply["req_id"] = str(message["req_id"])
        await self.send_control(reply)

    async def _auth(self, message: dict[str, Any]) -> None:
        args = [str(a) for a in message.get("args") or []]
        if self.account is not None:
            await self._reply(message, False, "Repeat auth", "auth")
            return
        if len(args) != 3:
            await self._reply(message, False, "Params Error", "auth")
            return
        try:
            key = self.auth.verify_stream(args[0], args[1], args[2], self.ctx.now_ms())
        except ParamError as exc:
            await self._reply(message, False, f"Request not authorized: {exc.msg}", "auth")
            return
        self.account = self.engine.accounts[key]
        # only what happens from now on is pushed (REST gives the state so far)
        self._changes, self._fills = len(self.account.changes), len(self.account.executions)
        await self._reply(message, True, "", "auth")

    async def _subscribe(self, message: dict[str, Any], op: str) -> None:
        if self.account is None:
            await self._reply(message, False, "Request not authorized", op)
            return
        topics = [str(t) for t in message.get("args") or []]
        unknown = [t for t in topics if t.split(".")[0] not in TOPICS
                   or t.partition(".")[2] not in ("", "linear", "spot")]
        if unknown or not topics:
            await self._reply(message, False, f"error:handler not found,topic:{unknown}", op)
            return
        if op == "subscribe":
            self.topics.update(topics)
        else:
            self.topics.difference_update(topics)
        await self._reply(message, True, "", op)

    async def tick(self) -> None:
        """Push the account's changes since the previous tick."""
        account = self.account
        if account is None or self.aborted or self.ws.closed:
            return
        async with self._tick_lock:
            now = self.ctx.now_ms()
            self.engine.step(now)
            changed = account.changes[self._changes:]
            fills = account.executions[self._fills:]
            self._changes, self._fills = len(account.changes), len(account.executions)
            if not changed and not fills:
                return
            latest: dict[int, Order | Position] = {}
            for item in changed:  # the latest state of each, in the order they last changed
                latest.pop(id(item), None)
                latest[id(item)] = item
            orders = [o for o in latest.values() if isinstance(o, Order)]
            positions = [p for p in latest.values() if isinstance(p, Position)]
            price_of = self.engine.price_of(now)
            await self._send("execution", now, [
                {**execution_view(e, self.spec_of(e.order.category, e.order.symbol)),
                 "category": e.order.category} for e in fills])
            await self._send("order", now, [
                {**order_view(o, self.spec_of(o.category, o.symbol)), "category": o.category}
                for o in orders])
            await self._send("position", now, [
                {**position_view(account, p, price_of(p.symbol),
                                 self.spec_of("linear", p.symbol)), "category": "linear"}
                for p in positions])
            if "wallet" in self.topics:
                await self._push(dumps({"id": str(uuid.uuid4()), "topic": "wallet",
                                        "creationTime": now, "data": [
                                            wallet_view(account, price_of, self.engine.fees)]}))

    async def _send(self, topic: str, now: int, items: list[dict[str, Any]]) -> None:
        """One push per topic; with a category suffix only that category's items."""
        for subscribed in sorted(self.topics):
            base, _, category = subscribed.partition(".")
            if base != topic:
                continue
            data = [i for i in items if category in ("", i["category"])]
            if data:
                await self._push(dumps({"id": str(uuid.uuid4()), "topic": subscribed,
                                        "creationTime": now, "data": data}))
