"""Signals: features in, trend-rule signals filtered by the meta-model out.

Per key, `TrendRules` (libs/common, the code research and labelling run) turns each ready
features row into a vote when its position changes: LONG / SHORT entries and FLAT exits.

- Entry with a model loaded: p = the model's probability that the entry pays (the feature row in
  the manifest's column order, then +1/-1 for the side and the vote's strength, as the training
  dataset builds it). p < threshold: no signal (the entry is filtered and counted); else a Signal
  with confidence p and the model's version. Without a model: confidence 1.0, version "".
- Exit: emitted only when the entry it closes was taken (it carries that entry's version).
  A reversal whose new entry is filtered still closes the position that was taken.
- Every entry carries suggested stop-loss / take-profit prices from the barriers (fractions of
  the close, or ATR multiples with ATR = atr_pct x close), with the close's decimals.

With a model, the rule parameters and barriers are the ones in its manifest (the model only means
something next to the rules it was trained on); without one, the settings'.

signal.v1 is sparse, so for every features message that yields no signal a Watermark for the
key is published instead: one output per features input, and downstream services can act in
event time.

Hot reload: a Control `model_promotion` for the configured model name records the version; the
host's `flush()` after the batch loads it in a thread and swaps it in. Messages handled before
the swap used the old model; a failed load keeps it. No model at start, or a row the model cannot
score: rules only for that row, logged once per cause and counted.

Restart: the per-key rule state (`keys`: each TrendRules position and whether its entry was
taken) is a function of features.v1, so the handler is `rebuild_from_inputs`: the host replays
features.v1 and control.v1 up to the committed offsets into `handle` (outputs discarded) at start
and after a rebalance, with `replaying` set, after `reset_state()`. While replaying, control.v1
promotions are ignored (the model and config promoted now were loaded by `start`; reloading each
historical promotion would flip models back and forth and finally could pick an older one than
the registry's) and nothing is counted. Known limit: the replayed rows are all decided with the
model, rules and barriers served NOW, so if a promotion happened inside the replayed range the
rebuilt positions are those the current model would have taken, not necessarily the ones the
old model took before the restart (the first signals after it may then differ from an
uninterrupted run); without a promotion in that range the rebuild is exact.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter as Tally
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.exc import SQLAlchemyError

from meridian.v1 import common_pb2, control_pb2, features_pb2, signal_pb2
from meridian_common import topics
from meridian_common.config import ConfigError
from meridian_common.features.spec import TREND_V2
from meridian_common.handler import Handler, Inbound, InvalidMessage, Outbox
from meridian_common.labels import Barriers
from meridian_common.strategy import TrendParams, TrendRules, Vote
from meridian_common.strategy.configured import StrategyConfigError, configured_strategy
from meridian_common.strategy.trend import INPUTS
from meridian_ml.registry import ModelRegistry
from meridian_signals.active import ActiveStrategyStore, PromotedParameters
from meridian_signals.meta_model import (
    MetaModel,
    describe,
    exit_prices,
    feature_set_key,
    load_meta_model,
    row_missing,
)
from meridian_signals.settings import SignalsSettings

log = logging.getLogger(__name__)

LONG, SHORT, FLAT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT, common_pb2.DIRECTION_FLAT
_NAMES = {LONG: "long", SHORT: "short", FLAT: "flat"}

# Why an entry was decided by the rules alone (the `reason` label of the fallback metric).
NO_MODEL = "no_model"  # none promoted / pinned, or the registry is empty
LOAD_FAILED = "load_failed"  # the model at start could not be loaded or was refused
FEATURE_SET = "feature_set"  # the features message's set is not the model's
INFERENCE = "inference_error"  # the model raised on this row
_CAUSES = {NO_MODEL: "no model", LOAD_FAILED: "the model failed to load",
           FEATURE_SET: "the features are not the model's feature set",
           INFERENCE: "the model failed on this row"}


DIRECTIONS = tuple(_NAMES.values())
REASONS = tuple(_CAUSES)


class SignalsMetrics:
    """The handler's own series, in the registry the host exposes. Known label values start at 0
    (`known`), so a rate() over them has data before the first signal."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.signals = Counter("meridian_signals_total", "Signals emitted, per direction and "
                               "model version ('' = rules only).",
                               ["direction", "model_version"], registry=registry)
        self.confidence = Histogram("meridian_signal_confidence",
                                    "Confidence of emitted entry signals (meta-model p; 1.0 "
                                    "rules only).", registry=registry,
                                    buckets=(0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0))
        self.filtered = Counter("meridian_meta_filtered_total",
                                "Primary entries the meta-model filtered out (p < threshold).",
                                registry=registry)
        self.fallback = Counter("meridian_model_fallback_total",
                                "Entries decided by the rules alone because of a model problem, "
                                "per reason.", ["reason"], registry=registry)
        self.info = Gauge("meridian_model_info", "1 for the model version served ('' = rules "
                          "only).", ["model_version"], registry=registry)
        self.reload_failures = Counter("meridian_model_reload_failures_total",
                                       "Promoted model versions that failed to load (the "
                                       "current model was kept).", registry=registry)
        for reason in REASONS:
            self.fallback.labels(reason)

    def known(self, version: str) -> None:
        """Start every direction's signal count for a served model version ('' rules only)."""
        for direction in DIRECTIONS:
            self.signals.labels(direction, version)


