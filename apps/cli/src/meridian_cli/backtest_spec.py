"""What a backtest runs: the range, the symbols and a strategy config file, resolved once.

A config file is TOML with one table per service whose keys are that service's settings fields
(the names in `meridian config`, without the prefix), e.g.

    [signals]
    entry_score = 0.6
    [risk]
    leverage = 2

Unknown tables or keys fail before anything runs, naming them. `common` is not accepted and
`ingest` only for what the replay publishes (`INGEST_KEYS`: the perpetual copies of symbols
and their funding, which a funding-rate arbitrage pair needs): the backtest owns the bus, the
topic prefix and the replayed range. The resolved
settings (file + environment + defaults) are fingerprinted, so a report says exactly what ran
and two runs of the same inputs get the same run id and the same report.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from meridian_cli.settings import SETTINGS_CLASSES, PipelineSettings
from meridian_common.config import ConfigError
from meridian_common.features.spec import feature_set

SECTIONS = ("features", "signals", "bots", "risk", "execution", "ledger")
_CLASSES = dict(zip(("common", "ingest", *SECTIONS), SETTINGS_CLASSES, strict=True))
INGEST_KEYS = ("replay_perpetuals", "funding")
# Settings that say where a run happens, not what it computes: left out of the fingerprint.
_PLACE = {"common": {"bus", "kafka_bootstrap", "topic_prefix", "database_url", "metrics_port",
                     "log_level", "consumer_batch"}}


@dataclass(frozen=True, slots=True)
class BacktestSpec:
    symbols: tuple[str, ...]
    start: str
    end: str
    overrides: dict[str, dict[str, Any]]
    config_path: str | None

    def settings(self, **place: dict[str, Any]) -> PipelineSettings:
        """The pipeline settings of this backtest; `place` adds where-it-runs overrides
        (common.bus, topic prefix...)."""
        sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in self.overrides.items()}
        sections["ingest"] = {**sections.get("ingest", {}), "symbols": list(self.symbols),
                              "start": self.start, "end": self.end, "source": "csv"}
        for name, values in place.items():
            sections.setdefault(name, {}).update(values)
        return PipelineSettings.load(**sections)

    def fingerprint(self) -> str:
        """Hash of everything that decides the result: the resolved settings of every service
        (environment included), the range and the symbols."""
        resolved = self.settings(common={"bus": "inprocess"})
        blob = orjson.dumps(_computing_values(resolved), option=orjson.OPT_SORT_KEYS,
                            default=_json_default)
        return hashlib.blake2b(blob, digest_size=6).hexdigest()

    def run_id(self) -> str:
        return f"{self.strategy}-{self.fingerprint()}"

    @property
    def strategy(self) -> str:
        if self.overrides.get("bots", {}).get("config"):
            return "bots"
        return str(self.overrides.get("signals", {}).get("strategy", "trend"))


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, SecretStr):
        return "**secret**"
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def _computing_values(settings: PipelineSettings) -> dict[str, dict[str, Any]]:
    out = {}
    for name in ("common", "ingest", *SECTIONS):
        values = getattr(settings, name).model_dump()
        for key in _PLACE.get(name, ()):
            values.pop(key, None)
        out[name] = values
    if settings.bots.config:  # the bots are in the file: its bytes decide the run, not its path
        try:
            content = Path(settings.bots.config).read_bytes()
        except OSError as exc:
            raise ConfigError(f"bots.config {settings.bots.config}: cannot read it "
                              f"({exc.strerror})") from None
        out["bots"]["config"] = hashlib.blake2b(content, digest_size=8).hexdigest()
    return out


def _day(value: str, flag: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag}: expected a UTC ISO date like 2021-01-01, got {value!r}") \
            from None
    if parsed.tzinfo is not None and parsed.utcoffset() != UTC.utcoffset(None):
        raise ConfigError(f"{flag}: give the time in UTC, got {value!r}")
    return value


def read_config(path: Path) -> dict[str, dict[str, Any]]:
    """The overrides in a TOML config file, checked against the settings classes."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    out: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section not in (*SECTIONS, "ingest"):
            raise ConfigError(
                f"--config {path}: unknown table [{section}]; a backtest config has "
                f"[{'], ['.join(SECTIONS)}] and [ingest] {', '.join(INGEST_KEYS)} (range and "
                "symbols come from the command line)")
        if not isinstance(values, Mapping):
            raise ConfigError(f"--config {path}: [{section}] must be a table of settings")
        known = INGEST_KEYS if section == "ingest" else _CLASSES[section].model_fields
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise ConfigError(f"--config {path}: [{section}] has unknown key(s) "
                              f"{', '.join(unknown)}; it reads: {', '.join(sorted(known))}")
        out[section] = dict(values)
    bots = out.get("bots", {}).get("config")
    if isinstance(bots, str) and bots and not Path(bots).is_absolute():
        out["bots"]["config"] = str(path.parent / bots)  # next to the config that names it
    return out


def make_spec(symbols: str | None, start: str, end: str,
              config_path: str | None) -> BacktestSpec:
    """Validate the command line once; every later step reads the resolved spec."""
    if not start or not end:
        raise ConfigError("--from and --to are required (UTC ISO dates)")
    _day(start, "--from")
    _day(end, "--to")
    if datetime.fromisoformat(start) >= datetime.fromisoformat(end):
        raise ConfigError(f"--from {start} must be before --to {end}")
    names = tuple(s.strip().upper() for s in (symbols or "").split(",") if s.strip())
    overrides = read_config(Path(config_path)) if config_path else {}
    spec = BacktestSpec(names, start, end, overrides, config_path)
    if not names:  # the configured default symbols
        spec = BacktestSpec(spec.settings(common={"bus": "inprocess"}).ingest.symbols,
                            start, end, overrides, config_path)
    spec = _without_missing_reference(spec)
    spec.settings(common={"bus": "inprocess"})  # every value checked here, not mid-run
    return spec


def _without_missing_reference(spec: BacktestSpec) -> BacktestSpec:
    """The features service joins the reference symbol's return and waits for its candles: a
    backtest that does not replay the reference turns the join off (the column stays NaN, as
    in a deployment without it) instead of waiting forever; asking for it is an error."""
    features = spec.settings(common={"bus": "inprocess"}).features
    reference = feature_set(*features.feature_set.split("@")).params.get("cross_symbol")
    if not reference or reference in spec.symbols:
        return spec
    asked = spec.overrides.get("features", {}).get("cross_asset")
    if asked:
        raise ConfigError(f"[features] cross_asset = true needs the reference symbol "
                          f"{reference} in --symbols (got {', '.join(spec.symbols)})")
    if asked is None and features.cross_asset:
        overrides = {k: dict(v) for k, v in spec.overrides.items()}
        overrides.setdefault("features", {})["cross_asset"] = False
        return BacktestSpec(spec.symbols, spec.start, spec.end, overrides, spec.config_path)
    return spec


def env_for(spec: BacktestSpec) -> dict[str, str]:
    """The spec as MERIDIAN_* variables, for services started as processes (Kafka mode)."""
    env: dict[str, str] = {
        "MERIDIAN_INGEST_SYMBOLS": ",".join(spec.symbols), "MERIDIAN_INGEST_START": spec.start,
        "MERIDIAN_INGEST_END": spec.end, "MERIDIAN_INGEST_SOURCE": "csv"}
    for section, values in spec.overrides.items():
        prefix = str(_CLASSES[section].model_config.get("env_prefix", "")).upper()
        for key, value in values.items():
            env[prefix + key.upper()] = _env_value(value)
    return env


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
