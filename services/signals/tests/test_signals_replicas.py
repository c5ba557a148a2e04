"""Signals replicas in one consumer group (the HPA): every replica acts on a model promotion,
also the one that does not own control.v1's partition of the promotion's key (side inputs).
Without `side_keys`, only the partition's owner would load the promoted model and the other
replicas would keep serving the old one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meridian.v1 import common_pb2, control_pb2
from meridian_common import host, topics
from meridian_common.host import ServiceHost, all_topic_configs, publish
from meridian_common.metrics import NullSensor
from meridian_common.testing import Running, SharedBus, until
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

PARTITIONS = 3



class NoSideInputs(SignalsHandler):
    def side_keys(self) -> dict[str, tuple[str, ...]]:
        return {}


def promotion(name: str, version: str) -> control_pb2.Control:
    return control_pb2.Control(
        meta=common_pb2.Meta(id=f"promote-{version}", event_time_ms=1, producer="test"),
        model_promotion=control_pb2.ModelPromotion(model_name=name, model_version=version))


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "POLL_TIMEOUT_S", 0.01)


async def _replicas_after_a_promotion(tmp_path: Path,
                                      kind: type[SignalsHandler]) -> list[SignalsHandler]:
    settings = SignalsSettings(model_dir=str(tmp_path / "models"))
    key = f"model:{settings.model_name}"
    # control.v1 has one partition: A gets features 0 and 1, B features 2 and control
    a_share = {(topics.FEATURES, 0), (topics.FEATURES, 1)}
    b_share = {(topics.FEATURES, 2), (topics.CONTROL, 0)}
    bus = SharedBus(PARTITIONS, a_share, b_share)
    await bus.ensure_topics(all_topic_configs("", PARTITIONS))
    handlers = [kind(settings), kind(settings)]
    hosts = [ServiceHost(h, bus, group="signals") for h in handlers]
    async with Running(hosts[0]), Running(hosts[1]):
        # the registry holds no such version: each replica that acts on it fails to load it
        # and counts it, which is what tells that it acted
        await publish(bus.producer(), "", [(topics.CONTROL, key, promotion(
            settings.model_name, "v-promoted"))], NullSensor())
        await until(lambda: handlers[1].reload_failures == 1)
        await asyncio.sleep(0.1)  # room for a replica that would act late
    return handlers


async def test_every_replica_acts_on_a_promotion(tmp_path: Path) -> None:
    a, b = await _replicas_after_a_promotion(tmp_path, SignalsHandler)
    assert (a.reload_failures, b.reload_failures) == (1, 1)


async def test_without_side_inputs_only_the_owner_acts(tmp_path: Path) -> None:
    a, b = await _replicas_after_a_promotion(tmp_path, NoSideInputs)
    assert (a.reload_failures, b.reload_failures) == (0, 1)
