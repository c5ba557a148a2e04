"""Live ingest: closed candles from the exchange onto md.candle.v1, none lost, none doubled.

REST is the authority, the stream is the trigger. A stream update for a newer candle means the
previous ones closed: they are fetched over REST (a closed candle's final values, whatever the
stream delivered or dropped) and published. A stream update that disagrees with an already
published candle is a hint of a correction: REST is asked again and, if the exchange's values
did change, the candle is republished with revision + 1. A clock poll catches up anything the
stream missed (dropped connection, stale stream, last candle of a quiet market), so a dead
stream costs latency, never data. Every catch-up also re-reads the last `recheck` published
candles in the same request, so a correction the exchange makes within that many intervals is
republished even when the stream never reports it.

Metrics (`IngestMetrics`, mode `live`): every published candle; a resume whose topic already
holds candles but misses closed ones up to the exchange's now is a gap, and the candles the
resume's catch-up publishes after it are the gap repaired. A dropped stream is a retryable
exchange error.

Per key the topic holds: every closed candle once, in open-time order, then corrections as new
revisions. Each candle is upserted into the table before it is published, so the table is never
behind the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
from google.protobuf.message import Message

from meridian.v1 import candle_pb2, common_pb2
from meridian_common import topics
from meridian_common.bus.base import Bus, Producer
from meridian_common.host import publish
from meridian_common.marketdata import RawCandle, make_candle, make_funding, timeframe_ms
from meridian_common.metrics import NullSensor, Sensor
from meridian_ingest import store
from meridian_ingest.exchange.client import STREAM_ERRORS, MarketData
from meridian_ingest.ingest_metrics import IngestMetrics
from meridian_ingest.tail import published_candles

log = logging.getLogger(__name__)

PRODUCER = "ingest"
RECENT = 500  # candles per symbol remembered for spotting duplicates and corrections
FUNDING_MS = 8 * 3_600_000

Values = tuple[Decimal, ...]


def _values(raw: RawCandle | candle_pb2.Candle) -> Values:
    return (Decimal(raw.open), Decimal(raw.high), Decimal(raw.low), Decimal(raw.close),
            Decimal(raw.volume))


@dataclass(slots=True)
class SymbolState:
    """What the topic holds for one symbol: the last open time and recent values by open time."""

    last_open: int | None = None
    recent: OrderedDict[int, tuple[Values, int]] = field(default_factory=OrderedDict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    forming_open: int | None = None
    last_message: float = field(default_factory=time.monotonic)
    last_funding: int | None = None
    funding_watermark: int = 0

    def remember(self, open_ms: int, values: Values, revision: int) -> None:
        self.recent[open_ms] = (values, revision)
        self.recent.move_to_end(open_ms)
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        if self.last_open is None or open_ms > self.last_open:
            self.last_open = open_ms


@dataclass(slots=True)
class LiveStats:
    published: int = 0
    revisions: int = 0
    duplicates_dropped: int = 0
    rest_catch_ups: int = 0
    reconnects: int = 0
    stale: int = 0
    funding: int = 0
    # open time -> monotonic publish time (latency probes in benchmarks)
    published_at: dict[tuple[str, int], float] = field(default_factory=dict)


class LiveIngest:
    def __init__(self, md: MarketData, bus: Bus, producer: Producer,
                 conn: psycopg.AsyncConnection, *, venue: str, prefix: str, timeframe: str,
                 start_ms: int | None, stale_after_s: float, poll_s: float, grace_s: float,
                 funding: bool, recheck: int = 3, sensor: Sensor | None = None,
                 metrics: IngestMetrics | None = None) -> None:
        self.md = md
        self.bus = bus
        self.producer = producer
        self.conn = conn
        self.venue = venue
        self.prefix = prefix
        self.timeframe = timeframe
        self.tf = timeframe_ms(timeframe)
        self.start_ms = start_ms
        self.stale_after_s = stale_after_s
        self.poll_s = poll_s
        self.grace_ms = int(grace_s * 1000)
        self.funding = funding
        self.recheck = recheck
        self.sensor = sensor or NullSensor()
        self.metrics = metrics or IngestMetrics()
        self.states: dict[str, SymbolState] = {}
        self.stats = LiveStats()
        self._db_lock = asyncio.Lock()
        self._failures: dict[str, int] = {}

    # -- resume -----------------------------------------------------------------------------

    async def resume(self, symbol: str, now_ms: int) -> SymbolState:
        """State from the topic; with nothing published yet, start at START or at now."""
        state = SymbolState()
        key = topics.market_key(self.venue, symbol)
        for candle in await published_candles(self.bus, self.prefix, key, RECENT):
            if candle.timeframe == self.timeframe:
                state.remember(candle.open_time_ms, _values(candle), candle.revision)
        if state.last_open is None:
            first = self.start_ms if self.start_ms is not None else now_ms - self.tf
            state.last_open = (first // self.tf) * self.tf - self.tf
        async with self._db_lock:
            state.last_funding = await store.last_funding_ms(self.conn, self.venue, symbol)
        if state.last_funding is None and self.start_ms is not None:
            state.last_funding = self.start_ms - 1
        self.states[symbol] = state
        log.info("resuming", extra={"symbol": symbol, "after_open_ms": state.last_open})
        return state

    # -- publishing -------------------------------------------------------------------------

    async def emit(self, symbol: str, raw: RawCandle) -> bool:
        """Publish a closed candle unless the topic already has these values for it."""
        state = self.states[symbol]
        values = _values(raw)
        prev = state.recent.get(raw.open_time_ms)
        if prev is not None and prev[0] == values:
            self.stats.duplicates_dropped += 1
            return False
        async with self._db_lock:
            if prev is None and state.last_open is not None and raw.open_time_ms <= state.last_open:
                stored = await store.candle_values(self.conn, self.venue, symbol, self.timeframe,
                                                   raw.open_time_ms)
                if stored is not None and _values(stored[0]) == values:
                    self.stats.duplicates_dropped += 1
                    return False
            revision = await store.upsert_candle(self.conn, self.venue, symbol, self.timeframe,
                                                 raw)
            if revision is None:  # the table already had these values (written, not published)
                stored = await store.candle_values(self.conn, self.venue, symbol,
                                                   self.timeframe, raw.open_time_ms)
                revision = stored[1] if stored is not None else 0
        if prev is not None:
            revision = max(revision, prev[1] + 1)
        candle = make_candle(self.venue, symbol, self.timeframe, raw, PRODUCER, revision, self.tf)
        await publish(self.producer, self.prefix,
                      [(topics.CANDLE, topics.market_key(self.venue, symbol), candle)],
                      self.sensor)
        await self.producer.flush()
        state.remember(raw.open_time_ms, values, revision)
        self.stats.published += 1
        self.stats.published_at[(symbol, raw.open_time_ms)] = time.monotonic()
        if revision:
            self.stats.revisions += 1
            log.info("candle corrected", extra={"symbol": symbol, "open_ms": raw.open_time_ms,
                                                "revision": revision})
        self.sensor.event_time(candle.close_time_ms)
        self.metrics.candle(symbol, "live", candle.close_time_ms)
        return True

    async def catch_up(self, symbol: str, now_ms: int | None = None) -> int:
        """Publish, over REST, every closed candle after the last one on the topic."""
        state = self.states[symbol]
        async with state.lock:
            if now_ms is None:
                now_ms = await self.md.server_time()
            assert state.last_open is not None
            last = state.last_open
            since = last + self.tf - self.recheck * self.tf
            sent = 0
            fetched = False
            while since + self.tf <= now_ms:
                fetched = True
                rows = await self.md.candles(symbol, self.timeframe, since)
                for raw in rows:
                    if raw.open_time_ms + self.tf > now_ms:
                        break  # forming
                    if raw.open_time_ms <= last and raw.open_time_ms not in state.recent:
                        continue  # before this replica's start: not ours to publish
                    if await self.emit(symbol, raw):
                        sent += 1
                since += self.md.profile.ohlcv_page * self.tf
            if fetched:
                self.stats.rest_catch_ups += 1
            return sent

    async def verify(self, symbol: str, open_ms: int) -> None:
        """The stream disagrees with a published candle: ask REST and republish if it changed."""
        state = self.states[symbol]
        async with state.lock:
            rows = await self.md.candles(symbol, self.timeframe, open_ms, 1)
            for raw in rows:
                if raw.open_time_ms == open_ms:
                    await self.emit(symbol, raw)

    # -- the stream -------------------------------------------------------------------------

    async def on_updates(self, symbol: str, updates: list[RawCandle]) -> None:
        state = self.states[symbol]
        state.last_message = time.monotonic()
        newest = max((u.open_time_ms for u in updates), default=None)
        assert state.last_open is not None
        if newest is not None and newest > state.last_open + self.tf:
            # a candle after the next one has started: everything before `newest` is closed
            await self.catch_up(symbol, now_ms=newest)
        for update in updates:
            known = state.recent.get(update.open_time_ms)
            if known is not None and known[0] != _values(update) and \
                    update.open_time_ms < (newest or 0):
                await self.verify(symbol, update.open_time_ms)

    async def stream(self, symbol: str, stop: asyncio.Event) -> None:
        """Watch one symbol's candles until stopped; reconnect with backoff when it breaks."""
        while not stop.is_set():
            try:
                # asyncio.timeout, not wait_for: wait_for would run the watch in a new task that
                # starts a loop iteration later, and a message arriving in between is reported
                # by ccxt only with the next one (a whole update interval late).
                async with asyncio.timeout(self.stale_after_s):
                    updates = await self.md.watch(symbol, self.timeframe)
            except TimeoutError:
                self.stats.stale += 1
                log.warning("stream stale, reconnecting",
                            extra={"symbol": symbol, "silent_s": self.stale_after_s})
                await self.md.reset_stream()
                await self.catch_up(symbol)
                continue
            except STREAM_ERRORS as exc:
                await self._reconnect(symbol, exc)
                continue
            self._failures[symbol] = 0
            await self.on_updates(symbol, updates)

    async def _reconnect(self, symbol: str, exc: BaseException) -> None:
        failures = self._failures.get(symbol, 0)
        self._failures[symbol] = failures + 1
        self.stats.reconnects += 1
        self.md.stats.count(exc)  # a retryable exchange error (metrics), retried by reconnecting
        delay = self.md.policy.delay(min(failures, 10))
        log.warning("stream dropped, reconnecting", extra={
            "symbol": symbol, "error": type(exc).__name__, "delay_s": round(delay, 3)})
        await asyncio.sleep(delay)
        await self.catch_up(symbol)

    # -- the clock poll ---------------------------------------------------------------------

    async def poll(self, stop: asyncio.Event) -> None:
        """Every poll_s: catch up any closed candle the stream has not delivered within grace."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
            if stop.is_set():
                return
            now_ms = await self.md.server_time()
            for symbol, state in self.states.items():
                assert state.last_open is not None
                if now_ms >= state.last_open + 2 * self.tf + self.grace_ms:
                    await self.catch_up(symbol, now_ms)
                if self.funding:
                    await self.poll_funding(symbol, now_ms)

    async def poll_funding(self, symbol: str, now_ms: int) -> int:
        """Publish funding settlements newer than the last stored one, then a funding Watermark
        at the last candle boundary `grace_s` behind the exchange clock: settlements appear in
        the exchange's history within that grace, so none at or before it is still to come.
        The features service waits for that watermark before joining a candle's funding."""
        state = self.states[symbol]
        since = (state.last_funding + 1) if state.last_funding is not None else now_ms - FUNDING_MS
        rows = []
        if now_ms >= since:
            rows = [(t, r) for t, r in await self.md.funding(symbol, since) if t <= now_ms]
        key = topics.market_key(self.venue, symbol)
        items: list[tuple[str, str, Message]] = []
        if rows:
            async with self._db_lock:
                await store.upsert_funding(self.conn, self.venue, symbol, rows)
            items = [(topics.FUNDING, key, make_funding(self.venue, symbol, t, rate, PRODUCER))
                     for t, rate in rows]
            state.last_funding = rows[-1][0]
            self.stats.funding += len(rows)
        settled = (now_ms - self.grace_ms) // self.tf * self.tf
        if len(rows) >= self.md.profile.funding_page:  # a full page: more may follow it
            settled = min(settled, rows[-1][0])
        if settled > state.funding_watermark:
            state.funding_watermark = settled
            items.append((topics.FUNDING, key, common_pb2.Watermark(
                key=key, event_time_ms=settled, producer=PRODUCER)))
        if items:
            await publish(self.producer, self.prefix, items, self.sensor)
            await self.producer.flush()
        return len(rows)

    # -- run --------------------------------------------------------------------------------

    async def _resume_catch_up(self, symbol: str, state: SymbolState, now_ms: int) -> None:
        """The first catch-up after resuming; when the topic had candles and closed ones are
        missing after its last (this ingest was down or the symbol moved replicas), it is a gap
        and the new candles it publishes are that gap repaired."""
        assert state.last_open is not None
        gap = bool(state.recent) and now_ms >= state.last_open + 2 * self.tf
        published, revisions = self.stats.published, self.stats.revisions
        await self.catch_up(symbol, now_ms)
        if gap:
            self.metrics.gap_detected(symbol)
            self.metrics.gap_repaired(symbol, (self.stats.published - published)
                                      - (self.stats.revisions - revisions))

    async def run(self, symbols: tuple[str, ...], stop: asyncio.Event) -> None:
        now_ms = await self.md.server_time()
        for symbol in symbols:
            state = await self.resume(symbol, now_ms)
            await self._resume_catch_up(symbol, state, now_ms)
        tasks = [asyncio.create_task(self.stream(s, stop), name=f"stream-{s}") for s in symbols]
        tasks.append(asyncio.create_task(self.poll(stop), name="poll"))
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [*tasks, stopper]:
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
