"""HTTP admin routes, so a benchmark or a service in another process can drive the fake.

  POST /_admin/faults  {"action": "rate_limit", "n": 3}   (or a list of such objects)
       actions and their fields (same meaning as the FakeExchange methods):
         rate_limit n | server_error n status | slow seconds n | rate_limit_per_s rate
         drop_ws after | drop_ws_every k | duplicate_ws p | reorder_ws p
         correction symbol timeframe open_time_ms [values] [delay_ms]
         reject_orders code msg [n=1] [status]   next n order creates (either venue) answer
                                                 code (Bybit retCode > 0; Binance code < 0,
                                                 HTTP status, default 400)
         accept_then_timeout [n=1] [delay_s=30] [drop=false]
                                                 next n accepted creates: answer held back
                                                 delay_s (client times out) or connection cut
         partial_fills pieces [n=1]              next n orders fill in `pieces` parts
         clear                                   removes every fault above
  GET  /_admin/orders         {"orders": [...every accepted order, Bybit shape + "category",
                              "account"], "create_requests": {orderLinkId: count}}
                              (?api_key=K for one account), so another process can assert
                              "the exchange saw no duplicate order"
  GET  /_admin/executions     {"executions": [...]}; /_admin/positions {"positions": [...]}
  GET  /_admin/wallet?api_key=K   the UNIFIED wallet (api_key optional with one account)
       each of these four takes ?venue=binance: the Binance futures accounts, in Binance's
       shapes (orders as GET /fapi/v1/order, fills as userTrades, positionRisk v3, account
       v3), create_requests counting newClientOrderId
  GET  /_admin/stats          request/push counters; POST /_admin/stats/reset zeroes them
  GET  /_admin/clock          {"now_ms", "speed", "paused"}
  POST /_admin/clock          any of {"set_ms", "advance_ms", "speed", "pause": true|false}
  GET  /_admin/info           symbols, timeframes, base URL, clock

No route here ever returns an API secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from meridian_fake_exchange.server import FakeExchange


def _fault_actions(server: FakeExchange) -> dict[str, Callable[[dict[str, Any]], Any]]:
    def correction(body: dict[str, Any]) -> dict[str, Any]:
        fix = server.correction(str(body["symbol"]), str(body["timeframe"]),
                                int(body["open_time_ms"]), body.get("values"),
                                None if body.get("delay_ms") is None else int(body["delay_ms"]))
        return {"wrong": fix.wrong._asdict(), "true": fix.true._asdict(),
                "effective_ms": fix.effective_ms}

    def rate(body: dict[str, Any]) -> None:
        value = body.get("rate")
        server.set_rate_limit_per_s(None if value is None else float(value))

    return {
        "rate_limit": lambda b: server.rate_limit(int(b.get("n", 1))),
        "server_error": lambda b: server.server_error(int(b.get("n", 1)),
                                                      int(b.get("status", 503))),
        "slow": lambda b: server.slow(float(b["seconds"]), int(b.get("n", 1))),
        "rate_limit_per_s": rate,
        "drop_ws": lambda b: {"armed": server.drop_ws(int(b.get("after", 0)))},
        "drop_ws_every": lambda b: server.drop_ws_every(
            None if b.get("k") is None else int(b["k"])),
        "duplicate_ws": lambda b: server.duplicate_ws(float(b["p"])),
        "reorder_ws": lambda b: server.reorder_ws(float(b["p"])),
        "correction": correction,
        "reject_orders": lambda b: server.reject_orders(
            int(b["code"]), str(b.get("msg", "")), int(b.get("n", 1)),
            None if b.get("status") is None else int(b["status"])),
        "accept_then_timeout": lambda b: server.accept_then_timeout(
            int(b.get("n", 1)), float(b.get("delay_s", 30.0)), drop=bool(b.get("drop", False))),
        "partial_fills": lambda b: server.partial_fills(int(b["pieces"]), int(b.get("n", 1))),
        "clear": lambda b: server.clear_faults(),
    }


class _Admin:
    """The route handlers; a class so each stays small."""

    def __init__(self, server: FakeExchange) -> None:
        self.server = server
        self.actions = _fault_actions(server)

    async def faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            items = body if isinstance(body, list) else [body]
            results = [self._apply(item) for item in items]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "results": results})

    def _apply(self, item: dict[str, Any]) -> Any:
        action = self.actions.get(str(item.get("action")))
        if action is None:
            raise ValueError(f"unknown action {item.get('action')!r}; "
                             f"known: {sorted(self.actions)}")
        return action(item)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.server.stats.snapshot())

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.server.stats.reset()
        return web.json_response({"ok": True})

    def _clock_state(self) -> dict[str, Any]:
        clock = self.server.clock
        return {"now_ms": clock.now_ms(), "speed": clock.speed, "paused": clock.paused}

    async def get_clock(self, request: web.Request) -> web.Response:
        return web.json_response(self._clock_state())

    async def post_clock(self, request: web.Request) -> web.Response:
        try:
            self._move_clock(await request.json())
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response(self._clock_state())

    def _move_clock(self, body: dict[str, Any]) -> None:
        clock = self.server.clock
        if body.get("set_ms") is not None:
            clock.set(int(body["set_ms"]))
        if body.get("advance_ms") is not None:
            clock.advance(int(body["advance_ms"]))
        if body.get("speed") is not None:
            clock.set_speed(float(body["speed"]))
        if body.get("pause") is True:
            clock.pause()
        elif body.get("pause") is False:
            clock.resume()

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.server.describe())

    async def truth(self, request: web.Request) -> web.Response:
        """GET /_admin/{orders,executions,positions,wallet}[?api_key=K]."""
        what = request.match_info["what"]
        key = request.query.get("api_key") or None
        venue = request.query.get("venue") or "bybit"
        server = self.server
        try:
            if what == "orders":
                engine = server.binance_engine if venue == "binance" else server.engine
                body: dict[str, Any] = {"orders": server.orders(key, venue),
                                        "create_requests": dict(engine.create_requests)}
            elif what == "executions":
                body = {"executions": server.executions(key, venue)}
            elif what == "positions":
                body = {"positions": server.positions(key, venue)}
            else:
                body = {"wallet": server.wallet(key, venue)}
        except (KeyError, ValueError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response(body)


def admin_routes(server: FakeExchange) -> list[web.RouteDef]:
    admin = _Admin(server)
    return [
        web.post("/_admin/faults", admin.faults),
        web.get("/_admin/stats", admin.stats),
        web.post("/_admin/stats/reset", admin.reset_stats),
        web.get("/_admin/clock", admin.get_clock),
        web.post("/_admin/clock", admin.post_clock),
        web.get("/_admin/info", admin.info),
        web.get("/_admin/{what:orders|executions|positions|wallet}", admin.truth),
    ]
