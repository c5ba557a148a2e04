"""State shared by the HTTP handlers and WebSocket sessions of one server.

Kept apart from server.py so the venue modules (bybit.py, binance.py) depend on this small
object instead of on the server, which in turn imports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meridian_fake_exchange.faults import Faults, Stats
from meridian_fake_exchange.market import MarketView

if TYPE_CHECKING:
    from meridian_fake_exchange.ws import PushSession


try:  # orjson is several times faster on big kline pages; optional
    import orjson

    def dumps(obj: Any) -> str:
        """Compact JSON, like the venues send."""
        return orjson.dumps(obj).decode()
except ImportError:  # pragma: no cover - depends on the environment
    def dumps(obj: Any) -> str:
        """Compact JSON, like the venues send."""
        return json.dumps(obj, separators=(",", ":"))


@dataclass
class Context:
    market: MarketView
    faults: Faults
    stats: Stats
    poll_interval_s: float = 0.01
    sessions: set[PushSession] = field(default_factory=set)

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.market.data.symbols

    @property
    def timeframes(self) -> tuple[str, ...]:
        return self.market.data.timeframes

    def now_ms(self) -> int:
        return self.market.clock.now_ms()
