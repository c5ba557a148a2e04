"""The model registry: immutable, content-addressed model versions and which one is live.

Artefacts sit under `<root>/<name>/<version>/` (model.onnx, xgb.json, manifest.json, card.json,
card.html): plain keys that copy one-to-one to an object store. A version is written to a
temporary directory and renamed into place, so a reader never sees half a model. The manifest
records the sha256 of model.onnx and `load` checks it, so a model that changed on disk is
refused instead of trading. With a database the `models` table indexes the versions and holds
the promotion (one promoted version per name, enforced by a unique index); without one the
promotion is the file `<root>/<name>/PROMOTED`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from meridian_common.db import sync_url
from meridian_common.db.schema import models

MODEL_FILE = "model.onnx"
XGB_FILE = "xgb.json"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "card.json"
CARD_HTML_FILE = "card.html"
PROMOTED_FILE = "PROMOTED"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})-\d{14}-[0-9a-f]{8}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RegistryError(Exception):
    """Base class of the registry's own errors."""


class UnknownVersionError(RegistryError, LookupError):
    """No such model version (the message lists the known ones)."""


class IntegrityError(RegistryError):
    """An artefact on disk does not match its manifest."""


@dataclasses.dataclass(frozen=True)
class ModelManifest:
    """Everything needed to serve a model safely: which features in which order, over which
    symbols and timeframe, trained on which period, and the hash of the exact ONNX bytes."""

    name: str
    version: str
    feature_set: str
    feature_fingerprint: str
    columns: list[str]
    symbols: list[str]
    timeframe: str
    train_start_ms: int
    train_end_ms: int
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    threshold: float
    content_hash: str
    created_ms: int
    # The primary rules' parameters, the label barriers and the cost model the labels used: the
    # model only means something next to the same primary rules, so the server reads them here.
    strategy: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelManifest:
        expected = {f.name for f in dataclasses.fields(cls)}
        optional = {"strategy"}
        missing, extra = expected - optional - set(data), set(data) - expected
        if missing or extra:
            raise ValueError(f"manifest fields do not match ModelManifest: missing "
                             f"{sorted(missing)}, unexpected {sorted(extra)}")
        return cls(**data)


CardBuilder = Callable[[ModelManifest], tuple[Mapping[str, Any], str]]


