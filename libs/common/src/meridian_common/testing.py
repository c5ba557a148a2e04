"""Helpers for tests: handler interleavings, indicator parity (no test framework imported)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from meridian.v1 import common_pb2
from meridian_common import codec, topics, tracing
from meridian_common.bus.base import Bus, TopicPartition
from meridian_common.bus.inprocess import InProcessBus, InProcessConsumer
from meridian_common.handler import Handler, Inbound, Outbox

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from meridian_common.host import ServiceHost

T = TypeVar("T")
OutItem = tuple[str, str, Message]


def interleave(a: Sequence[T], b: Sequence[T], picks: Sequence[bool]) -> list[T]:
    """Merge two streams keeping each one's own order; picks[k] takes from `a` when it can.

    This is how a host may see two inputs arrive: any interleaving is possible, each input's order
    is not. Determinism tests check a handler's outputs are the same for every such merge.
    """
    out: list[T] = []
    i = j = 0
    for pick in picks:
        if (pick and i < len(a)) or j >= len(b):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


# -- indicator parity ---------------------------------------------------------------------------

@dataclass(slots=True)
class ParityResult:
    """Worst relative differences of one indicator output over one series, after warm-up."""

    indicator: str
    series: str
    values: int
    incremental_vs_batch: float
    vs_talib: float | None = None


PARITY: list[ParityResult] = []  # collected by the tests, printed in pytest's summary


def worst_relative(got: Sequence[float | None], want: Sequence[float | None],
                   floor: float = 1e-12) -> float:
    """max |got - want| / max(|want|, floor) over positions where either has a value.

    Raises AssertionError when one side has a value and the other does not (warm-up lengths
    must agree) or when either is NaN where the other is a number.
    """
    if len(got) != len(want):
        raise AssertionError(f"lengths differ: {len(got)} != {len(want)}")
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        g_missing = g is None or math.isnan(g)
        w_missing = w is None or math.isnan(w)
        if g_missing or w_missing:
            if g_missing != w_missing:
                raise AssertionError(f"index {i}: {g!r} vs {w!r} (warm-up differs)")
            continue
        assert g is not None
        assert w is not None
        worst = max(worst, abs(g - w) / max(abs(w), floor))
    return worst


# -- running a handler without a host -----------------------------------------------------------

def feed(handler: Handler, topic: str,
         messages: Iterable[Message | tuple[str, str, Message]]) -> list[OutItem]:
    """Hand market messages (keyed exchange:symbol) to a handler in order, as a host would with
    one partition; returns what it emitted. The uninterrupted reference run of restart tests.

    An item may also be routed explicitly as (topic, key, message), as a replay stream routes
    its watermarks and funding; the handler is then given it on that topic.
    """
    out = Outbox(handler.name)
    for offset, item in enumerate(messages):
        if isinstance(item, tuple):
            where, key, message = item
        else:
            where, message = topic, item
            key = topics.market_key(message.exchange, message.symbol)  # type: ignore[attr-defined]
        if where in handler.inputs:
            handler.handle(Inbound(where, key, message, (where, 0, offset)), out)
    return out.items


def features_by_candle(items: Iterable[OutItem]) -> dict[tuple[str, int], bytes]:
    """Emitted features.v1 messages by (symbol, candle open time), as encoded bytes."""
    return {(m.symbol, m.candle_open_time_ms): codec.encode(m)[0]  # type: ignore[attr-defined]
            for t, _, m in items if t == topics.FEATURES}


class Wired:
    """Handlers wired as on the bus, in one thread and without a broker: every output is
    delivered, in publication order, to each handler (in the order given) that reads its topic,
    until nothing is left. For loops (bots -> gate -> executor -> bots) in unit tests.

    `published`: every output, in order; `received[name]`: every record a handler was given."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = handlers
        self.published: list[OutItem] = []
        self.received: dict[str, list[Inbound]] = {h.name: [] for h in handlers}

    def feed(self, items: Iterable[OutItem]) -> None:
        queue = deque(items)
        while queue:
            topic, key, message = queue.popleft()
            for handler in self.handlers:
                if topic not in handler.inputs:
                    continue
                msg = Inbound(topic, key, message)
                self.received[handler.name].append(msg)
                out = Outbox(handler.name)
                handler.handle(msg, out)
                self.published += out.items
                queue.extend(out.items)

    def of(self, topic: str, key: str | None = None) -> list[Message]:
        """The messages published on `topic` (for `key`), Watermarks left out."""
        return [m for t, k, m in self.published if t == topic and key in (None, k)
                and not isinstance(m, common_pb2.Watermark)]

    def watermarks(self, topic: str, key: str) -> list[int]:
        return [m.event_time_ms for t, k, m in self.published if t == topic and k == key
                and isinstance(m, common_pb2.Watermark)]