@dataclass(slots=True)
class _Key:
    rules: TrendRules
    # the model version of the entry the open position came from ("" rules only); None when the
    # rules' position was not taken (filtered) or there is none
    taken: str | None = None


class SignalsHandler(Handler):
    name = "signals"
    inputs = (topics.FEATURES, topics.CONTROL)
    outputs = (topics.SIGNAL,)
    # the rule positions per key are a function of features.v1 (see the module docstring)
    rebuild_from_inputs = True

    def __init__(self, settings: SignalsSettings, *, database_url: str | None = None,
                 configs: ActiveStrategyStore | None = None) -> None:
        self.settings = settings
        # the promoted config's rules (active_configs), over the settings' when no model is
        # served; its label ("" none) and whether control.v1 announced a new one
        self.configs = configs
        self.config_rules: tuple[TrendParams, Barriers] | None = None
        self.config_label = ""
        self._reload_config = False
        self.registry = ModelRegistry(Path(settings.model_dir), database_url)
        self.model: MetaModel | None = None
        self.params: TrendParams = settings.params
        self.barriers: Barriers = settings.barriers
        self.no_model_cause = NO_MODEL  # why there is no model, while there is none
        # the feature set the features service sends (the one the rules read until seen)
        self.feature_set = feature_set_key(TREND_V2)
        self.keys: dict[str, _Key] = {}
        self.pending: str | None = None  # promoted version to load at the next flush
        self.metrics: SignalsMetrics | None = None
        self._said: set[tuple[str, ...]] = set()
        # plain counters (the metrics mirror them once bound)
        self.emitted = 0
        self.filtered = 0
        self.fallbacks = 0
        self.fallback_reasons: Tally[str] = Tally()
        self.reload_failures = 0

    def reset_state(self) -> None:
        """Back to the state inputs build (as __init__ leaves it), before the host replays them:
        rule positions, the feature set seen and the plain counters. The loaded model, promoted
        config, pending promotions and settings stay: they come from the registry, not inputs."""
        self.keys = {}
        self.feature_set = feature_set_key(TREND_V2)
        self.emitted = 0
        self.filtered = 0
        self.fallbacks = 0
        self.fallback_reasons = Tally()

    def side_keys(self) -> Mapping[str, Collection[str]]:
        """The promotions this service acts on (`model:<name>`, `config:<strategy>` on control.v1):
        with several replicas in one group only one owns control.v1's partition of a key, and
        every replica must load a promoted model or config, so the host feeds those records to
        each replica whatever it owns (`meridian_common.side_inputs`)."""
        return {topics.CONTROL: (f"model:{self.settings.model_name}",
                                 f"config:{self.settings.strategy}")}

    @property
    def _counting(self) -> bool:
        """False while the host replays inputs to rebuild state (`Handler.replaying`): those
        events were counted before the restart or rebalance."""
        return not self.replaying

    # -- lifecycle ------------------------------------------------------------------------

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        self.metrics = SignalsMetrics(registry)
        self._show_model()

    async def start(self) -> None:
        if self.configs is not None:
            promoted = await self.configs.promoted(self.settings.strategy)
            if promoted is not None:
                try:
                    self._take_config(promoted)
                except StrategyConfigError as exc:
                    raise ConfigError(f"active_configs {promoted.label}: {exc}") from None
        version = self.settings.model_version
        try:
            if not version:
                version = await asyncio.to_thread(self.registry.promoted, self.settings.model_name)
        except Exception as exc:
            self.no_model_cause = LOAD_FAILED
            log.error("model registry lookup failed: rules only (%s)", exc,
                      extra={"model_name": self.settings.model_name})
            version = None
        if not version:
            log.warning("no model %r promoted under %s: rules only", self.settings.model_name,
                        self.settings.model_dir)
            self._use_rules()
            return
        try:
            model = await asyncio.to_thread(self._load, version)
        except Exception as exc:
            self.no_model_cause = LOAD_FAILED
            log.error("model %s refused: rules only (%s)", version, exc)
            self._use_rules()
            return
        self._swap(model)

    async def flush(self) -> None:
        if self._reload_config:
            self._reload_config = False
            await self._reload_promoted_config()
        version, self.pending = self.pending, None
        if version is None or (self.model is not None and version == self.model.version):
            return
        try:
            model = await asyncio.to_thread(self._load, version)
        except Exception as exc:
            self.reload_failures += 1
            if self.metrics:
                self.metrics.reload_failures.inc()
            current = self.model.version if self.model else "rules only"
            log.error("promoted model %s failed to load, keeping %s: %s", version, current, exc)
            return
        self._swap(model)

    async def stop(self) -> None:
        self.registry.close()
        if self.configs is not None:
            await self.configs.close()

    def _take_config(self, promoted: PromotedParameters) -> None:
        """Check and record a promoted config; the rules use it while no model is served (a
        model's manifest names the rules it was trained next to, and those win)."""
        self.config_rules = configured_strategy(promoted.parameters, self.settings.params,
                                                self.settings.barriers)
        self.config_label = promoted.label
        if self.model is None:
            self._set_rules(*self.config_rules)
            log.info("primary rules from promoted config %s", promoted.label,
                     extra=describe(self.params, self.barriers))
        else:
            log.warning("promoted config %s recorded; model %s's manifest rules are served",
                        promoted.label, self.model.version)

    async def _reload_promoted_config(self) -> None:
        assert self.configs is not None
        try:
            promoted = await self.configs.promoted(self.settings.strategy)
            if promoted is not None:
                self._take_config(promoted)
        except (StrategyConfigError, OSError, SQLAlchemyError) as exc:
            self.reload_failures += 1
            if self.metrics:
                self.metrics.reload_failures.inc()
            log.error("promoted config for %s refused, keeping %s: %s", self.settings.strategy,
                      self.config_label or "the settings' rules", exc)

    def _set_rules(self, params: TrendParams, barriers: Barriers) -> None:
        self.params, self.barriers = params, barriers
        for key in self.keys.values():  # positions carry over; the rules change
            key.rules.params = params

    def _load(self, version: str) -> MetaModel:
        return load_meta_model(self.registry, version, self.feature_set, self.settings.threshold)

    def _use_rules(self) -> None:
        if self.config_rules is not None:
            self._set_rules(*self.config_rules)
        source = f"promoted config {self.config_label}" if self.config_rules else "settings"
        log.info("primary rules from %s", source, extra=describe(self.params, self.barriers))
        self._show_model()

    def _swap(self, model: MetaModel) -> None:
        previous = self.model.version if self.model else ""
        self.model = model
        self.params, self.barriers = model.params, model.barriers
        for key in self.keys.values():  # positions carry over; the rules now use the model's
            key.rules.params = model.params
        log.info("serving model %s (threshold %.2f; was %s); primary rules from its manifest",
                 model.version, model.threshold, previous or "rules only",
                 extra=describe(model.params, model.barriers))
        self._show_model()

    def _show_model(self) -> None:
        if self.metrics:
            version = self.model.version if self.model else ""
            self.metrics.info.clear()
            self.metrics.info.labels(version).set(1)
            self.metrics.known(version)

    def _once(self, level: int, cause: tuple[str, ...], message: str, *args: object) -> None:
        if cause not in self._said:
            self._said.add(cause)
            log.log(level, message, *args)

    # -- messages -------------------------------------------------------------------------

    def handle(self, msg: Inbound, out: Outbox) -> None:
        if msg.topic == topics.CONTROL:
            self._control(msg)
        elif msg.is_watermark:
            out.watermark(topics.SIGNAL, msg.key, msg.event_time_ms)
        else:
            self._features(msg, out)

    def _control(self, msg: Inbound) -> None:
        if msg.is_watermark or not self._counting:
            return  # a replayed promotion: what is promoted now was loaded by start()
        control: control_pb2.Control = msg.message  # type: ignore[assignment]
        kind = control.WhichOneof("command")
        if kind == "config_promotion" and self.configs is not None \
                and control.config_promotion.config_name == self.settings.strategy:
            self._reload_config = True  # read in flush(), after this batch
            return
        if kind != "model_promotion":
            return
        promotion = control.model_promotion
        if promotion.model_name != self.settings.model_name:
            return
        if self.settings.model_version:
            self._once(logging.INFO, ("pinned", promotion.model_version),
                       "promotion of %s ignored: model version pinned to %s",
                       promotion.model_version, self.settings.model_version)
            return
        self.pending = promotion.model_version

    def _features(self, msg: Inbound, out: Outbox) -> None:
        features: features_pb2.Features = msg.message  # type: ignore[assignment]
        t = features.meta.event_time_ms
        if not features.ready:
            out.watermark(topics.SIGNAL, msg.key, t)
            return
        values = {v.name: v.value for v in features.values}
        missing = row_missing(values, INPUTS)
        if missing:
            raise InvalidMessage(f"features {features.meta.id} lacks {missing}")
        self.feature_set = f"{features.feature_set}@{features.feature_set_version}"
        model, cause = self.model, None
        if model is None:
            cause = self.no_model_cause
        elif self.feature_set != model.feature_set:
            cause = FEATURE_SET
            self._once(logging.ERROR, (FEATURE_SET, model.version, self.feature_set),
                       "model %s was trained on feature set %s but the features are %s: rules "
                       "only for them", model.version, model.feature_set, self.feature_set)
        else:
            missing = row_missing(values, model.feature_columns)
            if missing:
                raise InvalidMessage(f"features {features.meta.id} ({self.feature_set}) lacks "
                                     f"{missing}")
        key = self.keys.get(msg.key)
        if key is None:
            key = self.keys[msg.key] = _Key(TrendRules(self.params))
        previous = key.rules.state
        vote = key.rules.update(*(values[c] for c in INPUTS))
        if vote is None:
            out.watermark(topics.SIGNAL, msg.key, t)
        elif vote.direction == FLAT:
            self._exit(msg.key, key, features, vote, vote.reason, out)
        elif model is not None and cause is None:
            self._scored(msg.key, key, previous, features, values, vote, model, out)
        else:
            self._rules_only(msg.key, key, features, values, vote, cause or NO_MODEL, out)

    def _scored(self, k: str, key: _Key, previous: int, features: features_pb2.Features,
                values: dict[str, float], vote: Vote, model: MetaModel, out: Outbox) -> None:
        try:
            p = model.proba(values, vote.direction, vote.strength)
        except Exception as exc:
            self._once(logging.ERROR, (INFERENCE, model.version, type(exc).__name__),
                       "model %s failed to score a row: rules only for it (%s)",
                       model.version, exc)
            self._rules_only(k, key, features, values, vote, INFERENCE, out)
            return
        if p < model.threshold:
            if self._counting:
                self.filtered += 1
                if self.metrics:
                    self.metrics.filtered.inc()
            verdict = (f"meta p={p:.2f} < {model.threshold:.2f} (model {model.version}): "
                       f"{_NAMES[vote.direction]} entry filtered")
            if previous != FLAT and key.taken is not None:
                # a reversal: the taken position still closes, the new side is not entered
                self._exit(k, key, features, vote, f"{vote.reason}; {verdict}, closing", out)
            else:
                out.watermark(topics.SIGNAL, k, features.meta.event_time_ms)
            key.taken = None
            return
        reason = f"{vote.reason}; meta p={p:.2f} >= {model.threshold:.2f} (model {model.version})"
        self._entry(k, key, features, values, vote, p, model.version, reason, out)

    def _rules_only(self, k: str, key: _Key, features: features_pb2.Features,
                    values: dict[str, float], vote: Vote, cause: str, out: Outbox) -> None:
        if self._counting:
            self.fallbacks += 1
            self.fallback_reasons[cause] += 1
            if self.metrics:
                self.metrics.fallback.labels(cause).inc()
        reason = f"{vote.reason}; rules only ({_CAUSES[cause]})"
        self._entry(k, key, features, values, vote, 1.0, "", reason, out)

    def _entry(self, k: str, key: _Key, features: features_pb2.Features,
               values: dict[str, float], vote: Vote, confidence: float, version: str,
               reason: str, out: Outbox) -> None:
        stop, target = exit_prices(vote.direction, features.close,
                                   values.get("atr_pct", math.nan), self.barriers)
        key.taken = version
        self._emit(k, features, vote.direction, vote.strength, confidence, version, stop, target,
                   reason, out)

    def _exit(self, k: str, key: _Key, features: features_pb2.Features, vote: Vote, reason: str,
              out: Outbox) -> None:
        if key.taken is None:  # the entry this closes was filtered: nothing to close
            out.watermark(topics.SIGNAL, k, features.meta.event_time_ms)
            return
        version, key.taken = key.taken, None
        self._emit(k, features, FLAT, vote.strength, 1.0, version, "", "", reason, out)

    def _emit(self, k: str, features: features_pb2.Features, direction: int, strength: float,
              confidence: float, version: str, stop: str, target: str, reason: str,
              out: Outbox) -> None:
        if self._counting:
            self.emitted += 1
            if self.metrics:
                self.metrics.signals.labels(_NAMES[direction], version).inc()
                if direction != FLAT:
                    self.metrics.confidence.observe(confidence)
        out.emit(topics.SIGNAL, k, signal_pb2.Signal(
            meta=common_pb2.Meta(id="sig:" + features.meta.id, cause_id=features.meta.id,
                                 event_time_ms=features.meta.event_time_ms, producer=self.name),
            exchange=features.exchange,
            symbol=features.symbol,
            strategy=self.settings.strategy,
            direction=direction,  # type: ignore[arg-type]
            strength=strength,
            confidence=confidence,
            model_version=version,
            reference_price=features.close,
            stop_loss=stop,
            take_profit=target,
            reason=reason,
        ))