def to_jsonable(value: Any) -> Any:
    """Plain JSON values (numpy scalars unwrapped, tuples as lists, NaN/inf as null): strict
    JSON that PostgreSQL's jsonb accepts and that reads back equal to what was written."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-able")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _onnx_width(name: str, onnx_bytes: bytes) -> int | None:
    try:
        graph = onnx.load_model_from_string(onnx_bytes).graph
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ValueError(f"model {name}: the ONNX bytes do not parse as an ONNX model "
                         f"({exc})") from None
    if len(graph.input) != 1:
        return None
    dims = graph.input[0].type.tensor_type.shape.dim
    return dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else None


class ModelRegistry:
    """Registry rooted at `root`; `database_url` (libpq form) adds the `models` table index and
    moves promotion into it. The schema must already be migrated (`meridian_common.db.migrate`).
    """

    def __init__(self, root: Path, database_url: str | None = None) -> None:
        self.root = Path(root)
        self._engine = (None if database_url is None
                        else sa.create_engine(sync_url(database_url), poolclass=NullPool))

    # -- writing -------------------------------------------------------------------------

    def register(self, name: str, onnx_bytes: bytes, xgb_json: bytes, *, feature_set: str,
                 feature_fingerprint: str, columns: Sequence[str], symbols: Sequence[str],
                 timeframe: str, train_start_ms: int, train_end_ms: int,
                 hyperparameters: Mapping[str, Any], metrics: Mapping[str, Any],
                 threshold: float, card: Mapping[str, Any] | CardBuilder,
                 card_html: str | None = None, created_ms: int | None = None,
                 strategy: Mapping[str, Any] | None = None) -> ModelManifest:
        """Store a new version and return its manifest. `card` is either the card JSON (with
        `card_html`) or a function of the final manifest returning (card JSON, card HTML), which
        lets the card show the version the registry assigns (see `meridian_ml.card`)."""
        self._check_inputs(name, onnx_bytes, xgb_json, columns, train_start_ms, train_end_ms)
        content_hash = _sha256(onnx_bytes)
        created = time.time_ns() // 1_000_000 if created_ms is None else created_ms
        version = f"{name}-{_utc(created):%Y%m%d%H%M%S}-{content_hash[:8]}"
        manifest = ModelManifest(
            name=name, version=version, feature_set=feature_set,
            feature_fingerprint=feature_fingerprint, columns=list(columns),
            symbols=list(symbols), timeframe=timeframe, train_start_ms=int(train_start_ms),
            train_end_ms=int(train_end_ms), hyperparameters=to_jsonable(hyperparameters),
            metrics=to_jsonable(metrics), threshold=float(threshold),
            content_hash=content_hash, created_ms=int(created),
            strategy=to_jsonable(strategy or {}))
        if callable(card):
            card_json, html = card(manifest)
        elif card_html is None:
            raise ValueError("card_html is required when card is given as a dict")
        else:
            card_json, html = card, card_html
        files = {
            MODEL_FILE: onnx_bytes,
            XGB_FILE: xgb_json,
            MANIFEST_FILE: json.dumps(manifest.to_dict(), indent=2).encode(),
            CARD_FILE: json.dumps(to_jsonable(card_json), indent=2).encode(),
            CARD_HTML_FILE: html.encode(),
        }
        self._publish(manifest, files)
        return manifest

    def _check_inputs(self, name: str, onnx_bytes: bytes, xgb_json: bytes,
                      columns: Sequence[str], train_start_ms: int, train_end_ms: int) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"model name {name!r} must match {_NAME.pattern} (it is a path "
                             "component and the prefix of every version)")
        if not onnx_bytes:
            raise ValueError(f"model {name}: empty ONNX bytes")
        width = _onnx_width(name, onnx_bytes)
        if width != len(columns):
            raise ValueError(f"model {name}: ONNX input takes {width} features but {len(columns)}"
                             " columns were given")
        try:
            json.loads(xgb_json)
        except ValueError as exc:
            raise ValueError(f"model {name}: xgb_json is not JSON ({exc})") from None
        if train_start_ms >= train_end_ms:
            raise ValueError(f"model {name}: train_start_ms {train_start_ms} is not before "
                             f"train_end_ms {train_end_ms}")

    def _publish(self, manifest: ModelManifest, files: Mapping[str, bytes]) -> None:
        """Temp dir, then (inside the DB transaction, if any) one rename into place."""
        parent = self.root / manifest.name
        final = parent / manifest.version
        if final.exists():
            raise RegistryError(f"model version {manifest.version} already exists at {final}")
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{manifest.version}-", dir=parent))
        renamed = False
        try:
            for filename, data in files.items():
                _write(tmp / filename, data)
            if self._engine is None:
                tmp.rename(final)
                renamed = True
            else:
                with self._engine.begin() as conn:
                    conn.execute(models.insert().values(**self._row(manifest, final)))
                    tmp.rename(final)
                    renamed = True
        except BaseException:
            shutil.rmtree(final if renamed else tmp, ignore_errors=True)
            raise
        _fsync_dir(parent)

    @staticmethod
    def _row(manifest: ModelManifest, path: Path) -> dict[str, Any]:
        return {
            "version": manifest.version, "name": manifest.name,
            "feature_set": manifest.feature_set,
            "feature_fingerprint": manifest.feature_fingerprint,
            "train_start": _utc(manifest.train_start_ms),
            "train_end": _utc(manifest.train_end_ms),
            "hyperparameters": manifest.hyperparameters, "metrics": manifest.metrics,
            "threshold": manifest.threshold, "content_hash": manifest.content_hash,
            "strategy": manifest.strategy,
            "artifact_path": str(path.resolve()), "created_at": _utc(manifest.created_ms),
        }

    # -- reading -------------------------------------------------------------------------

    def path(self, version: str) -> Path:
        """The directory of `version` (raises UnknownVersionError listing the known ones)."""
        match = _VERSION.fullmatch(version)
        directory = self.root / match["name"] / version if match else None
        if directory is None or not (directory / MANIFEST_FILE).is_file():
            known = (self.versions(match["name"]) if match else []) or self._all()
            raise UnknownVersionError(f"unknown model version {version!r} under {self.root}; "
                                      f"known: {known or 'none'}")
        return directory

    def load(self, version: str) -> tuple[ModelManifest, bytes]:
        """The manifest and the ONNX bytes, after checking the bytes against the manifest."""
        directory = self.path(version)
        manifest = ModelManifest.from_dict(json.loads((directory / MANIFEST_FILE).read_bytes()))
        if manifest.version != version:
            raise IntegrityError(f"model {version}: manifest at {directory} names version "
                                 f"{manifest.version}")
        data = (directory / MODEL_FILE).read_bytes()
        actual = _sha256(data)
        if actual != manifest.content_hash:
            raise IntegrityError(f"model {version}: {MODEL_FILE} has sha256 {actual} but the "
                                 f"manifest records {manifest.content_hash}; refusing to load")
        return manifest, data

    def versions(self, name: str) -> list[str]:
        """Versions of `name` on disk, oldest first (the version embeds its UTC time)."""
        parent = self.root / name
        if not _NAME.fullmatch(name) or not parent.is_dir():
            return []
        return sorted(p.name for p in parent.iterdir()
                      if _VERSION.fullmatch(p.name) and (p / MANIFEST_FILE).is_file())

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def _all(self) -> list[str]:
        return [v for name in self.names() for v in self.versions(name)]

    # -- promotion -----------------------------------------------------------------------

    def promote(self, version: str) -> None:
        """Make `version` the live model of its name (after verifying its artefact)."""
        manifest, _ = self.load(version)
        if self._engine is None:
            target = self.root / manifest.name / PROMOTED_FILE
            tmp = target.with_name(f".{PROMOTED_FILE}.{os.getpid()}.tmp")
            _write(tmp, f"{version}\n".encode())
            tmp.replace(target)
            _fsync_dir(target.parent)
            return
        with self._engine.begin() as conn:
            # Lock the name's rows so concurrent promotions serialize.
            rows = conn.execute(sa.select(models.c.version).where(
                models.c.name == manifest.name).with_for_update()).scalars().all()
            if version not in rows:
                raise UnknownVersionError(f"model version {version!r} is on disk but not in "
                                          f"the models table; known there: {sorted(rows)}")
            conn.execute(models.update().where(
                models.c.name == manifest.name, models.c.version != version,
                models.c.promoted_at.is_not(None)).values(promoted_at=None))
            conn.execute(models.update().where(models.c.version == version).values(
                promoted_at=sa.func.now()))

    def promoted(self, name: str) -> str | None:
        """The live version of `name`, or None when none was promoted."""
        if self._engine is None:
            target = self.root / name / PROMOTED_FILE
            if not _NAME.fullmatch(name) or not target.is_file():
                return None
            return target.read_text().strip() or None
        with self._engine.connect() as conn:
            return conn.execute(sa.select(models.c.version).where(
                models.c.name == name, models.c.promoted_at.is_not(None))).scalar_one_or_none()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
