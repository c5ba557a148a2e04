"""A fake `Store` (the control plane's database access) and an app factory, so routes, auth,
validation, the WebSocket and the response models are tested without PostgreSQL. The SQL itself
is tested against the real database in tests/integration/test_control_ledger.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meridian_common import config
from meridian_common.bus.inprocess import InProcessBus
from meridian_control.app import create_app
from meridian_control.schemas import Decision, EquityPoint, Fill, Position, RuleVerdict
from meridian_control.settings import ControlSettings
from meridian_control.store import (
    DatabaseUnavailable,
    LastEvents,
    PromotedRow,
    PromotionResult,
    UnknownVersion,
)

PREFIX = "t."
WRITE = "write-token-0123456789abcdef"
READ = "read-token-fedcba9876543210"
T0 = datetime(2021, 1, 1, tzinfo=UTC)


def position(symbol: str = "BTCUSDT", quantity: str = "0.5", net: str = "12.5",
             as_of: datetime = T0, account: str = "paper") -> Position:
    q = Decimal(quantity)
    return Position(account=account, exchange="binance", symbol=symbol, quantity=q,
                    side="long" if q > 0 else "short" if q < 0 else "flat",
                    average_price=Decimal("30000"), mark_price=Decimal("30050"),
                    realized_pnl=Decimal("0"), unrealized_pnl=Decimal("25"),
                    fees_paid=Decimal("12.5"), funding_paid=Decimal("0"), net_pnl=Decimal(net),
                    trades_closed=0, as_of=as_of)


class FakeStore:
    """In memory; `down` makes every call fail as an unreachable database does."""

    def __init__(self) -> None:
        self.book: list[Position] = [position()]
        self.account_names = ["paper"]
        self.down: str | None = None
        self.polls = 0
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.models = {"meta-trend": {"v1": True, "v2": False}}
        self.configs = {"trend": {"c1": False}}

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.down is not None:
            raise DatabaseUnavailable(self.down)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def positions(self) -> list[Position]:
        self.polls += 1
        self._call("positions")
        return list(self.book)

    async def fills(self, symbol: str | None, limit: int) -> list[Fill]:
        self._call("fills", symbol, limit)
        return [Fill(time=T0, fill_id="o1:f1", account="paper", client_order_id="o1",
                     exchange="binance", symbol="BTCUSDT", side="buy",
                     quantity=Decimal("0.5"), price=Decimal("30000"), fee=Decimal("15"),
                     fee_currency="USDT")]

    async def accounts(self) -> list[str]:
        self._call("accounts")
        return list(self.account_names)

    async def equity(self, account: str, start: datetime | None, end: datetime | None,
                     max_points: int, capital: Decimal) -> tuple[int, list[EquityPoint]]:
        self._call("equity", account, start, end, max_points, capital)
        points = [EquityPoint(time=T0 + timedelta(hours=i), net_pnl=Decimal(i),
                              equity=capital + i) for i in range(3)]
        return 3, points

    async def decisions(self, limit: int, approved: bool | None,
                        symbol: str | None) -> list[Decision]:
        self._call("decisions", limit, approved, symbol)
        return [Decision(time=T0, decision_id="dec:s1", signal_id="s1", exchange="binance",
                         symbol="BTCUSDT", approved=False, client_order_id="", side="buy",
                         quantity=Decimal(0), reference_price=Decimal("30000"),
                         reduce_only=False,
                         failed_rules=[RuleVerdict(rule="system.kill_switch",
                                                   detail="engaged")])]

    async def last_events(self) -> LastEvents:
        self._call("last_events")
        return LastEvents(None, T0, T0, T0 + timedelta(hours=1))

    async def promoted(self) -> tuple[list[PromotedRow], list[PromotedRow]]:
        self._call("promoted")
        return ([PromotedRow(n, v, T0) for n, vs in self.models.items()
                 for v, on in vs.items() if on],
                [PromotedRow(n, v, T0) for n, vs in self.configs.items()
                 for v, on in vs.items() if on])

    def _promote(self, table: dict[str, dict[str, bool]], name: str,
                 version: str) -> PromotionResult:
        versions = table.get(name)
        if versions is None or version not in versions:
            raise UnknownVersion(f"no version {version!r} of {name!r}")
        previous = next((v for v, on in versions.items() if on), None)
        for v in versions:
            versions[v] = v == version
        return PromotionResult(name, version, previous, T0)

    async def promote_model(self, name: str, version: str) -> PromotionResult:
        self._call("promote_model", name, version)
        return self._promote(self.models, name, version)

    async def promote_config(self, strategy: str, version: str) -> PromotionResult:
        self._call("promote_config", strategy, version)
        return self._promote(self.configs, strategy, version)


class FixedClock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def now_ms(self) -> int:
        self.now += 1000
        return self.now


def settings(**values: Any) -> ControlSettings:
    return config.load(ControlSettings, environ={}, **{"token": WRITE, "read_token": READ,
                                                       **values})


def common(**values: Any) -> config.CommonSettings:
    return config.load(config.CommonSettings, environ={},
                       **{"bus": "inprocess", "topic_prefix": PREFIX, **values})


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus()


@pytest.fixture
def fake_store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def make_client(bus: InProcessBus, fake_store: FakeStore) -> Callable[..., TestClient]:
    """make_client(store=fake_store, **control settings) -> a TestClient over the fake store
    (store=None: no database configured)."""

    def make(store: Any = fake_store, **values: Any) -> TestClient:
        app = create_app(settings(**values), common(), bus, clock=FixedClock(), store=store)
        return TestClient(app)

    return make


@pytest.fixture
def make_position() -> Callable[..., Position]:
    return position
