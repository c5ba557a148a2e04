"""Signals with the meta-model: a tiny real XGBoost trained on real BTC entries, exported to ONNX
and registered in a temporary registry (no mocks). Thresholds are taken from the model's actual
probability on a message, so accept / filter are exact."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from meridian.v1 import common_pb2, control_pb2, features_pb2, signal_pb2
from meridian_common import codec, topics
from meridian_common.features.spec import TREND_V2
from meridian_common.fills import PaperFillModel
from meridian_common.handler import Inbound, Outbox
from meridian_common.labels import Barriers
from meridian_common.marketdata import default_data_dir
from meridian_common.strategy import TrendParams
from meridian_ml.dataset import build_events, load_csv
from meridian_ml.model import fit, xgb_json
from meridian_ml.onnx_model import OnnxModel, to_onnx
from meridian_ml.registry import ModelManifest, ModelRegistry
from meridian_signals.handler import SignalsHandler
from meridian_signals.meta_model import ModelRefused, check_manifest, exit_prices, strategy_of
from meridian_signals.settings import SignalsSettings

KEY = "binance:BTCUSDT"
NAME = "meta-trend"
LONG, SHORT, FLAT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT, common_pb2.DIRECTION_FLAT
HOURS = 2000  # of real BTC features, from the start of the data
# the model's barriers differ from the settings' (fixed fractions), so the test sees which apply
BARRIERS = Barriers(take_profit=2.0, stop_loss=1.0, max_holding=24, use_atr=True)
STRATEGY = {"primary": dataclasses.asdict(TrendParams()),
            "barriers": dataclasses.asdict(BARRIERS),
            "fills": {"taker": "0.001", "slippage_bps": "0"}}
CREATED = int(datetime(2024, 3, 3, 9, 0, tzinfo=UTC).timestamp() * 1000)


@dataclasses.dataclass(frozen=True)
class Models:
    root: Path  # a registry holding every model below, none promoted
    a: ModelManifest
    b: ModelManifest
    wrong_set: ModelManifest  # trained columns, but recorded as another feature set
    wrong_columns: ModelManifest  # the same columns in another order
    a_bytes: bytes
    b_bytes: bytes
    narrow: bytes  # a real model over 3 inputs: scoring a feature row with it fails


@pytest.fixture(scope="module")
def feats(real_features: Callable[[int], list[features_pb2.Features]],
          ) -> list[features_pb2.Features]:
    return real_features(HOURS)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    start = int(datetime(2020, 5, 1, tzinfo=UTC).timestamp() * 1000)
    end = int(datetime(2022, 1, 1, tzinfo=UTC).timestamp() * 1000)
    candles = load_csv(default_data_dir(), ["BTCUSDT"], start, end)
    events = build_events(candles, TREND_V2, TrendParams(), BARRIERS, PaperFillModel())
    assert len(events) > 100
    assert events.columns == (*TREND_V2.columns, "direction", "strength")
    root = tmp_path_factory.mktemp("registry")
    registry = ModelRegistry(root)
    built: dict[str, tuple[ModelManifest, bytes]] = {}
    for k, (label, seed, trees, over) in enumerate((
            ("a", 1, 30, {}), ("b", 2, 40, {}),
            ("wrong_set", 3, 20, {"feature_set": "trend@1.0.0"}),
            ("wrong_columns", 4, 20, {"columns": [*reversed(TREND_V2.columns), "direction",
                                                   "strength"]}))):
        model = fit(events.x, events.y, {"n_estimators": trees}, seed=seed)
        onnx_bytes = to_onnx(model, len(events.columns))
        fields: dict[str, Any] = {
            "feature_set": "trend@2.0.0", "feature_fingerprint": TREND_V2.fingerprint(),
            "columns": list(events.columns), "symbols": ["BTCUSDT"], "timeframe": "1h",
            "train_start_ms": start, "train_end_ms": end, "hyperparameters": {"trees": trees},
            "metrics": {}, "threshold": 0.5} | over
        manifest = registry.register(NAME, onnx_bytes, xgb_json(model), **fields,
                                     card={"model": label}, card_html="<html></html>",
                                     created_ms=CREATED + 1000 * k, strategy=STRATEGY)
        built[label] = (manifest, onnx_bytes)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    narrow = to_onnx(fit(x, (x[:, 0] > 0).astype(int), {"n_estimators": 5}), 3)
    return Models(root, built["a"][0], built["b"][0], built["wrong_set"][0],
                  built["wrong_columns"][0], built["a"][1], built["b"][1], narrow)


@pytest.fixture
def root(models: Models, tmp_path: Path) -> Path:
    """A private copy of the registry (promotion and tampering stay in the test)."""
    copy = tmp_path / "models"
    shutil.copytree(models.root, copy)
    return copy


def make(root: Path, **settings: Any) -> SignalsHandler:
    return SignalsHandler(SignalsSettings(model_dir=str(root), **settings))


def feed(h: SignalsHandler, feats: list[features_pb2.Features], out: Outbox | None = None,
         first: int = 0) -> list[tuple[str, str, Any]]:
    out = out or Outbox(h.name)
    for i, f in enumerate(feats):
        h.handle(Inbound(topics.FEATURES, KEY, f, (topics.FEATURES, 0, first + i)), out)
    return out.items


def promotion(version: str, name: str = NAME) -> Inbound:
    control = control_pb2.Control(
        meta=common_pb2.Meta(id=f"promote:{version}", event_time_ms=1, producer="cli"),
        model_promotion=control_pb2.ModelPromotion(model_name=name, model_version=version))
    return Inbound(topics.CONTROL, f"model_promotion:{name}", control, (topics.CONTROL, 0, 0))


def signals(items: list[tuple[str, str, Any]]) -> list[tuple[int, signal_pb2.Signal]]:
    return [(i, m) for i, (_, _, m) in enumerate(items) if isinstance(m, signal_pb2.Signal)]


def values(f: features_pb2.Features) -> dict[str, float]:
    return {v.name: v.value for v in f.values}


@pytest.fixture(scope="module")
def rules_only(feats: list[features_pb2.Features], tmp_path_factory: pytest.TempPathFactory,
               ) -> list[tuple[int, signal_pb2.Signal]]:
    """The primary rules' decisions over the features (the model's rules are the defaults)."""
    h = make(tmp_path_factory.mktemp("empty"))
    return signals(feed(h, feats))


def first_entry(rules: list[tuple[int, signal_pb2.Signal]]) -> tuple[int, int]:
    """(row of the first entry, row of the exit that closes it)."""
    (i, entry), (j, exit_) = rules[0], rules[1]
    assert entry.direction == LONG
    assert exit_.direction == FLAT
    return i, j


def p_of(onnx_bytes: bytes, f: features_pb2.Features, direction: int, strength: float) -> float:
    """The model's probability for an entry, from a row built here (spec order, side, strength)."""
    v = values(f)
    row = [v[c] for c in TREND_V2.columns] + [1.0 if direction == LONG else -1.0, strength]
    return OnnxModel(onnx_bytes).proba_one(row)


