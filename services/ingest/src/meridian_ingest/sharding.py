"""Which live-ingest replica owns which symbols, and the lease that makes ownership exclusive.

Assignment: symbols sorted by a stable hash, dealt round-robin to the N replicas, so every
replica gets within one symbol of the same load and the answer depends only on (symbols, N).

Exclusivity: a replica publishes a symbol only while it holds that symbol's PostgreSQL advisory
lock (session-scoped, so it is released the moment the process or its connection dies). When N
changes, replicas restart with the new N one by one; a replica that now owns a symbol still held
by an old-layout replica waits for the lock, then resumes from the last candle on the topic.
That is how resharding moves a symbol without a gap (the new owner catches up over REST from
the topic's last candle) or a duplicate (the old owner has stopped before the lock is free).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable

import psycopg

log = logging.getLogger(__name__)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def owned_symbols(symbols: Iterable[str], replicas: int, index: int) -> tuple[str, ...]:
    """The symbols replica `index` of `replicas` owns (stable, balanced, disjoint, covering)."""
    if not 0 <= index < replicas:
        raise ValueError(f"replica index {index} is not in [0, {replicas})")
    ordered = sorted(set(symbols), key=lambda s: (_hash(s), s))
    return tuple(ordered[index::replicas])


def lock_key(venue: str, symbol: str, timeframe: str) -> int:
    """A signed 64-bit advisory-lock key for one published stream."""
    value = _hash(f"meridian-ingest:{venue}:{symbol}:{timeframe}")
    return value - (1 << 64) if value >= (1 << 63) else value


class Leases:
    """Advisory locks held on one dedicated connection for as long as this replica runs."""

    def __init__(self, conninfo: str, venue: str, timeframe: str) -> None:
        self.conninfo = conninfo
        self.venue = venue
        self.timeframe = timeframe
        self._conn: psycopg.AsyncConnection | None = None
        self.held: set[str] = set()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        return self._conn

    async def try_acquire(self, symbol: str) -> bool:
        conn = await self._connection()
        row = await (await conn.execute("select pg_try_advisory_lock(%s)",
                                        (lock_key(self.venue, symbol, self.timeframe),))
                     ).fetchone()
        if row and row[0]:
            self.held.add(symbol)
            return True
        return False

    async def acquire_all(self, symbols: Iterable[str], retry_s: float = 1.0) -> None:
        """Take every lock, waiting for those another replica still holds."""
        waiting = [s for s in symbols if s not in self.held]
        announced = False
        while waiting:
            for symbol in list(waiting):
                if await self.try_acquire(symbol):
                    waiting.remove(symbol)
            if waiting:
                if not announced:
                    log.info("waiting for symbols another replica still owns",
                             extra={"symbols": waiting})
                    announced = True
                await asyncio.sleep(retry_s)

    async def alive(self) -> bool:
        """True while the lock connection is up (the locks are ours only while it is)."""
        if self._conn is None:
            return not self.held
        try:
            await self._conn.execute("select 1")
        except psycopg.Error:
            return False
        return True

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()  # releases every session lock
            self._conn = None
            self.held.clear()
