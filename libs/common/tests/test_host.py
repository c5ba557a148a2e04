"""ServiceHost on the in-process bus: dead letters with reasons, no commit past retained input."""

from __future__ import annotations

import asyncio

import pytest

from meridian.v1 import common_pb2, features_pb2, fill_pb2
from meridian_common import codec, host, topics
from meridian_common.bus import partition_for
from meridian_common.bus.inprocess import InProcessBus
from meridian_common.host import ServiceHost, all_topic_configs
from meridian_common.marketdata import RawCandle, make_candle
from meridian_common.testing import Running, until
from meridian_features.handler import FeaturesHandler
from meridian_features.settings import FeaturesSettings
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

KEY = "binance:BTCUSDT"
HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # The host waits this long for input before re-checking its stop event; keep tests quick.
    monkeypatch.setattr(host, "POLL_TIMEOUT_S", 0.01)


def candle(i: int, close: str | None = None):
    price = str(30000 + 10 * i)
    return make_candle("binance", "BTCUSDT", "1h",
                       RawCandle(T0 + i * HOUR, price, price, price, close or price, "1"), "test")


async def send(bus: InProcessBus, topic: str, key: bytes | None, value: bytes | None,
               mtype: bytes | None) -> None:
    headers = () if mtype is None else ((codec.TYPE_HEADER, mtype),)
    await bus.producer().send(topic, key, value, headers)


async def send_msg(bus: InProcessBus, topic: str, key: str, message: object,
                   prefix: str = "") -> None:
    value, mtype = codec.encode(message)  # type: ignore[arg-type]
    await send(bus, prefix + topic, key.encode(), value, mtype)


async def new_bus(prefix: str = "") -> InProcessBus:
    bus = InProcessBus(3)
    await bus.ensure_topics(all_topic_configs(prefix, 3))
    return bus


def features_settings() -> FeaturesSettings:
    return FeaturesSettings()


@pytest.mark.parametrize("prefix", ["", "run-7."])
async def test_bad_records_go_to_dlq_and_host_keeps_running(prefix: str) -> None:
    bus = await new_bus(prefix)
    h = ServiceHost(FeaturesHandler(features_settings()), bus, prefix=prefix, batch=3)
    src = prefix + topics.CANDLE
    fill = fill_pb2.Fill(meta=common_pb2.Meta(id="f", event_time_ms=T0), fill_id="f",
                         quantity="1", price="1", fee="0")
    fill_value, fill_type = codec.encode(fill)
    bad_close_value, bad_close_type = codec.encode(candle(99, close="abc"))
    async with Running(h) as run:
        await send_msg(bus, topics.CANDLE, KEY, candle(0), prefix)
        await send_msg(bus, topics.CANDLE, KEY, candle(1), prefix)
        await send(bus, src, KEY.encode(), b"\xff\xff\xff\xff", b"meridian.v1.Candle")
        await send(bus, src, KEY.encode(), fill_value, fill_type)
        await send_msg(bus, topics.CANDLE, KEY, candle(2), prefix)
        await send(bus, src, KEY.encode(), bad_close_value, bad_close_type)
        await send(bus, src, None, codec.encode(candle(3))[0], b"meridian.v1.Candle")
        await send_msg(bus, topics.CANDLE, KEY, candle(3), prefix)

        dlq = prefix + topics.dlq(topics.CANDLE)
        out = prefix + topics.FEATURES
        await until(lambda: len(bus.read(dlq)) == 4 and len(bus.read(out)) == 4)
        keyless = [r for r in bus.read(dlq) if r.key is None]
        dead = sorted((r for r in bus.read(dlq) if r.key is not None),
                      key=lambda r: int(r.header("dlq-offset") or b"-1")) + keyless
        reasons = [(r.header("dlq-reason") or b"").decode() for r in dead]
        assert "cannot parse as meridian.v1.Candle" in reasons[0]
        assert "expected meridian.v1.Candle" in reasons[1]
        assert "meridian.v1.Fill" in reasons[1]
        assert "meridian.v1.Candle.close" in reasons[2]
        assert "no key" in reasons[3]
        p = partition_for(KEY.encode(), 3)
        source = {r.offset: r for r in bus.read(src) if r.partition == p}
        for r in dead[:3]:
            assert r.header("dlq-topic") == src.encode()
            assert r.header("dlq-service") == b"features"
            assert r.header("dlq-partition") == str(p).encode()
            offset = int(r.header("dlq-offset") or b"")
            original = source[offset]
            assert r.value == original.value  # the record is kept as it was, nothing is lost
            assert r.key == original.key
            assert r.header(codec.TYPE_HEADER) == original.header(codec.TYPE_HEADER)
        assert dead[3].header("dlq-partition") == b"0"
        assert [int(r.header("dlq-offset") or b"") for r in dead[:3]] == [2, 3, 5]
        assert h.dead_letters == 4
        assert h.handled == 4

        # the service carries on
        await send_msg(bus, topics.CANDLE, KEY, candle(4), prefix)
        await until(lambda: len(bus.read(out)) == 5)
        assert run.task is not None
        assert not run.task.done()
        produced = [codec.decode(topics.FEATURES, r.value, r.header(codec.TYPE_HEADER))
                    for r in bus.read(out)]
        assert all(isinstance(m, features_pb2.Features) for m in produced)
        assert [m.candle_open_time_ms for m in produced] == [  # type: ignore[attr-defined]
            T0 + i * HOUR for i in range(5)]
        group = f"{prefix}meridian-features"
        await until(lambda: bus.committed(group, src, p) == bus.end_offsets(src)[p])


