"""The served meta-model: loaded from the registry, checked against the feature set, scored.

A model only means something next to the primary rules and barriers it was trained with, so
`load_meta_model` reads them from the manifest's `strategy` and refuses a model that does not
record them, or whose feature set, fingerprint or columns differ from what the features service
sends. Loading does file (and maybe database) I/O: the handler runs it in a thread.

Also here: the suggested stop-loss / take-profit prices of a signal, from the barriers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from meridian.v1 import common_pb2
from meridian_common.features.spec import FEATURE_SETS, FeatureSet
from meridian_common.labels import Barriers
from meridian_common.strategy import TrendParams
from meridian_ml.dataset import EXTRA_COLUMNS
from meridian_ml.onnx_model import OnnxModel
from meridian_ml.registry import ModelManifest, ModelRegistry

LONG, SHORT = common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT


class ModelRefused(Exception):
    """A model that must not be served here (the message says why)."""


def feature_set_key(spec: FeatureSet) -> str:
    return f"{spec.name}@{spec.version}"


@dataclass(frozen=True, slots=True)
class MetaModel:
    manifest: ModelManifest
    session: OnnxModel
    threshold: float
    params: TrendParams
    barriers: Barriers
    feature_columns: tuple[str, ...]  # the feature part of the input row, in order

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def feature_set(self) -> str:
        return self.manifest.feature_set

    def proba(self, features: Mapping[str, float], direction: int, strength: float) -> float:
        """P(the entry pays): the row is the feature values in the manifest's column order, then
        +1 / -1 for LONG / SHORT, then the vote's strength (as `meridian_ml.dataset` builds it)."""
        row = [features[c] for c in self.feature_columns]
        row.append(1.0 if direction == LONG else -1.0)
        row.append(strength)
        p = self.session.proba_one(row)
        if not 0.0 <= p <= 1.0:  # NaN included
            raise ValueError(f"model {self.version} returned probability {p}")
        return p


def strategy_of(manifest: ModelManifest) -> tuple[TrendParams, Barriers]:
    """The primary rule parameters and label barriers the model was trained with."""
    strategy = manifest.strategy or {}
    found = {}
    for part, cls in (("primary", TrendParams), ("barriers", Barriers)):
        fields = strategy.get(part)
        if not isinstance(fields, Mapping):
            raise ModelRefused(f"model {manifest.version}: its manifest records no strategy."
                               f"{part}, so the rules it was trained next to are unknown")
        try:
            found[part] = cls(**fields)
        except (TypeError, ValueError) as exc:
            raise ModelRefused(f"model {manifest.version}: manifest strategy.{part} is not a "
                               f"valid {cls.__name__} ({exc})") from None
    return found["primary"], found["barriers"]  # type: ignore[return-value]


def check_manifest(manifest: ModelManifest, expected: str) -> FeatureSet:
    """Refuse a model trained on another feature set than `expected` (name@version, what the
    features service sends), on a changed definition, or on columns in another order."""
    if manifest.feature_set != expected:
        raise ModelRefused(f"model {manifest.version} was trained on feature set "
                           f"{manifest.feature_set} but the features are {expected}")
    name, _, version = manifest.feature_set.partition("@")
    spec = FEATURE_SETS.get((name, version))
    if spec is None:
        known = ", ".join(f"{n}@{v}" for n, v in sorted(FEATURE_SETS))
        raise ModelRefused(f"model {manifest.version}: feature set {manifest.feature_set} is "
                           f"unknown here (known: {known})")
    if manifest.feature_fingerprint != spec.fingerprint():
        raise ModelRefused(f"model {manifest.version}: feature set {manifest.feature_set} "
                           f"fingerprint {manifest.feature_fingerprint} differs from this "
                           f"build's {spec.fingerprint()}")
    want = [*spec.columns, *EXTRA_COLUMNS]
    if list(manifest.columns) != want:
        raise ModelRefused(f"model {manifest.version}: input columns {list(manifest.columns)} "
                           f"are not the columns of {manifest.feature_set} plus "
                           f"{list(EXTRA_COLUMNS)}: {want}")
    return spec


def load_meta_model(registry: ModelRegistry, version: str, expected_feature_set: str,
                    threshold: float | None = None) -> MetaModel:
    """Load and check one version (blocking I/O). Raises the registry's errors (unknown version,
    hash mismatch) or ModelRefused."""
    manifest, onnx_bytes = registry.load(version)
    spec = check_manifest(manifest, expected_feature_set)
    params, barriers = strategy_of(manifest)
    chosen = manifest.threshold if threshold is None else threshold
    if not 0.0 < chosen < 1.0:
        raise ModelRefused(f"model {version}: threshold {chosen} is not in (0, 1)")
    try:
        session = OnnxModel(onnx_bytes)
    except Exception as exc:  # onnxruntime raises its own error types
        raise ModelRefused(f"model {version}: onnxruntime cannot load it ({exc})") from None
    if session.n_features != len(manifest.columns):
        raise ModelRefused(f"model {version}: the ONNX graph takes {session.n_features} inputs "
                           f"but the manifest lists {len(manifest.columns)} columns")
    return MetaModel(manifest, session, chosen, params, barriers, spec.columns)


def exit_prices(direction: int, close: str, atr_pct: float,
                barriers: Barriers) -> tuple[str, str]:
    """Suggested (stop_loss, take_profit) prices for an entry at `close`, with the close's number
    of decimals (more where they would land on the entry); ("", "") for an exit, or when the
    distance is unknown (no ATR) or a price would not be positive."""
    if direction not in (LONG, SHORT):
        return "", ""
    try:
        price = Decimal(close)
    except InvalidOperation:
        return "", ""
    exponent = price.as_tuple().exponent
    if not price.is_finite() or price <= 0 or not isinstance(exponent, int):
        return "", ""
    if barriers.use_atr:
        if not math.isfinite(atr_pct) or atr_pct <= 0.0:
            return "", ""
        unit = price * Decimal(repr(atr_pct))  # the ATR in price units
    else:
        unit = price
    tp = unit * Decimal(repr(barriers.take_profit))
    sl = unit * Decimal(repr(barriers.stop_loss))
    if direction == LONG:
        stop, target = price - sl, price + tp
    else:
        stop, target = price + sl, price - tp
    # The close's decimals; where they would round a price back onto the entry (a close
    # printed as "0.4", a stop 1.5% away), two significant digits of the distance instead.
    quantum = Decimal(1).scaleb(exponent)
    if price in (stop.quantize(quantum, rounding=ROUND_HALF_EVEN),
                 target.quantize(quantum, rounding=ROUND_HALF_EVEN)):
        quantum = min(quantum, Decimal(1).scaleb(min(sl, tp).adjusted() - 1))
    return _price(stop, quantum), _price(target, quantum)


def _price(value: Decimal, quantum: Decimal) -> str:
    q = value.quantize(quantum, rounding=ROUND_HALF_EVEN)
    return format(q, "f") if q > 0 else ""


def describe(params: TrendParams, barriers: Barriers) -> dict[str, Any]:
    """The rules and barriers in use, for the log line that says so."""
    return {"rules": asdict(params), "barriers": asdict(barriers)}


def row_missing(values: Mapping[str, float], columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c not in values]