async def test_entry_at_the_threshold_is_taken_with_the_models_barriers(
        root: Path, models: Models, feats: list[features_pb2.Features],
        rules_only: list[tuple[int, signal_pb2.Signal]]) -> None:
    i, j = first_entry(rules_only)
    p = p_of(models.a_bytes, feats[i], LONG, rules_only[0][1].strength)
    h = make(root, model_version=models.a.version, threshold=p)
    await h.start()
    assert h.model is not None
    assert h.model.version == models.a.version
    assert h.params == TrendParams()
    assert h.barriers == BARRIERS
    items = feed(h, feats)
    assert len(items) == len(feats)
    sig = items[i][2]
    assert isinstance(sig, signal_pb2.Signal)
    assert sig.direction == LONG
    assert sig.confidence == p
    assert sig.model_version == models.a.version
    assert sig.reason == (f"{rules_only[0][1].reason.removesuffix('; rules only (no model)')}; "
                          f"meta p={p:.2f} >= {p:.2f} (model {models.a.version})")
    # the manifest's ATR barriers, not the settings' fractions: SL 1 ATR below, TP 2 above
    close = Decimal(feats[i].close)
    atr = float(close) * values(feats[i])["atr_pct"]
    half = float(Decimal(1).scaleb(close.as_tuple().exponent)) / 2
    assert abs(float(sig.stop_loss) - (float(close) - atr)) <= half + 1e-9
    assert abs(float(sig.take_profit) - (float(close) + 2 * atr)) <= half + 1e-9
    assert Decimal(sig.stop_loss).as_tuple().exponent == close.as_tuple().exponent
    codec.validate(sig)
    exit_ = items[j][2]
    assert isinstance(exit_, signal_pb2.Signal)
    assert exit_.direction == FLAT
    assert exit_.model_version == models.a.version  # the version of the entry it closes
    assert (exit_.stop_loss, exit_.take_profit) == ("", "")
    assert h.fallbacks == 0


