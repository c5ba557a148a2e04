"""Real Kafka and real PostgreSQL for the integration tests, started by scripts/localinfra.py.

Both are started once per session on free loopback ports and stopped afterwards. Set
MERIDIAN_TEST_KAFKA_BOOTSTRAP / MERIDIAN_TEST_PG_PORT to reuse servers you started yourself
(`python scripts/localinfra.py up`), which makes re-running one test fast.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator

import psycopg
import pytest

from meridian_cli.backtest_spec import BacktestSpec
from meridian_cli.scripts import load_script
from meridian_common.bus.base import Bus
from meridian_common.host import ServiceHost

localinfra = load_script("localinfra")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("MERIDIAN_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    handle = localinfra.start_kafka(tmp_path_factory.mktemp("infra-kafka"))
    try:
        yield handle.bootstrap
    finally:
        localinfra.stop_kafka(handle)


@pytest.fixture(scope="session")
def pg_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    given = os.environ.get("MERIDIAN_TEST_PG_PORT")
    if given:
        yield int(given)
        return
    handle = localinfra.start_postgres(tmp_path_factory.mktemp("infra-pg"))
    try:
        yield handle.port
    finally:
        localinfra.stop_postgres(handle)


@pytest.fixture
def new_database(pg_port: int) -> Iterator[Callable[[str], str]]:
    """Factory: a fresh database per call; returns its URL. Dropped after the test."""
    admin = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    created: list[str] = []

    def make(label: str) -> str:
        name = f"t_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"create database {name}")
        created.append(name)
        return f"postgresql://postgres@127.0.0.1:{pg_port}/{name}"

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in created:
            conn.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def topic_prefix() -> str:
    return f"it{uuid.uuid4().hex[:8]}."


@pytest.fixture
def restored_kill_switch() -> Callable[[Bus, str], Awaitable[bool]]:
    """restored_kill_switch(bus, prefix) -> the kill switch of a risk gate started on these
    topics: the host restores control.v1 (and the gate's own outputs) whole, then (stop already
    set) handles nothing live. The gate's topics must exist."""
    from meridian_risk.handler import RiskHandler
    from meridian_risk.settings import RiskSettings

    async def restored(bus: Bus, prefix: str) -> bool:
        handler = RiskHandler(RiskSettings())
        stop = asyncio.Event()
        stop.set()
        host = ServiceHost(handler, bus, prefix=prefix)
        await host.run(stop)
        assert host.ready.is_set()
        assert host.handled == 0
        return handler.kill_switch

    return restored


@pytest.fixture
def backtest_db(pg_port: int, kafka_bootstrap: str,
                monkeypatch: pytest.MonkeyPatch) -> Callable[[BacktestSpec], str]:
    """`meridian backtest` pointed at the session's PostgreSQL and Kafka (through the variables
    it reads, not the tests' MERIDIAN_TEST_*), and the conninfo of a run's own database."""
    monkeypatch.setenv("MERIDIAN_DATABASE_URL",
                       f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
    monkeypatch.setenv("MERIDIAN_KAFKA_BOOTSTRAP", kafka_bootstrap)
    for name in ("MERIDIAN_TEST_KAFKA_BOOTSTRAP", "MERIDIAN_TEST_PG_PORT"):
        monkeypatch.delenv(name, raising=False)

    def conninfo(spec: BacktestSpec) -> str:
        name = "bt_" + spec.run_id().replace("-", "_").lower()
        return f"host=127.0.0.1 port={pg_port} user=postgres dbname={name}"

    return conninfo