def caught_up(handler: Handler, progress: dict[tuple[str, str], int],
              stream: tuple[str, str], t: int, out: Outbox) -> None:
    """Tell a handler that merges streams in event time (`progress`: its merge's streams) that
    every stream but `stream` (topic, key) has reached `t`, with Watermarks: unit tests that
    feed one stream at a time then see each decision at once, as if the others had nothing
    more up to `t`."""
    for (topic, key), reached in sorted(progress.items()):
        if (topic, key) != stream and reached < t:
            handler.handle(Inbound(topic, key, common_pb2.Watermark(
                key=key, event_time_ms=t, producer="test")), out)


def protective_stop(direction: int, price: str, distance: str = "0.1") -> str:
    """A stop on the protective side of `price` (below for a long, above for a short; none for
    flat), as the signals service attaches to every entry: test signals that are not about
    stops still pass a gate that requires one."""
    d = Decimal(distance)
    if direction == common_pb2.DIRECTION_LONG:
        return str(Decimal(price) * (1 - d))
    if direction == common_pb2.DIRECTION_SHORT:
        return str(Decimal(price) * (1 + d))
    return ""


async def read_topic(bus: Bus, prefix: str, topic: str) -> list[Message]:
    """Every record of a topic, all partitions, decoded (Watermarks included): what a test
    compares with an uninterrupted run."""
    name = prefix + topic
    out: list[Message] = []
    for partition, end in enumerate(await bus.topic_ends(name)):
        for record in await bus.read_partition(name, partition, 0, end):
            out.append(codec.decode(topic, record.value, record.header(codec.TYPE_HEADER)))
    return out


@contextmanager
def recording_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the block, every span kept in memory (the exporter's `get_finished_spans`);
    off again afterwards. Hosts read the tracer when they start running: start them inside."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


class Running:
    """A hosted handler running as a task for the span of an `async with` (ready on enter,
    stopped and awaited on exit)."""

    def __init__(self, h: ServiceHost) -> None:
        self.host = h
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.host.run(self.stop))
        await asyncio.wait_for(self.host.ready.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def until(cond: Callable[[], bool]) -> None:
    """Wait (at most 5 s) until cond() holds."""
    for _ in range(2500):
        if cond():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached within 5 s")


def bound_registry(handler: Handler) -> CollectorRegistry:
    """A fresh registry with the handler's own series bound, as the host does before start."""
    registry = CollectorRegistry()
    handler.bind_metrics(registry)
    return registry


def exported(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; a series that is not exported fails the test by name, where None would
    compare unequal without saying why."""
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exported"
    return value


def sibling_module(test_file: str, name: str) -> ModuleType:
    """Import the helper module `name`.py next to a test file: pytest runs with
    --import-mode=importlib, so test directories are not packages and a plain import fails."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(test_file).with_name(f"{name}.py"))
        if spec is None or spec.loader is None:
            raise ImportError(f"no helper module {name}.py next to {test_file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class SharedBus(InProcessBus):
    """An in-process bus whose consumers, in the order they are made, get the given shares of
    their group's partitions: replicas of one group (the in-process bus alone has one member
    per group). Give disjoint shares; `InProcessConsumer.assign` moves one later (a rebalance)."""

    def __init__(self, partitions: int, *shares: Iterable[TopicPartition]) -> None:
        super().__init__(partitions)
        self.shares = [set(s) for s in shares]
        self.members: list[InProcessConsumer] = []

    def consumer(self, group: str, topics: Sequence[str]) -> InProcessConsumer:
        member = super().consumer(group, topics)
        member.assign(self.shares[len(self.members)])
        self.members.append(member)
        return member


def free_port() -> int:
    """A loopback port free right now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, as an orchestrator stops a service (killed after 30 s); its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@contextmanager
def service_process(module: str, env: Mapping[str, str], logs: Path, health_url: str,
                    wait_s: float = 60.0) -> Iterator[subprocess.Popen[str]]:
    """`python -m <module>` in its own process with only the given MERIDIAN_* variables (the
    caller's would fail its start as unknown), output in `logs`; yielded once `health_url`
    answers 200, stopped with SIGTERM on exit unless the caller stopped it already."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
    with logs.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", module], env={**clean, **env}, text=True,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + wait_s
        while not _answers(health_url):
            assert proc.poll() is None, logs.read_text()
            assert time.monotonic() < deadline, f"{module} did not start in {wait_s:.0f} s"
            time.sleep(0.1)
        yield proc
    finally:
        stop_process(proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback test URL)
            return bool(response.status == 200)
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False