async def test_filtered_entry_suppresses_its_exit(
        root: Path, models: Models, feats: list[features_pb2.Features],
        rules_only: list[tuple[int, signal_pb2.Signal]]) -> None:
    i, j = first_entry(rules_only)
    p = p_of(models.a_bytes, feats[i], LONG, rules_only[0][1].strength)
    h = make(root, model_version=models.a.version, threshold=float(np.nextafter(p, 1.0)))
    await h.start()
    items = feed(h, feats)
    assert len(items) == len(feats)
    for row in (i, j):
        wm = items[row][2]
        assert isinstance(wm, common_pb2.Watermark)
        assert wm.event_time_ms == feats[row].meta.event_time_ms
    assert h.filtered >= 1
    # every exit that is emitted closes an entry that was
    taken = None
    for _, s in signals(items):
        if s.direction == FLAT:
            assert taken is not None
            taken = None
        else:
            taken = s
    entries = sum(s.direction != FLAT for _, s in rules_only)
    emitted = sum(s.direction != FLAT for _, s in signals(items))
    assert h.filtered + emitted == entries


async def test_wrong_feature_set_model_is_refused(
        root: Path, models: Models, feats: list[features_pb2.Features],
        caplog: pytest.LogCaptureFixture) -> None:
    for manifest, words in ((models.wrong_set, ("trend@1.0.0", "trend@2.0.0")),
                            (models.wrong_columns, ("columns", "trend@2.0.0"))):
        caplog.clear()
        h = make(root, model_version=manifest.version)
        with caplog.at_level(logging.ERROR):
            await h.start()
        assert h.model is None
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert manifest.version in errors[0]
        assert all(w in errors[0] for w in words), errors[0]
        items = feed(h, feats)
        assert len(items) == len(feats)
        entries = [s for _, s in signals(items) if s.direction != FLAT]
        assert entries
        assert all((s.confidence, s.model_version) == (1.0, "") for s in entries)
        assert h.fallback_reasons == {"load_failed": len(entries)}


async def test_features_of_another_set_are_scored_by_the_rules_alone(
        root: Path, models: Models, feats: list[features_pb2.Features],
        caplog: pytest.LogCaptureFixture) -> None:
    h = make(root, model_version=models.a.version, threshold=0.01)
    await h.start()
    other = []
    for f in feats:
        g = features_pb2.Features()
        g.CopyFrom(f)
        g.feature_set_version = "1.0.0"
        other.append(g)
    with caplog.at_level(logging.ERROR):
        items = feed(h, other)
    assert len(items) == len(feats)
    entries = [s for _, s in signals(items) if s.direction != FLAT]
    assert len(entries) > 1
    assert all(s.model_version == "" and s.confidence == 1.0 for s in entries)
    assert h.fallback_reasons == {"feature_set": len(entries)}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per cause, not per message
    assert "trend@2.0.0" in errors[0]
    assert "trend@1.0.0" in errors[0]