async def test_handler_rejection_goes_to_dlq() -> None:
    """InvalidMessage raised by a handler (well-formed record, unacceptable content) -> DLQ."""
    bus = await new_bus()
    h = ServiceHost(SignalsHandler(SignalsSettings()), bus)
    feats = features_pb2.Features(
        meta=common_pb2.Meta(id="feat:x", event_time_ms=T0 + HOUR, producer="features"),
        exchange="binance", symbol="BTCUSDT", timeframe="1h", close="30000", ready=True)
    async with Running(h):
        await send_msg(bus, topics.FEATURES, KEY, feats)
        await until(lambda: len(bus.read(topics.dlq(topics.FEATURES))) == 1)
        (dead,) = bus.read(topics.dlq(topics.FEATURES))
        assert b"feat:x" in (dead.header("dlq-reason") or b"")
        assert dead.header("dlq-service") == b"signals"
        assert dead.header("dlq-offset") == b"0"
        feats.ready = False
        await send_msg(bus, topics.FEATURES, KEY, feats)
        await until(lambda: len(bus.read(topics.SIGNAL)) == 1)  # still running: a watermark
        assert h.dead_letters == 1


async def test_committed_offset_waits_for_retained_records() -> None:
    bus = await new_bus()
    h = ServiceHost(LedgerHandler(LedgerSettings(), store=None), bus)
    group = "meridian-ledger"
    p = partition_for(KEY.encode(), 3)

    def committed(topic: str) -> int:
        return bus.committed(group, topic, p)

    def portfolio() -> list[object]:
        return bus.read(topics.PORTFOLIO)

    async with Running(h):
        await send_msg(bus, topics.CANDLE, KEY, candle(0))  # candle offset 0
        await until(lambda: h.handled == 1 and bus.lag() == 0)
        await asyncio.sleep(0.05)  # several more poll rounds
        assert portfolio() == []
        assert committed(topics.CANDLE) == 0  # held back: a crash must replay it

        await send_msg(bus, topics.FILL, KEY, common_pb2.Watermark(
            key=KEY, event_time_ms=T0, producer="execution"))  # fill offset 0
        await until(lambda: len(portfolio()) == 1)
        await until(lambda: committed(topics.CANDLE) == 1 and committed(topics.FILL) == 1)

        # a fill for the next candle is held until a watermark lets that candle be marked
        fill = fill_pb2.Fill(
            meta=common_pb2.Meta(id="mrd-x:f1", event_time_ms=T0 + HOUR, producer="execution"),
            fill_id="mrd-x:f1", client_order_id="mrd-x", exchange="binance", symbol="BTCUSDT",
            side=common_pb2.SIDE_BUY, quantity="0.1", price="30010", fee="3.001",
            fee_currency="USDT", liquidity=fill_pb2.LIQUIDITY_TAKER)
        await send_msg(bus, topics.FILL, KEY, fill)  # fill offset 1
        await send_msg(bus, topics.CANDLE, KEY, candle(1))  # candle offset 1
        await until(lambda: h.handled == 4 and bus.lag() == 0)
        await asyncio.sleep(0.05)
        assert committed(topics.FILL) == 1
        assert committed(topics.CANDLE) == 1
        assert len(portfolio()) == 1

        await send_msg(bus, topics.FILL, KEY, common_pb2.Watermark(
            key=KEY, event_time_ms=T0 + HOUR, producer="execution"))  # fill offset 2
        await until(lambda: len(portfolio()) == 2)
        await until(lambda: committed(topics.CANDLE) == 2 and committed(topics.FILL) == 3)
        last = bus.read(topics.PORTFOLIO)[-1]
        update = codec.decode(topics.PORTFOLIO, last.value, last.header(codec.TYPE_HEADER))
        assert update.quantity == "0.1"  # type: ignore[attr-defined]
        assert update.fees_paid == "3.001"  # type: ignore[attr-defined]
