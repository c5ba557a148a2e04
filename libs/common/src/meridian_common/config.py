"""Settings: resolved once at the process boundary, validated, unknown keys rejected.

Every service reads `CommonSettings` (prefix `MERIDIAN_`) and its own settings class (prefix
`MERIDIAN_<SERVICE>_`). `load()` turns any problem into a ConfigError that names the environment
variable at fault, and refuses variables under a service's prefix that no field reads (a typo
must not silently fall back to a default). Secrets are SecretStr: they never print.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("ingest", "features", "signals", "bots", "risk", "execution", "ledger", "control",
            "cli")

T = TypeVar("T", bound=BaseSettings)


class ConfigError(ValueError):
    """Bad configuration: the message names each variable at fault and why."""


class CommonSettings(BaseSettings):
    """Settings every service shares."""

    model_config = SettingsConfigDict(env_prefix="MERIDIAN_", extra="forbid", frozen=True)

    bus: Literal["kafka", "inprocess"] = Field(
        "kafka", description="Transport: 'kafka' for separate processes, 'inprocess' embedded."
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    topic_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9._-]*$",
        description="Prefix for every topic name, so an isolated run never touches live topics.",
    )
    partitions: int = Field(3, ge=1, le=256, description="Partitions of each keyed topic.")
    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL (postgresql://user:pass@host:port/db). Secret."
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 = off.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    exchange: str = Field("binance", min_length=1, description="Exchange id (ccxt name).")
    consumer_batch: int = Field(
        500, ge=1, le=100_000, description="Max records handled per poll before a durable commit."
    )
    health_stall_s: float = Field(
        60.0, gt=0, le=86_400,
        description="/healthz answers 503 (stalled) when the service's loop has not polled for "
                    "this many seconds (a state rebuild counts as progress).",
    )


def _env_name(prefix: str, loc: tuple[Any, ...]) -> str:
    return (prefix + "_".join(str(p) for p in loc)).upper() if loc else prefix.rstrip("_")


def _format_errors(cls: type[BaseSettings], exc: ValidationError) -> str:
    prefix = cls.model_config.get("env_prefix", "")
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        name = _env_name(prefix, loc[:1]) if loc else cls.__name__
        value = err.get("input")
        shown = "" if _is_secret_field(cls, loc) or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{name}: {err['msg']}{shown}")
    return f"invalid {cls.__name__}: " + "; ".join(lines)


def _is_secret_field(cls: type[BaseSettings], loc: tuple[Any, ...]) -> bool:
    if not loc:
        return False
    field = cls.model_fields.get(str(loc[0]))
    return field is not None and "SecretStr" in repr(field.annotation)


def unknown_keys(cls: type[BaseSettings], environ: Mapping[str, str]) -> list[str]:
    """Variables under the class's prefix that no field reads.

    For the shared `MERIDIAN_` prefix, variables that belong to a service's own prefix
    (`MERIDIAN_RISK_...`) are not unknown: their own class checks them. `MERIDIAN_TEST_` is the
    test harness's (servers to reuse): never a service setting, so a developer who exported them
    can still run the CLI and the services from the same shell.
    """
    prefix = cls.model_config.get("env_prefix", "").upper()
    known = {prefix + name.upper() for name in cls.model_fields}
    service_prefixes = (*(f"MERIDIAN_{s.upper()}_" for s in SERVICES), "MERIDIAN_TEST_")
    out = []
    for key in environ:
        upper = key.upper()
        if not upper.startswith(prefix) or upper in known:
            continue
        if prefix == "MERIDIAN_" and upper.startswith(service_prefixes):
            continue
        out.append(key)
    return sorted(out)


def load(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build settings from the environment plus explicit overrides, or raise ConfigError."""
    env = os.environ if environ is None else environ
    unknown = unknown_keys(cls, env)
    if unknown:
        fields = ", ".join(sorted(cls.model_config.get("env_prefix", "").upper() + f.upper()
                                  for f in cls.model_fields))
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; {cls.__name__} reads: {fields}")
    prefix = cls.model_config.get("env_prefix", "").upper()
    values = {k[len(prefix):].lower(): v for k, v in env.items() if k.upper().startswith(prefix)
              and k[len(prefix):].lower() in cls.model_fields}
    values.update(overrides)
    try:
        # Values are passed explicitly so that `environ` (not os.environ) is the only source.
        return cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(cls, exc)) from None


def reference(cls: type[BaseSettings]) -> list[tuple[str, str, str]]:
    """(variable, default, description) rows for the README's config reference."""
    prefix = cls.model_config.get("env_prefix", "").upper()
    rows = []
    for name, field in cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "(required)" if field.is_required() else ("" if default is None else str(default))
        rows.append((prefix + name.upper(), shown, field.description or ""))
    return rows