async def test_hot_reload_swaps_after_the_batch(
        root: Path, models: Models, feats: list[features_pb2.Features],
        rules_only: list[tuple[int, signal_pb2.Signal]]) -> None:
    ModelRegistry(root).promote(models.a.version)
    h = make(root, threshold=0.01)  # every entry taken: each carries the version that scored it
    await h.start()
    assert h.model is not None
    assert h.model.version == models.a.version
    # the batch: features, the promotion of b, more features; then the host's flush
    mid = rules_only[len(rules_only) // 2][0]
    out = Outbox(h.name)
    feed(h, feats[:mid], out)
    other = promotion("other-1", name="another-model")
    h.handle(other, out)
    h.handle(promotion(models.b.version), out)
    feed(h, feats[mid:mid + 50], out, first=mid)
    assert h.model.version == models.a.version  # nothing swaps inside a batch
    await h.flush()
    assert h.model.version == models.b.version
    feed(h, feats[mid + 50:], out, first=mid + 50)
    items = out.items
    assert len(items) == len(feats)  # one output per features input, none for control
    swap = mid + 50
    entries = [(i, s) for i, s in signals(items) if s.direction != FLAT]
    assert {s.model_version for i, s in entries if i < swap} == {models.a.version}
    assert {s.model_version for i, s in entries if i >= swap} == {models.b.version}
    assert [i for i, _ in signals(items)] == [i for i, _ in rules_only]
    # before the swap, exactly what a handler serving a alone emits
    ref = make(root, model_version=models.a.version, threshold=0.01)
    await ref.start()
    assert [codec.encode(m) for _, _, m in feed(ref, feats[:swap])] == \
        [codec.encode(m) for _, _, m in items[:swap]]
    # promoting the served version again is a no-op
    h.handle(promotion(models.b.version), out)
    await h.flush()
    assert h.reload_failures == 0


async def test_failed_reload_keeps_the_current_model(
        root: Path, models: Models, feats: list[features_pb2.Features],
        caplog: pytest.LogCaptureFixture) -> None:
    h = make(root, threshold=0.01)
    ModelRegistry(root).promote(models.a.version)
    registry = CollectorRegistry()
    h.bind_metrics(registry)
    await h.start()
    tampered = root / NAME / models.b.version / "model.onnx"
    tampered.write_bytes(models.b_bytes[:-1] + bytes([models.b_bytes[-1] ^ 1]))
    unknown = f"{NAME}-20200101000000-deadbeef"
    cases = ((unknown, "unknown model version"), (models.b.version, "sha256"),
             (models.wrong_set.version, "trend@1.0.0"))
    out = Outbox(h.name)
    for k, (version, why) in enumerate(cases, 1):
        caplog.clear()
        h.handle(promotion(version), out)
        with caplog.at_level(logging.ERROR):
            await h.flush()
        assert h.model is not None
        assert h.model.version == models.a.version
        assert h.reload_failures == k
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert version in errors[0]
        assert why in errors[0]
        assert models.a.version in errors[0]  # what is kept
    assert registry.get_sample_value("meridian_model_reload_failures_total") == 3
    assert registry.get_sample_value("meridian_model_info",
                                     {"model_version": models.a.version}) == 1
    entries = [s for _, s in signals(feed(h, feats, out)) if s.direction != FLAT]
    assert entries
    assert {s.model_version for s in entries} == {models.a.version}


async def test_no_promoted_model_falls_back_to_the_rules(
        tmp_path: Path, feats: list[features_pb2.Features],
        rules_only: list[tuple[int, signal_pb2.Signal]],
        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "models" / NAME).mkdir(parents=True)  # an empty registry
    h = make(tmp_path / "models")
    registry = CollectorRegistry()
    h.bind_metrics(registry)
    with caplog.at_level(logging.INFO):
        await h.start()
        items = feed(h, feats)
    assert h.model is None
    assert len(items) == len(feats)
    assert [codec.encode(s) for _, s in signals(items)] == \
        [codec.encode(s) for _, s in rules_only]
    entries = sum(s.direction != FLAT for _, s in rules_only)
    assert h.fallbacks == entries
    assert h.fallback_reasons == {"no_model": entries}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "no model 'meta-trend' promoted" in warnings[0]
    assert registry.get_sample_value("meridian_model_fallback_total",
                                     {"reason": "no_model"}) == entries
    assert registry.get_sample_value("meridian_model_info", {"model_version": ""}) == 1
    assert registry.get_sample_value("meridian_signals_total",
                                     {"direction": "long", "model_version": ""}) == entries
    assert registry.get_sample_value("meridian_signal_confidence_count") == entries


async def test_inference_failure_falls_back_for_that_row(
        root: Path, models: Models, feats: list[features_pb2.Features],
        caplog: pytest.LogCaptureFixture) -> None:
    h = make(root, model_version=models.a.version)
    await h.start()
    assert h.model is not None
    # a real session that cannot score a feature row (3 inputs, not 29)
    h.model = dataclasses.replace(h.model, session=OnnxModel(models.narrow))
    with caplog.at_level(logging.ERROR):
        items = feed(h, feats)
    assert len(items) == len(feats)
    entries = [s for _, s in signals(items) if s.direction != FLAT]
    assert len(entries) > 1
    assert all((s.confidence, s.model_version) == (1.0, "") for s in entries)
    assert all(s.reason.endswith("; rules only (the model failed on this row)") for s in entries)
    assert h.fallback_reasons == {"inference_error": len(entries)}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "expected 3 features, got 29" in errors[0]


async def test_metrics_mirror_the_counters(
        root: Path, models: Models, feats: list[features_pb2.Features]) -> None:
    h = make(root, model_version=models.a.version)  # the manifest's threshold, 0.5
    registry = CollectorRegistry()
    h.bind_metrics(registry)
    await h.start()
    items = feed(h, feats)
    sent = signals(items)
    assert registry.get_sample_value("meridian_model_info",
                                     {"model_version": models.a.version}) == 1
    assert registry.get_sample_value("meridian_meta_filtered_total") == h.filtered
    total = sum(registry.get_sample_value("meridian_signals_total",
                                          {"direction": d, "model_version": models.a.version})
                or 0.0 for d in ("long", "short", "flat"))
    assert total == len(sent) == h.emitted
    entries = [s for _, s in sent if s.direction != FLAT]
    assert registry.get_sample_value("meridian_signal_confidence_count") == len(entries)
    assert all(s.confidence >= 0.5 for s in entries)
    assert h.filtered > 0  # the tiny model filters some entries and takes others
    assert entries


def test_exit_prices_keep_the_close_decimals() -> None:
    fixed = Barriers(take_profit=0.03, stop_loss=0.015)
    assert exit_prices(LONG, "100.00", math.nan, fixed) == ("98.50", "103.00")
    assert exit_prices(SHORT, "100.00", math.nan, fixed) == ("101.50", "97.00")
    assert exit_prices(FLAT, "100.00", math.nan, fixed) == ("", "")
    atr = Barriers(take_profit=2.0, stop_loss=1.0, use_atr=True)
    assert exit_prices(LONG, "0.012345", 0.2, atr) == ("0.009876", "0.017283")
    assert exit_prices(LONG, "10.0", 0.0125, atr) == ("9.9", "10.2")  # 10.25: half to even
    assert exit_prices(LONG, "100", math.nan, atr) == ("", "")  # no ATR, no suggestion
    assert exit_prices(SHORT, "100", 0.6, atr) == ("160", "")  # a target below 0 is none


def test_refusal_is_a_clear_error(models: Models) -> None:
    with pytest.raises(ModelRefused, match=r"trained on feature set trend@1\.0\.0 but the "
                                           r"features are trend@2\.0\.0"):
        check_manifest(models.wrong_set, "trend@2.0.0")
    with pytest.raises(ModelRefused, match=r"records no strategy\.primary"):
        strategy_of(dataclasses.replace(models.a, strategy={}))
    with pytest.raises(ModelRefused, match="not a valid TrendParams"):
        strategy_of(dataclasses.replace(models.a, strategy={**STRATEGY, "primary": {"x": 1}}))




def test_exit_prices_stay_off_the_entry_when_the_close_has_few_decimals() -> None:
    # XRP printed as "0.4": a stop 1.5% away must not round back onto the entry
    stop, target = exit_prices(LONG, "0.4", math.nan, Barriers(take_profit=0.03,
                                                                stop_loss=0.015))
    assert (stop, target) == ("0.3940", "0.4120")


async def test_served_versions_labels_start_at_zero_and_a_replay_counts_nothing(
        root: Path, models: Models, feats: list[features_pb2.Features]) -> None:
    """While the host replays inputs to rebuild state (`replaying`), the model still decides
    (the rebuilt positions need it) but no signal, filtered entry or confidence is counted; the
    served version's directions exist at 0 from the start."""
    h = make(root, model_version=models.a.version)
    registry = CollectorRegistry()
    h.bind_metrics(registry)
    await h.start()
    zero = {d: 0.0 for d in ("long", "short", "flat")}

    def counted() -> dict[str, float | None]:
        return {d: registry.get_sample_value("meridian_signals_total", {
            "direction": d, "model_version": models.a.version}) for d in zero}

    assert counted() == zero
    h.replaying = True
    items = feed(h, feats)
    assert signals(items)  # decided as usual
    assert counted() == zero
    assert registry.get_sample_value("meridian_meta_filtered_total") == 0
    assert registry.get_sample_value("meridian_signal_confidence_count") == 0
    assert (h.emitted, h.filtered) == (0, 0)
