"""Signals metrics (pre-initialised labels, nothing counted while the host replays) and the state
rebuild contract (`reset_state`, promotions ignored while replaying), on real BTC features."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from meridian.v1 import common_pb2, control_pb2, features_pb2, signal_pb2
from meridian_common import codec, topics
from meridian_common.handler import Inbound, Outbox
from meridian_signals.handler import SignalsHandler
from meridian_signals.settings import SignalsSettings

KEY = "binance:BTCUSDT"
NAMES = {common_pb2.DIRECTION_LONG: "long", common_pb2.DIRECTION_SHORT: "short",
         common_pb2.DIRECTION_FLAT: "flat"}
REASONS = ("no_model", "load_failed", "feature_set", "inference_error")


def started(tmp_path: Path, registry: CollectorRegistry | None = None,
            **settings: Any) -> SignalsHandler:
    """A rules-only handler (empty registry), metrics bound when a registry is given."""
    h = SignalsHandler(SignalsSettings(model_dir=str(tmp_path / "models"), **settings))
    if registry is not None:
        h.bind_metrics(registry)
    asyncio.run(h.start())
    return h


def feed(h: SignalsHandler, feats: list[features_pb2.Features],
         first: int = 0) -> list[Message]:
    """Every output (signals and watermarks), in order."""
    out = Outbox(h.name)
    for i, f in enumerate(feats):
        h.handle(Inbound(topics.FEATURES, KEY, f, (topics.FEATURES, 0, first + i)), out)
    return [m for _, _, m in out.items]


def encoded(messages: list[Message]) -> list[bytes]:
    return [codec.encode(m)[0] for m in messages]


def emitted(messages: list[Message]) -> list[signal_pb2.Signal]:
    return [m for m in messages if isinstance(m, signal_pb2.Signal)]


def by_direction(registry: CollectorRegistry, version: str = "") -> dict[str, float | None]:
    return {d: registry.get_sample_value("meridian_signals_total",
                                         {"direction": d, "model_version": version})
            for d in NAMES.values()}


def test_known_label_values_start_at_zero(tmp_path: Path) -> None:
    """rate() over the series has data before the first signal: every direction for the
    served version ('' rules only) and every fallback reason exist at 0."""
    registry = CollectorRegistry()
    started(tmp_path, registry)
    assert by_direction(registry) == {"long": 0.0, "short": 0.0, "flat": 0.0}
    for reason in REASONS:
        assert registry.get_sample_value("meridian_model_fallback_total",
                                          {"reason": reason}) == 0.0
    assert registry.get_sample_value("meridian_meta_filtered_total") == 0.0
    assert registry.get_sample_value("meridian_model_info", {"model_version": ""}) == 1


def test_signals_by_direction_equal_the_signals_emitted(
        tmp_path: Path, real_features: Callable[[int], list[features_pb2.Features]]) -> None:
    registry = CollectorRegistry()
    h = started(tmp_path, registry, allow_short=True)
    sent = emitted(feed(h, real_features(1500)))
    want = Counter(NAMES[s.direction] for s in sent)
    assert min(want[d] for d in NAMES.values()) > 0  # real data takes every side
    assert by_direction(registry) == {d: float(want[d]) for d in NAMES.values()}
    entries = want["long"] + want["short"]
    assert registry.get_sample_value("meridian_model_fallback_total",
                                     {"reason": "no_model"}) == entries
    assert registry.get_sample_value("meridian_signal_confidence_count") == entries
    assert h.emitted == len(sent)


def test_a_replayed_prefix_is_not_counted_and_the_rest_continues_exactly(
        tmp_path: Path, real_features: Callable[[int], list[features_pb2.Features]]) -> None:
    """What the host does on a restart: replay the committed prefix (replaying, outputs
    discarded), then handle the rest live. The live part equals the uninterrupted run's and only
    it is counted."""
    feats = real_features(1200)
    cut = 700
    reference = feed(started(tmp_path / "a"), feats)
    registry = CollectorRegistry()
    h = started(tmp_path / "b", registry)
    h.replaying = True  # set by the host while it rebuilds
    feed(h, feats[:cut])
    assert by_direction(registry) == {"long": 0.0, "short": 0.0, "flat": 0.0}
    assert (h.emitted, h.fallbacks) == (0, 0)
    h.replaying = False
    live = feed(h, feats[cut:], first=cut)
    assert encoded(live) == encoded(reference[cut:])
    sent = emitted(live)
    assert sent, "the live part of the slice should hold signals"
    want = Counter(NAMES[s.direction] for s in sent)
    assert by_direction(registry) == {d: float(want[d]) for d in NAMES.values()}
    assert h.emitted == len(sent)
    # without the replayed prefix the rules would start flat and the live part would differ
    assert encoded(feed(started(tmp_path / "c"), feats[cut:], first=cut)) != \
        encoded(reference[cut:])


def test_reset_state_is_the_state_init_makes(
        tmp_path: Path, real_features: Callable[[int], list[features_pb2.Features]]) -> None:
    feats = real_features(900)
    h = started(tmp_path)
    first = feed(h, feats)
    assert h.keys
    assert h.emitted
    h.reset_state()
    assert (h.keys, h.emitted, h.filtered, h.fallbacks, sum(h.fallback_reasons.values())) == \
        ({}, 0, 0, 0, 0)
    assert encoded(feed(h, feats)) == encoded(first)  # the same outputs as from a fresh handler


def _promotion(version: str) -> Inbound:
    control = control_pb2.Control(
        meta=common_pb2.Meta(id=f"promote:{version}", event_time_ms=1, producer="cli"),
        model_promotion=control_pb2.ModelPromotion(model_name="meta-trend",
                                                   model_version=version))
    return Inbound(topics.CONTROL, "model_promotion:meta-trend", control, (topics.CONTROL, 0, 0))


def test_replayed_promotions_do_not_queue_a_reload(tmp_path: Path) -> None:
    """control.v1 is replayed whole on every rebuild: its old promotions must not make flush()
    load (maybe older) models again; start() already loaded what is promoted now."""
    h = started(tmp_path)
    out = Outbox(h.name)
    h.replaying = True
    h.handle(_promotion("meta-trend-20200101000000-00000001"), out)
    assert h.pending is None
    h.replaying = False
    h.handle(_promotion("meta-trend-20200101000000-00000002"), out)
    assert h.pending == "meta-trend-20200101000000-00000002"
    assert out.items == []
