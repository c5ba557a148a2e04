"""Ingest settings (prefix MERIDIAN_INGEST_), resolved once at start-up.

One class for every mode so that `meridian config` documents them all and a typo in any
variable fails fast. The exchange itself is `MERIDIAN_EXCHANGE` (a ccxt id).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")


def parse_time_ms(value: str) -> int:
    """'2021-01-01' or '2021-01-01T12:00:00Z' (UTC) -> epoch ms."""
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO date or datetime (e.g. 2021-01-01)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _csv(value: object) -> object:
    if isinstance(value, str):
        value = tuple(s.strip() for s in value.split(",") if s.strip())
    return value


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_INGEST_", extra="forbid", frozen=True)

    mode: Literal["replay", "live"] = Field(
        "replay", description="replay: publish a stored range; live: stream from the exchange.")
    source: Literal["csv", "db", "kafka"] = Field(
        "csv", description="Replay source: the shared CSV files, the candles table, or a "
                           "Kafka topic range (MERIDIAN_INGEST_SOURCE_PREFIX).")
    source_prefix: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]*$",
        description="Topic prefix to replay from with source=kafka (must differ from "
                    "MERIDIAN_TOPIC_PREFIX, so a replay never writes into the topic it reads).")
    speed: float = Field(
        0.0, ge=0.0, description="Replay pace: 0 = as fast as consumers allow; N = N times the "
                                 "event-time clock (3600 = one hour of candles per second).")
    data_dir: Path | None = Field(None, description="CSV directory (default: ../shared/data).")
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_SYMBOLS, description="Comma-separated exchange symbol ids (BTCUSDT,...).")
    timeframe: str = Field("1h", pattern=r"^\d+[mhdw]$", description="Candle timeframe.")
    start: str | None = Field(None, description="First candle open time (UTC ISO), inclusive.")
    end: str | None = Field(None, description="Last candle open time (UTC ISO), exclusive.")

    market_type: Literal["spot", "linear"] = Field(
        "spot", description="Market type at the exchange: spot or linear (USDT perpetuals).")
    replay_perpetuals: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Replay only, with market_type spot: these symbols are also published "
                        "as the venue's USDT perpetual (key <exchange>-linear:SYMBOL), priced at "
                        "the same stored candles (no perpetual prices are stored: the perp is "
                        "marked at spot, basis 0) and with their funding history when "
                        "MERIDIAN_INGEST_FUNDING is on. Comma-separated, each one of "
                        "MERIDIAN_INGEST_SYMBOLS.")
    funding: bool = Field(
        True, description="Also ingest funding-rate history (perpetual markets only).")
    api_base_url: str | None = Field(
        None, description="Send every exchange request to this base URL instead (a local fake "
                          "exchange or a proxy); the original host becomes the first path part.")
    api_key: SecretStr | None = Field(None, description="Exchange API key (not needed for "
                                                         "public market data). Secret.")
    api_secret: SecretStr | None = Field(None, description="Exchange API secret. Secret.")
    ccxt_rate_limit: bool = Field(True, description="Keep ccxt's own request limiter on.")
    rate_budget: float = Field(
        0.0, ge=0.0, description="Our own request budget per second on top of ccxt's limiter "
                                 "(0 = none).")
    retries: int = Field(8, ge=0, le=100, description="Retries of a retryable exchange error.")
    backoff_s: float = Field(0.5, gt=0, description="First retry delay; doubles, with jitter.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest retry delay.")
    stale_after_s: float = Field(
        60.0, gt=0, description="A stream with no message for this long is reconnected.")
    poll_s: float = Field(
        5.0, gt=0, description="How often live ingest checks the exchange clock for candles "
                               "and funding the stream did not deliver.")
    grace_s: float = Field(
        2.0, ge=0, description="How long after a close the stream may take before REST "
                               "fetches the candle instead.")
    replicas: int = Field(1, ge=1, le=1024, description="Live ingest replicas sharing symbols.")
    replica_index: int | None = Field(
        None, ge=0, description="This replica's index (default: the -N suffix of HOSTNAME, as "
                                "in a StatefulSet pod name, else 0).")

    @field_validator("symbols", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        value = _csv(value)
        if not value:
            raise ValueError("at least one symbol is required")
        return value

    @field_validator("replay_perpetuals", mode="before")
    @classmethod
    def _split_perpetuals(cls, value: object) -> object:
        return _csv(value)  # empty is fine: no perpetual copies

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time_ms(value)
        return value

    @model_validator(mode="after")
    def _index(self) -> IngestSettings:
        if self.replica_index is not None and self.replica_index >= self.replicas:
            raise ValueError(f"MERIDIAN_INGEST_REPLICA_INDEX={self.replica_index} must be below "
                             f"MERIDIAN_INGEST_REPLICAS={self.replicas}")
        return self

    @model_validator(mode="after")
    def _perpetuals(self) -> IngestSettings:
        """The perpetual copies are a replay's modelling device (spot candles standing in for
        perpetual prices), so refuse them wherever they would mean something else."""
        if not self.replay_perpetuals:
            return self
        name = "MERIDIAN_INGEST_REPLAY_PERPETUALS"
        if self.mode != "replay":
            raise ValueError(f"{name} is for replays only (MERIDIAN_INGEST_MODE={self.mode}): "
                             "live ingest publishes the exchange's own markets")
        if self.market_type != "spot":
            raise ValueError(f"{name} needs MERIDIAN_INGEST_MARKET_TYPE=spot (got "
                             f"{self.market_type}): the perpetuals are copies of spot candles")
        if self.source == "kafka":
            raise ValueError(f"{name} is not supported with MERIDIAN_INGEST_SOURCE=kafka: a "
                             "topic replay republishes the candles it reads, nothing more")
        unknown = [s for s in self.replay_perpetuals if s not in self.symbols]
        if unknown:
            raise ValueError(f"{name}: {', '.join(unknown)} not in MERIDIAN_INGEST_SYMBOLS "
                             f"({','.join(self.symbols)}): a perpetual copy needs its spot "
                             "candles")
        return self

    @property
    def start_ms(self) -> int | None:
        return parse_time_ms(self.start) if self.start else None

    @property
    def end_ms(self) -> int | None:
        return parse_time_ms(self.end) if self.end else None

    def resolved_replica_index(self, hostname: str | None = None) -> int:
        """The configured index, else the StatefulSet ordinal in HOSTNAME (ingest-2 -> 2)."""
        if self.replica_index is not None:
            return self.replica_index
        match = re.search(r"-(\d+)$", hostname if hostname is not None
                          else os.environ.get("HOSTNAME", ""))
        index = int(match.group(1)) if match else 0
        if index >= self.replicas:
            raise ValueError(f"replica index {index} (from HOSTNAME) is not below "
                             f"MERIDIAN_INGEST_REPLICAS={self.replicas}")
        return index
