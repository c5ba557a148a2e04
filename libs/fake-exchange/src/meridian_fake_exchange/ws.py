"""The venue-independent part of a WebSocket kline connection.

A connection owns its subscriptions and a push task that polls the fake clock every few
milliseconds and sends whatever happened since the last poll (market.events). Venue
subclasses only parse control messages and format pushes. Every data push goes through one
pipeline where the injected faults act: reorder (hold one message back behind the next),
duplicate, and drop (abort the TCP connection without a close frame, like a network failure).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from meridian_fake_exchange.context import Context, dumps
from meridian_fake_exchange.market import Event


@dataclass
class Subscription:
    """One (symbol, timeframe) stream on a connection: `cursor` is the fake time pushed up to,
    `pending` the snapshot taken when it was subscribed, not sent yet."""

    topic: str
    symbol: str
    timeframe: str
    cursor: int
    pending: list[Event] = field(default_factory=list)


class PushSession(ABC):
    """One client connection. Subclasses implement `on_text` and `format_event`."""

    def __init__(self, ctx: Context, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.ctx = ctx
        self.request = request
        self.ws = ws
        self.subs: dict[str, Subscription] = {}
        self.pushed = 0
        self.drop_after: int | None = None
        self.aborted = False
        self._held: str | None = None
        self._lock = asyncio.Lock()
        self._tick_lock = asyncio.Lock()

    # -- to implement --------------------------------------------------------------------------

    @abstractmethod
    async def on_text(self, text: str) -> None:
        """Handle one text frame from the client (subscribe, ping, ...)."""

    @abstractmethod
    def format_event(self, sub: Subscription, event: Event) -> str:
        """The JSON text of one kline push."""

    @abstractmethod
    async def on_open(self) -> None:
        """Called once after the handshake (e.g. for streams named in the URL)."""

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        stats = self.ctx.stats
        self.ctx.sessions.add(self)
        stats.ws_connections += 1
        stats.ws_open += 1
        pusher = asyncio.create_task(self._push_loop())
        try:
            await self.on_open()
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self.on_text(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher
            self.ctx.sessions.discard(self)
            stats.ws_open -= 1

    def drop_after_pushes(self, k: int) -> None:
        """Abort this connection once `k` more data messages have been pushed (0: now)."""
        if k <= 0:
            self.abort()
        else:
            self.drop_after = self.pushed + k

    def abort(self, *, fault: bool = True) -> None:
        """Cut the TCP connection without a WebSocket close frame (`fault`: count it in
        stats.ws_dropped; a server shutdown does not)."""
        if self.aborted:
            return
        self.aborted = True
        if fault:
            self.ctx.stats.ws_dropped += 1
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    # -- sending -------------------------------------------------------------------------------

    async def send_control(self, obj: Any) -> None:
        """Acks and pongs: sent as they are, no faults applied, not counted as pushes."""
        await self._write(dumps(obj))

    def subscribe(self, topic: str, symbol: str, timeframe: str) -> None:
        """Add a stream; its snapshot is taken now (before the ack goes out), so what a client
        sees does not depend on when the push task next runs."""
        if topic not in self.subs:
            market = self.ctx.market
            now = market.clock.now_ms()
            self.subs[topic] = Subscription(topic, symbol, timeframe, now,
                                            market.snapshot(symbol, timeframe, now))

    def unsubscribe(self, topic: str) -> None:
        self.subs.pop(topic, None)

    async def _push_loop(self) -> None:
        while not self.ws.closed and not self.aborted:
            await self.tick()
            await asyncio.sleep(self.ctx.poll_interval_s)

    async def tick(self) -> None:
        """Push everything that happened on the fake clock since the previous tick."""
        async with self._tick_lock:
            market = self.ctx.market
            now = market.clock.now_ms()
            batch: list[tuple[Subscription, Event]] = []
            for sub in list(self.subs.values()):
                events = sub.pending + market.events(sub.symbol, sub.timeframe, sub.cursor, now)
                sub.pending = []
                sub.cursor = now  # also when the clock was set back: continue from there
                batch.extend((sub, e) for e in events)
            batch.sort(key=lambda item: (item[1].time_ms, item[1].order))
            for sub, event in batch:
                if self.aborted or self.ws.closed:
                    return
                await self._push(self.format_event(sub, event))

    async def _push(self, text: str) -> None:
        faults = self.ctx.faults
        if self._held is None and faults.chance(faults.reorder_p):
            self._held = text  # goes out right after the next message
            return
        await self._send_data(text)
        if self._held is not None:
            held, self._held = self._held, None
            await self._send_data(held)
        if faults.chance(faults.duplicate_p):
            await self._send_data(text)

    async def _send_data(self, text: str) -> None:
        if self.aborted:
            return
        await self._write(text)
        self.pushed += 1
        self.ctx.stats.ws_messages += 1
        every = self.ctx.faults.drop_every
        if (self.drop_after is not None and self.pushed >= self.drop_after) \
                or (every and self.pushed % every == 0):
            self.abort()

    async def _write(self, text: str) -> None:
        if self.aborted or self.ws.closed:
            return
        async with self._lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(text)
